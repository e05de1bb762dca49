"""The served model as one object: setup once, then decode → preprocess → predict → encode.

Modelled on LitServe's LitAPI. ``classify`` and ``classify_many`` take bytes; the API's views
and the batch command ``prepare`` first and keep the prepared images (for the monitoring
record, or to decode ahead in threads), then ``classify_prepared``. Each step is also usable
alone.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .engines import TorchScriptEngine, softmax
from .errors import InputError, InvalidParameter, ModelContractError, NotAnImage
from .images import DEFAULT_MAX_PIXELS, INPUT_SIZE, decode_image, resize_for_model, to_batch
from .model import LoadedModel
from .onnx_copy import choose_engine

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
# A batch request's images go through the model this many at a time: a forward pass's
# memory grows with its images, and with one thread per worker (the default) larger passes
# gain nothing per image on this model (docs/memory.md; bench/RESULTS.md, micro-batching).
IMAGES_PER_FORWARD = 1

# Plain ASCII digits only: int() would also take " 3", "0_1" and non-Latin digits.
_TOP_K_PATTERN = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one image, sorted best first."""

    top: tuple[tuple[str, float], ...]

    def to_json(self) -> dict:
        label, score = self.top[0]
        return {
            "label": label,
            "score": score,
            "top": [{"label": name, "score": value} for name, value in self.top],
        }


# Told the seconds and the number of images of each forward pass (e.g. to export metrics).
InferenceObserver = Callable[[float, int], None]


class Classifier:
    """A loaded model plus the steps that turn uploads into predictions."""

    def __init__(
        self,
        model: LoadedModel,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_inference: InferenceObserver | None = None,
        engine: Callable[[np.ndarray], np.ndarray] | None = None,
        engine_reason: str = "",
    ):
        self.model = model
        self.max_pixels = max_pixels
        self.on_inference = on_inference
        self.engine = engine or TorchScriptEngine(model)
        self.engine_reason = engine_reason  # why this engine serves, for the log and /health

    @classmethod
    def setup(
        cls,
        model_path,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        engine: str = "torchscript",
        onnx_path=None,
    ):
        """Load, check and warm up the model once per process; ``threads`` sizes the engine's pool.

        ``engine`` is ``INFERENCE_ENGINE``; which engine serves, and why, is decided by
        ``classifier.onnx_copy.choose_engine`` (``auto`` serves the ONNX copy at ``onnx_path``
        without importing torch when it passes its checks). Raises ``ModelContractError`` for
        a file that must not be served. Workers, ``check-model`` and ``swap-model`` all come
        through here, so all apply the same checks.
        """
        chosen = choose_engine(engine, model_path, onnx_path, threads or os.cpu_count() or 1)
        classifier = cls(chosen.model, max_pixels, engine=chosen.engine, engine_reason=chosen.reason)
        classifier.smoke_test()
        return classifier

    def describe(self) -> dict:
        """The model's metadata, and which engine serves it."""
        return {**self.model.describe(), "engine": self.engine.name, "engine_reason": self.engine_reason}

    def smoke_test(self) -> Prediction:
        """Classify a generated image end to end (decode, resize, model, softmax, encode).

        ``load_model`` already ran tensors through the model; this runs an encoded image
        through every step a request takes, and checks the answer is a probability.
        """
        # Our own image, so not subject to the upload limit (max_pixels may be set tiny).
        probabilities = self.predict([decode_image(smoke_image_bytes())])[0]
        total = float(probabilities.sum())
        if not np.isfinite(probabilities).all() or not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ModelContractError(
                f"{self.model.path}: the smoke image gave probabilities that are not finite "
                f"or do not sum to 1 (sum {total})."
            )
        return self.encode(probabilities)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    def parse_top_k(self, raw) -> int:
        """Validate the ``top`` query parameter: an integer from 1 to the number of classes."""
        count = len(self.labels)
        if raw is None or raw == "":
            return min(DEFAULT_TOP_K, count)
        if not isinstance(raw, str) or not _TOP_K_PATTERN.fullmatch(raw):
            raise InvalidParameter(f"'top' must be an integer from 1 to {count}, not {raw!r}.")
        k = int(raw)
        if not 1 <= k <= count:
            raise InvalidParameter(f"'top' must be from 1 to {count}; got {k}.")
        return k

    def decode(self, data: bytes) -> Image.Image:
        return decode_image(data, max_pixels=self.max_pixels)

    def prepare(self, data: bytes) -> Image.Image:
        """An upload decoded and shrunk to the model's input; raises ``InputError`` on bad input."""
        return resize_for_model(self.decode(data))

    def prepare_many(self, items: Sequence[bytes]) -> list[Image.Image | InputError]:
        """``prepare_item`` for each upload: a bad one yields its error in place."""
        return [prepare_item(data, self.max_pixels) for data in items]

    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities, N×C, for already-decoded images."""
        batch = to_batch(images)
        started = time.perf_counter()
        logits = self.engine(batch)
        if self.on_inference:
            self.on_inference(time.perf_counter() - started, len(images))
        return softmax(logits)

    def encode(self, probabilities: np.ndarray, top_k: int | None = None) -> Prediction:
        k = top_k or self.parse_top_k(None)
        # Stable, so classes of equal probability keep the labels' order on every engine.
        best = np.argsort(-probabilities, kind="stable")[:k]
        return Prediction(top=tuple((self.labels[int(i)], round(float(probabilities[i]), 6)) for i in best))

    def classify(self, data: bytes, top_k: int | None = None) -> Prediction:
        """Bytes of one image in, its prediction out; raises ``InputError`` on bad input."""
        return self.classify_prepared([self.prepare(data)], top_k)[0]

    def classify_prepared(
        self,
        items: Sequence[Image.Image | InputError],
        top_k: int | None = None,
        images_per_pass: int = IMAGES_PER_FORWARD,
    ) -> list[Prediction | InputError]:
        """Predictions for prepared items (``prepare``'s, ``prepare_item``'s), ``images_per_pass``
        items per forward pass; an error stays in its place."""
        results: list[Prediction | InputError] = []
        for start in range(0, len(items), images_per_pass):
            chunk = items[start : start + images_per_pass]
            images = [item for item in chunk if not isinstance(item, InputError)]
            probabilities = iter(self.predict(images) if images else ())
            results += [item if isinstance(item, InputError) else self.encode(next(probabilities), top_k) for item in chunk]
        return results

    def classify_many(
        self, items: Sequence[bytes], top_k: int | None = None
    ) -> list[Prediction | InputError]:
        """Classify several images, a few per forward pass; a bad item yields its error in place."""
        return self.classify_prepared(self.prepare_many(items), top_k)


def prepare_item(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image | InputError:
    """One image of a batch, decoded and shrunk to the model's input, or the error that is its answer.

    Shrunk as soon as it is decoded: a batch of large images would otherwise hold every
    full-size bitmap in memory at once. A decoder that fails in a way of its own is the
    item's error too, so that one odd file never ends a batch of thousands.
    """
    try:
        return resize_for_model(decode_image(data, max_pixels=max_pixels))
    except InputError as error:
        return error
    except Exception as exc:
        log.warning("a batch item's decoder failed", exc_info=True)
        return NotAnImage(f"The image could not be decoded ({exc}).")


def smoke_image_bytes() -> bytes:
    """A PNG of colour gradients, larger than the model's input so that resizing runs too."""
    size = (INPUT_SIZE[0] + 32, INPUT_SIZE[1] + 16)
    gradient = Image.linear_gradient("L")
    channels = (gradient, gradient.rotate(90), gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    image = Image.merge("RGB", [channel.resize(size) for channel in channels])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
