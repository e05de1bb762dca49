"""Classify many files on a Ray cluster: the batch command's own steps as a Ray Data pipeline.

``classify_files_on_ray`` is ``classifier.batch.classify_files`` spread over machines, and
yields the same ``FileResult`` per file in the same order, so the command writes them with
the same writers. The stages:

1. the caller lists the files (``find_images``, so the same files in the same order);
2. a decode step reads, decodes and resizes them (``classifier.batch``'s
   ``load_file``, the service's own decoding), anywhere in the cluster: so every node
   must read the files at the paths the driver names (a shared or mounted file system). It
   runs in the model actors or in CPU tasks of its own (``DECODE_IN``);
3. a pool of actors, each holding the served engine (``Classifier.setup``, as a worker
   loads it), runs the forward passes and encodes the answers (``classify_loaded``);
4. the rows come back as they are done, and ``_results`` puts them in the files' order.

Ray ships this package (a ``py_modules`` runtime environment) and the model files (through
its object store) to the nodes; each node needs only the same Python packages
(requirements.txt and requirements-ray.txt). docs/scaling.md says when this pays.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from .batch import FileResult, classify_loaded, load_file
from .errors import InputError
from .onnx_copy import manifest_path
from .images import INPUT_SIZE
from .pipeline import Classifier, Prediction

# ``ray.init`` with this address starts a Ray of its own on this machine, stopped at the end.
LOCAL = "local"
# Most files per decode task and per actor call: Ray's cost per call is spread over many
# images (bench/ray-results.md); fewer files than that still get one block per actor.
ROWS_PER_CALL = 64
# Where the files are decoded, and the CPUs that the actors and the decode step ask Ray for.
# "actors": both steps ask for one CPU, so Ray fuses them and each actor decodes its block
# and then runs the model on it, on its own core; on CPU-only nodes that is the faster plan
# (bench/ray-results.md), with no pixels between processes. "tasks": decoding in CPU tasks
# of their own, running ahead of the actors; an actor and the decode tasks share each core
# (half and a quarter: amounts that differ, so that Ray does not fuse them). That pays where
# the model has an accelerator to itself, or the decoding outweighs the model.
DECODE_IN = {"actors": (1.0, 1.0), "tasks": (0.5, 0.25)}  # place -> (actor CPUs, decode CPUs)

_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelFiles:
    """The served model's files as bytes, to be written out again on every node."""

    files: dict[str, bytes]  # file name -> contents
    model_name: str
    onnx_name: str | None

    @classmethod
    def read(cls, model_path: str | Path, onnx_path: str | Path | None) -> "ModelFiles":
        """The model file, and its ONNX copy with its manifest where both exist."""
        model_path = Path(model_path)
        files = {model_path.name: model_path.read_bytes()}
        onnx_name = None
        if onnx_path and Path(onnx_path).is_file() and manifest_path(onnx_path).is_file():
            onnx_path = Path(onnx_path)
            onnx_name = onnx_path.name
            files[onnx_name] = onnx_path.read_bytes()
            files[manifest_path(onnx_name).name] = manifest_path(onnx_path).read_bytes()
        return cls(files, model_path.name, onnx_name)

    def write(self, folder: Path) -> tuple[Path, Path | None]:
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder / self.model_name, (folder / self.onnx_name if self.onnx_name else None)


@contextmanager
def ray_cluster(address: str = LOCAL):
    """Join the cluster at ``address`` (or start a local Ray), with this package on every node."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a batch job does not phone home
    local = address == LOCAL
    if not local:
        _check_reachable(address)
    ray.init(
        address=address,
        runtime_env={"py_modules": [str(_PACKAGE)], "excludes": ["__pycache__"]},
        include_dashboard=False if local else None,
        logging_level="warning",
        # Workers' output would land in the driver's stdout, which may be the predictions;
        # their errors still reach the driver as exceptions, and their logs stay on the nodes.
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()  # a local Ray stops; a joined cluster goes on without us


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse a HOST:PORT where nothing listens: ``ray.init`` would wait for it for ever."""
    host, colon, port = address.rpartition(":")
    if not colon or "://" in address or not port.isdigit():
        return  # "auto", "ray://..." and the like: Ray's own look-up
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(error.strerror or str(error)) from error


