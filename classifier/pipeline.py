"""The served model as one object: setup once, then decode → preprocess → predict → encode.

Modelled on LitServe's LitAPI. The web layer and the CLI call ``classify`` and
``classify_many``; each step is also usable alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from .errors import InputError, InvalidParameter
from .images import DEFAULT_MAX_PIXELS, decode_image, to_tensor
from .model import LoadedModel, load_model

DEFAULT_TOP_K = 5


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
    ):
        self.model = model
        self.max_pixels = max_pixels
        self.on_inference = on_inference

    @classmethod
    def setup(
        cls,
        model_path,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        on_inference: InferenceObserver | None = None,
    ):
        """Load and warm up the model once per process; ``threads`` caps torch's pool."""
        if threads:
            torch.set_num_threads(threads)
        return cls(load_model(model_path), max_pixels=max_pixels, on_inference=on_inference)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    def parse_top_k(self, raw) -> int:
        """Validate the ``top`` query parameter: an integer from 1 to the number of classes."""
        count = len(self.labels)
        if raw is None or raw == "":
            return min(DEFAULT_TOP_K, count)
        try:
            k = int(raw)
        except (TypeError, ValueError):
            raise InvalidParameter(f"'top' must be an integer from 1 to {count}, not {raw!r}.")
        if not 1 <= k <= count:
            raise InvalidParameter(f"'top' must be from 1 to {count}; got {k}.")
        return k

    def decode(self, data: bytes) -> Image.Image:
        return decode_image(data, max_pixels=self.max_pixels)

    def predict(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class probabilities, N×C, for already-decoded images."""
        batch = to_tensor(images)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.model.module(batch)
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
                decoded.append(self.decode(data))
                positions.append(position)
            except InputError as error:
                results[position] = error
        if decoded:
            probabilities = self.predict(decoded)
            for row, position in enumerate(positions):
                results[position] = self.encode(probabilities[row], top_k)
        return results
