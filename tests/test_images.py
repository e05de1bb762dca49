"""Decoding uploads: every format and pixel mode we promise, and every way bytes go bad."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifier.errors import EmptyInput, ImageTooLarge, NotAnImage, UnsupportedImageType
from classifier.images import INPUT_SIZE, decode_image, load_image_file, to_batch

from testing.samples import image_bytes, png_header_only

RED = (255, 0, 0)


def assert_close_colour(pixel, expected, tolerance=12):
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected)), (pixel, expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_decodes_each_promised_format(fmt):
    image = decode_image(image_bytes(fmt, colour=RED))
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    assert_close_colour(image.getpixel((10, 10)), RED, tolerance=40 if fmt == "GIF" else 12)


def test_decodes_heic_from_phones():
    data = image_bytes("HEIF", colour=RED, quality=90)
    image = decode_image(data)
    assert image.size == (64, 48)
    assert_close_colour(image.getpixel((10, 10)), RED, tolerance=30)


def test_decodes_the_data_sets_own_tiff(dataset_tiff):
    image = load_image_file(dataset_tiff)
    assert image.mode == "RGB"
    assert image.size[0] >= 250 and image.size[1] >= 250


def test_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert_close_colour(decode_image(buffer.getvalue()).getpixel((5, 5)), RED, tolerance=40)


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("L", 128, (128, 128, 128)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (255, 0, 0, 255), RED),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent shows the white page
        ("LA", (0, 0), (255, 255, 255)),
    ],
)
def test_converts_pixel_modes_to_rgb(mode, colour, expected):
    image = decode_image(image_bytes("PNG", mode=mode, colour=colour))
    assert image.mode == "RGB"
    assert_close_colour(image.getpixel((3, 3)), expected)


def test_palette_with_transparency_composites_on_white():
    palette_image = Image.new("P", (16, 16), 0)
    palette_image.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    buffer = io.BytesIO()
    palette_image.save(buffer, format="PNG", transparency=0)
    assert_close_colour(decode_image(buffer.getvalue()).getpixel((3, 3)), (255, 255, 255))


def test_cmyk_jpeg_becomes_rgb():
    image = decode_image(image_bytes("JPEG", mode="CMYK", colour=(0, 255, 255, 0)))
    assert image.mode == "RGB"
    assert_close_colour(image.getpixel((5, 5)), RED, tolerance=30)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    image = decode_image(image_bytes("PNG", mode="I;16", colour=32768))
    # Clipping at 255 would give white; scaling gives mid-grey.
    assert_close_colour(image.getpixel((3, 3)), (128, 128, 128), tolerance=2)


def test_exif_orientation_is_applied():
    # Left half red, right half blue; orientation 6 means "rotate 90° clockwise to view".
    image = Image.new("RGB", (40, 20), RED)
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)

    upright = decode_image(buffer.getvalue())
    assert upright.size == (20, 40)
    assert_close_colour(upright.getpixel((10, 5)), RED, tolerance=40)
    assert_close_colour(upright.getpixel((10, 35)), (0, 0, 255), tolerance=40)


def test_large_jpeg_is_decoded_at_reduced_size_but_never_below_the_input():
    data = image_bytes("JPEG", size=(4000, 3000), quality=80)
    image = decode_image(data)
    assert image.size[0] < 4000
    assert image.size[0] >= INPUT_SIZE[0] and image.size[1] >= INPUT_SIZE[1]


def test_empty_bytes_are_refused():
    with pytest.raises(EmptyInput):
        decode_image(b"")


def test_text_named_jpg_is_not_an_image():
    with pytest.raises(NotAnImage) as info:
        decode_image(b"hello, I am a text file pretending to be a photo\n" * 10)
    assert "JPEG" in info.value.message  # the message names what to send instead


def test_truncated_jpeg_is_not_an_image(dataset_jpeg):
    data = dataset_jpeg.read_bytes()
    with pytest.raises(NotAnImage):
        decode_image(data[: len(data) // 3])


@pytest.mark.parametrize("side", [8_000, 100_000])
def test_decompression_bomb_is_refused_from_the_header(side):
    # ImageTooLarge rather than NotAnImage proves the pixels were never decoded.
    with pytest.raises(ImageTooLarge):
        decode_image(png_header_only(side, side))


def test_pixel_limit_is_configurable():
    data = image_bytes("PNG", size=(64, 48))
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, max_pixels=1000)
    assert "3,072" in info.value.message and "1,000" in info.value.message
    assert decode_image(data, max_pixels=64 * 48).size == (64, 48)


@pytest.mark.parametrize("fmt", ["ICO", "PDF", "EPS"])
def test_formats_we_do_not_decode_are_unsupported(fmt):
    with pytest.raises(UnsupportedImageType) as info:
        decode_image(image_bytes(fmt, size=(32, 32)))
    assert fmt in info.value.message


def test_svg_is_unsupported():
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    with pytest.raises(UnsupportedImageType):
        decode_image(svg)


def test_to_batch_resizes_and_scales_to_unit_range():
    images = [Image.new("RGB", (300, 200), RED), Image.new("RGB", (224, 224), (0, 0, 0))]
    batch = to_batch(images)
    assert batch.shape == (2, 3, *INPUT_SIZE)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert float(batch[0, 0].mean()) == pytest.approx(1.0)
    assert float(batch[0, 1].max()) == pytest.approx(0.0)
    assert float(batch[1].max()) == 0.0
