"""Classify many image files: find them, decode in threads, run the model in batches.

The batch command (``flask --app app predict``) is a thin shell around ``classify_files``.
Each file takes the path of an item of ``POST /predict/batch`` (``prepare_item`` and
``Classifier.classify_prepared`` in ``classifier.pipeline``), so a file gets the same answer
here as through the API, and a file that cannot be read or decoded gets its error in place,
of the same codes, while the others go on.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TextIO

from PIL import Image

from .errors import InputError, UnreadableFile
from .pipeline import Classifier, Prediction, prepare_item

# What a folder is searched for (case-insensitive); a file named on the command line is
# always tried, whatever its name.
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".heic", ".heif", ".avif", ".mpo",
}


@dataclass(frozen=True)
class FileResult:
    """One file's answer: a prediction, or why it could not be classified."""

    path: str
    prediction: Prediction | None = None
    error_code: str = ""
    error_message: str = ""

    @classmethod
    def of(cls, path: str, outcome: Prediction | InputError) -> "FileResult":
        if isinstance(outcome, InputError):
            return cls(path, error_code=outcome.code, error_message=outcome.message)
        return cls(path, outcome)

    @property
    def ok(self) -> bool:
        return self.prediction is not None


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files under folders, recursively, in a stable order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                child
                for child in path.rglob("*")
                if child.suffix.lower() in IMAGE_SUFFIXES
                and child.is_file()
                and not any(part.startswith(".") for part in child.relative_to(path).parts)
            )
        else:
            found.append(path)  # a missing file is reported as unreadable, in its place
    return found


def classify_files(
    classifier: Classifier,
    files: Sequence[Path],
    batch_size: int = 1,
    top_k: int | None = None,
    workers: int = 2,
    lanes: int = 1,
) -> Iterator[FileResult]:
    """Yield one ``FileResult`` per file, in order; the model sees ``batch_size`` images at once.

    ``workers`` threads read, decode and resize ahead of the model (Pillow releases the GIL
    while it decodes). ``lanes`` threads run forward passes side by side (torch releases the
    GIL, as does ONNX Runtime); give the engine one thread per lane: on a small CPU, two
    batches on one core each beat one batch on two cores (bench/batch-results.md). Work is
    queued only a few batches ahead, so memory stays bounded on any number of files.
    """
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as decoders,
        ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="model") as models,
    ):
        decoding: deque = deque()
        forwarding: deque = deque()
        queued = iter(files)

        def decode_ahead() -> None:
            while len(decoding) < (lanes + 2) * batch_size:
                path = next(queued, None)
                if path is None:
                    return
                decoding.append((path, decoders.submit(load_file, path, classifier.max_pixels)))

        decode_ahead()
        while decoding or forwarding:
            while decoding and len(forwarding) <= lanes:
                batch = [decoding.popleft() for _ in range(min(batch_size, len(decoding)))]
                decode_ahead()
                loaded = [(path, future.result()) for path, future in batch]
                forwarding.append(models.submit(classify_loaded, classifier, loaded, top_k))
            yield from forwarding.popleft().result()


def load_file(path: Path, max_pixels: int) -> Image.Image | InputError:
    """A file read and made ready for the model, or the error that is its answer."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return UnreadableFile(exc.strerror or str(exc))
    return prepare_item(data, max_pixels)


def classify_loaded(
    classifier: Classifier, loaded: Sequence[tuple[Path | str, Image.Image | InputError]], top_k: int | None
) -> list[FileResult]:
    """One forward pass over ``(path, load_file's result)`` pairs, a result per file."""
    outcomes = classifier.classify_prepared([item for _, item in loaded], top_k, images_per_pass=len(loaded) or 1)
    return [FileResult.of(str(path), outcome) for (path, _), outcome in zip(loaded, outcomes)]


class CsvWriter:
    """path,label,score,label_2,score_2,...,label_k,score_k,error: one row per file."""

    def __init__(self, stream: TextIO, top_k: int):
        self.top_k = top_k
        self.writer = csv.writer(stream, lineterminator="\n")
        ranks = [column for rank in range(2, top_k + 1) for column in (f"label_{rank}", f"score_{rank}")]
        self.writer.writerow(["path", "label", "score", *ranks, "error"])

    def write(self, result: FileResult) -> None:
        cells: list = [result.path]
        if result.ok:
            for label, score in result.prediction.top:
                cells += [label, f"{score:.6f}"]
            cells.append("")
        else:
            cells += [""] * (2 * self.top_k) + [f"{result.error_code}: {result.error_message}"]
        self.writer.writerow(cells)


class JsonLinesWriter:
    """One JSON object per line: the API's prediction plus "path", or "path" and "error"."""

    def __init__(self, stream: TextIO, top_k: int):
        self.stream = stream

    def write(self, result: FileResult) -> None:
        if result.ok:
            record = {"path": result.path, **result.prediction.to_json()}
        else:
            record = {"path": result.path, "error": {"code": result.error_code, "message": result.error_message}}
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")


WRITERS = {"csv": CsvWriter, "jsonl": JsonLinesWriter}