def classify_files_on_ray(
    model: ModelFiles,
    options: dict,
    files: Sequence[Path],
    batch_size: int = 1,
    top_k: int = 5,
    actors: int | None = None,
    decode_in: str = "actors",
    progress_bars: bool = False,
) -> Iterator[FileResult]:
    """Yield one ``FileResult`` per file, in order; call inside ``ray_cluster``.

    ``options`` are ``Classifier.setup``'s (its ``onnx_path`` is replaced by the copy each
    actor writes). ``actors`` is the size of the pool, by default one per CPU of the
    cluster; each runs forward passes of ``batch_size`` images on one thread. ``decode_in``
    is a key of ``DECODE_IN``. Raises ``ValueError`` for more actors than the cluster has
    room for.
    """
    import ray
    import ray.data

    actor_cpus, decode_cpus = DECODE_IN[decode_in]
    cpus = ray.cluster_resources().get("CPU", 0)
    fused = actor_cpus == decode_cpus
    fits = int((cpus - (0 if fused else decode_cpus)) / actor_cpus)
    actors = actors or max(1, int(cpus))
    if actors > fits:
        # Ray would wait for CPUs that never come free: for more actors, or for decode tasks.
        raise ValueError(f"{actors} model actors need {actors * actor_cpus:g} CPUs"
                         f"{'' if fused else f' plus {decode_cpus:g} for decoding'}; the cluster has "
                         f"{cpus:g} CPUs, room for {max(fits, 0)} actors.")
    context = ray.data.DataContext.get_current()
    # Rows come back as they are done; the driver puts them in order (``_in_order``), which
    # keeps every actor busy where Ray's own preserve_order would hold finished blocks back.
    context.execution_options.preserve_order = False
    context.enable_progress_bars = progress_bars
    model_ref = ray.put(model)  # through the object store once, whatever the pool's size
    rows = [{"index": index, "path": str(path), "file": os.path.abspath(path)} for index, path in enumerate(files)]
    blocks = min(max(math.ceil(len(rows) / ROWS_PER_CALL), actors, 1), len(rows) or 1)
    dataset = (
        ray.data.from_items(rows, override_num_blocks=blocks)
        .map_batches(
            _decode_batch,
            fn_kwargs={"max_pixels": options["max_pixels"]},
            batch_size=ROWS_PER_CALL,
            batch_format="numpy",
            num_cpus=decode_cpus,
        )
        .map_batches(
            _ModelActor,
            fn_constructor_kwargs={"model": model_ref, "options": options, "batch_size": batch_size, "top_k": top_k},
            batch_size=ROWS_PER_CALL,
            batch_format="numpy",
            num_cpus=actor_cpus,
            # No more actors than blocks to feed them: the others would only load the model.
            compute=ray.data.ActorPoolStrategy(size=min(actors, blocks)),
        )
    )
    return _results(dataset)


def _results(dataset) -> Iterator[FileResult]:
    """The rows in the files' order: each waits only for the rows before it."""
    waiting: dict[int, FileResult] = {}
    next_index = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        waiting.update(zip(map(int, batch["index"]), _results_from_columns(batch)))
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1


def _decode_batch(batch: dict, max_pixels: int) -> dict:
    """Read, decode and resize each file; a file that fails keeps its error and blank pixels."""
    paths = [str(path) for path in batch["path"]]
    pixels = np.zeros((len(paths), INPUT_SIZE[1], INPUT_SIZE[0], 3), dtype=np.uint8)
    codes, messages = [""] * len(paths), [""] * len(paths)
    for index, file in enumerate(batch["file"]):
        loaded = load_file(Path(str(file)), max_pixels)
        if isinstance(loaded, InputError):
            codes[index], messages[index] = loaded.code, loaded.message
        else:
            pixels[index] = np.asarray(loaded, dtype=np.uint8)
    return {"index": batch["index"], "path": np.array(paths, dtype=object), "pixels": pixels,
            "error_code": np.array(codes, dtype=object), "error_message": np.array(messages, dtype=object)}


class _ModelActor:
    """One engine per actor, loaded once, as a serving worker loads it."""

    def __init__(self, model, options: dict, batch_size: int, top_k: int):
        import ray

        self.folder = Path(tempfile.mkdtemp(prefix="classifier-model-"))
        model_path, onnx_path = ray.get(model).write(self.folder)
        self.classifier = Classifier.setup(model_path, **{**options, "onnx_path": onnx_path})
        self.batch_size = batch_size
        self.top_k = top_k

    def __call__(self, batch: dict) -> dict:
        loaded = [
            (path, InputError.coded(str(code), str(message)) if code else Image.fromarray(pixels))
            for path, pixels, code, message in zip(
                map(str, batch["path"]), batch["pixels"], batch["error_code"], batch["error_message"])
        ]
        results: list[FileResult] = []
        for start in range(0, len(loaded), self.batch_size):
            # Forward passes of the command's --batch-size, so the numbers are the same too.
            results += classify_loaded(self.classifier, loaded[start:start + self.batch_size], self.top_k)
        return {"index": batch["index"], **_columns_from_results(results, self.top_k)}

    def __del__(self):
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


def _columns_from_results(results: list[FileResult], top_k: int) -> dict:
    # One list of labels per file (Arrow's list<string>); scores fixed-width, 0 where it failed.
    labels = np.empty(len(results), dtype=object)
    scores = np.zeros((len(results), top_k), dtype=np.float64)
    for row, result in enumerate(results):
        labels[row] = [label for label, _ in result.prediction.top] if result.ok else []
        if result.ok:
            scores[row] = [score for _, score in result.prediction.top]
    return {
        "path": np.array([result.path for result in results], dtype=object),
        "labels": labels,
        "scores": scores,
        "error_code": np.array([result.error_code for result in results], dtype=object),
        "error_message": np.array([result.error_message for result in results], dtype=object),
    }


def _results_from_columns(batch: dict) -> Iterator[FileResult]:
    for path, labels, scores, code, message in zip(
        batch["path"], batch["labels"], batch["scores"], batch["error_code"], batch["error_message"]
    ):
        if code:
            yield FileResult(str(path), error_code=str(code), error_message=str(message))
        else:
            top = tuple((str(label), float(score)) for label, score in zip(labels, scores))
            yield FileResult(str(path), Prediction(top=top))
