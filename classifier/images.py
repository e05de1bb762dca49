"""Turn uploaded bytes into the model's input: safe decoding, then resizing to 224×224.

Decoding is where hostile input arrives, so every failure becomes an ``InputError`` with
a message a person can act on, and the pixel count is checked from the header before any
pixels are decoded (a decompression bomb is refused without allocating it).
"""

from __future__ import annotations

import io
import warnings
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import EmptyInput, ImageTooLarge, NotAnImage, UnsupportedImageType

try:  # HEIC/HEIF photos from phones; optional so the pipeline still works without it
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - exercised only where pillow-heif is absent
    pillow_heif = None

INPUT_SIZE = (224, 224)

# Only formats whose decoders are meant for untrusted input. Pillow can open more (EPS runs
# Ghostscript, PSD and ICO are rarely photos), and those are refused with 415, not opened.
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
Image.init()
SUPPORTED_FORMATS = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo fits; a bomb does not

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def supported_formats_text() -> str:
    return ", ".join(f for f in SUPPORTED_FORMATS if f != "MPO")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes into an upright RGB image no smaller than needed for the model.

    Raises an ``InputError`` subclass for empty, unreadable, unsupported or oversized input.
    """
    if not data:
        raise EmptyInput("The file is empty. Send the bytes of an image.")
    image = _open_header(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise NotAnImage("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}×{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}. Send a smaller image."
        )
    # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; ask for no less than the model needs
    # so that a 12-megapixel photo costs little more than a thumbnail.
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", INPUT_SIZE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        raise NotAnImage(
            f"The {image.format} image could not be decoded ({exc}). "
            "It may be truncated or corrupt."
        ) from exc
    except Image.DecompressionBombError as exc:  # pragma: no cover - caught by the size check
        raise ImageTooLarge(str(exc)) from exc
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the user the prediction
        pass
    return to_rgb(image)


def _open_header(data: bytes) -> Image.Image:
    """Open the image lazily (header only), refusing formats we do not decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError:
        other_format = _identify_unsupported(data)
        if other_format:
            raise UnsupportedImageType(
                f"{other_format} files are not supported. "
                f"Send one of: {supported_formats_text()}."
            ) from None
        raise NotAnImage(
            "The file is not an image this service can read. "
            f"Send one of: {supported_formats_text()}."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage(f"The image header could not be read ({exc}).") from exc


def _identify_unsupported(data: bytes) -> str | None:
    """Name a recognised format we refuse, so the caller learns it is a type problem."""
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in head.lower():
        return "SVG"
    try:
        # Header parsing only; nothing is decoded, so no risky decoder runs.
        with Image.open(io.BytesIO(data)) as other:
            return other.format
    except Exception:
        return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a viewer would show it."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        image = _scale_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels show the page behind them; a white page is the common case.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16-bit values at 255, which turns most pixels white.
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if pixels.size and float(np.nanmax(pixels)) <= 1.0 else 255.0
    else:
        top = 65535.0 if pixels.size and float(pixels.max()) > 255 else 255.0
    scaled = np.clip(np.nan_to_num(pixels) * (255.0 / top), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def resize_for_model(image: Image.Image) -> Image.Image:
    """Resize to the model's input size, as the reference app does (no crop)."""
    if image.size == INPUT_SIZE:
        return image
    return image.resize(INPUT_SIZE, Image.Resampling.BILINEAR, reducing_gap=3.0)


def to_batch(images: Iterable[Image.Image]) -> np.ndarray:
    """Stack RGB images of the model's size into an N×3×224×224 float32 array in [0, 1]."""
    arrays = [np.asarray(resize_for_model(image), dtype=np.uint8) for image in images]
    batch = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32, order="C")
    batch /= 255.0
    return batch


def load_image_file(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file from disk through the same path as an upload."""
    with open(path, "rb") as handle:
        return decode_image(handle.read(), max_pixels=max_pixels)
