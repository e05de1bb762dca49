"""The served model as one object: setup once, then decode → preprocess → predict → encode.

Modelled on LitServe's LitAPI. The web layer and the CLI call ``classify`` and
``classify_many``; each step is also usable alone.
"""

from __future__ import annotations

import io
import math
import re
import time
import ctypes
import dataclasses
import gc
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from .engines import TorchScriptEngine, choose_engine
from .errors import InputError, InvalidParameter, ModelContractError
from .images import DEFAULT_MAX_PIXELS, INPUT_SIZE, decode_image, resize_for_model, to_tensor
from .model import LoadedModel, load_model

DEFAULT_TOP_K = 5

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
        engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model = model
        self.max_pixels = max_pixels
        self.on_inference = on_inference
        self.engine = engine or TorchScriptEngine(model)

    @classmethod
    def setup(
        cls,
        model_path,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        engine: str = "torchscript",
        onnx_path=None,
    ):
        """Load, check and warm up the model once per process; ``threads`` caps torch's pool.

        ``engine`` picks what runs the forward pass (``classifier.engines``): ``auto`` runs
        a verified ONNX copy at ``onnx_path`` where there is one. Raises
        ``ModelContractError`` for a file that must not be served. Workers and the
        ``check-model`` command both come through here, so both apply the same checks.
        """
        if threads:
            torch.set_num_threads(threads)
        model = load_model(model_path)
        chosen = choose_engine(model, engine, onnx_path, threads or torch.get_num_threads())
        if chosen.name != TorchScriptEngine.name:
            # The TorchScript module was the reference the copy was checked against; nothing
            # runs it now, and it holds about 30 MB of each worker.
            model = dataclasses.replace(model, module=None)
            gc.collect()
            _give_freed_memory_back()
        classifier = cls(model, max_pixels=max_pixels, engine=chosen)
        classifier.smoke_test()
        return classifier

    def describe(self) -> dict:
        """The model's metadata, and which engine serves it."""
        return {**self.model.describe(), "engine": self.engine.name}

    def smoke_test(self) -> Prediction:
        """Classify a generated image end to end (decode, resize, model, softmax, encode).

        ``load_model`` already ran tensors through the model; this runs an encoded image
        through every step a request takes, and checks the answer is a probability.
        """
        # Our own image, so not subject to the upload limit (max_pixels may be set tiny).
        probabilities = self.predict([decode_image(smoke_image_bytes())])[0]
        total = float(probabilities.sum())
        if not torch.isfinite(probabilities).all() or not math.isclose(total, 1.0, abs_tol=1e-3):
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

    def predict(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class probabilities, N×C, for already-decoded images."""
        batch = to_tensor(images)
        started = time.perf_counter()
        logits = self.engine(batch)
        if self.on_inference:
            self.on_inference(time.perf_counter() - started, len(images))
        return torch.softmax(logits.float(), dim=1)

    def encode(self, probabilities: torch.Tensor, top_k: int | None = None) -> Prediction:
        scores, indices = torch.topk(probabilities, k=top_k or self.parse_top_k(None))
        return Prediction(
            top=tuple(
                (self.labels[int(i)], round(float(s), 6)) for s, i in zip(scores, indices)
            )
        )

    def classify(self, data: bytes, top_k: int | None = None) -> Prediction:
        """Bytes of one image in, its prediction out; raises ``InputError`` on bad input."""
        probabilities = self.predict([self.decode(data)])
        return self.encode(probabilities[0], top_k)

    def classify_many(
        self, items: Sequence[bytes], top_k: int | None = None
    ) -> list[Prediction | InputError]:
        """Classify several images in one forward pass; a bad item yields its error in place."""
        results: list[Prediction | InputError | None] = [None] * len(items)
        decoded, positions = [], []
        for position, data in enumerate(items):
            try:
                # Shrink each image as soon as it is decoded: a batch of large images would
                # otherwise hold every full-size bitmap in memory at once.
                decoded.append(resize_for_model(self.decode(data)))
                positions.append(position)
            except InputError as error:
                results[position] = error
        if decoded:
            probabilities = self.predict(decoded)
            for row, position in enumerate(positions):
                results[position] = self.encode(probabilities[row], top_k)
        return results


def smoke_image_bytes() -> bytes:
    """A PNG of colour gradients, larger than the model's input so that resizing runs too."""
    size = (INPUT_SIZE[0] + 32, INPUT_SIZE[1] + 16)
    gradient = Image.linear_gradient("L")
    channels = (gradient, gradient.rotate(90), gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    image = Image.merge("RGB", [channel.resize(size) for channel in channels])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _give_freed_memory_back() -> None:
    """Return the heap that glibc keeps after a free to the system (nothing elsewhere).

    Without it the freed TorchScript module stays in the worker's RSS as idle heap.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        pass
