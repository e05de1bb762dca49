"""What runs the forward pass: the TorchScript file itself, or ONNX Runtime on its ONNX copy.

``model.zip`` is the contract and the source of truth. On this project's CPUs ONNX Runtime
runs the same network faster than TorchScript (docs/model-variants.md#which-to-serve
measures by how much), with the same answers, and a worker that needs no torch holds far less
memory (docs/memory.md). Which of the two serves, and why, is ``classifier/onnx_copy.py``'s
to decide.

Both engines take a float32 N×3×224×224 array in [0, 1] and return N×C logits, as numpy
arrays: nothing here imports torch unless the TorchScript engine is built.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .model import LoadedModel


class TorchScriptEngine:
    """The loaded TorchScript module."""

    name = "torchscript"

    def __init__(self, model: LoadedModel):
        import torch  # only this engine needs it

        self.torch = torch
        self.module = model.module

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        # Channels-last is the order oneDNN's convolutions work in: the same numbers, and
        # torch need not reorder each layer's input.
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))
        return logits.float().numpy()


class OnnxRuntimeEngine:
    """An ONNX Runtime session on one ONNX file, sized to ``threads``."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int):
        import onnxruntime  # imported here: a TorchScript-only deployment never pays for it

        options = onnxruntime.SessionOptions()
        # One request at a time per worker: all its threads on the one operator, none idle
        # waiting between operators.
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The arena keeps every block it ever allocated: after one large /predict/batch a
        # worker would hold that batch's peak for good. Without it the memory goes back, at
        # no cost in speed (both measured: docs/memory.md, "How it works").
        options.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        # A batch's buffers go back to the system once freed; building the session left freed
        # heap behind (the parsed file, graph rewrites), which goes back now.
        return_large_blocks_to_the_system()
        trim_heap()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from N×C logits, row by row (in float64, so rounding stays far below 1e-6)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


# Memory given back to the system (glibc's malloc; elsewhere, nothing). A worker's memory after
# a request should be what it was before: the platform counts what the process holds, not what
# it uses, and a dyno over its quota is slowed down, then restarted. glibc keeps freed memory
# for reuse by default: the figures are in docs/memory.md.
# Blocks at least this large are mapped from the system and unmapped when freed. By default
# glibc raises this limit with every large block freed (up to 32 MB), and then a large
# image's bitmap or a large batch's buffers stay in the heap for good, idle. Held fixed, it
# must stay above what one request's forward pass allocates at once (ONNX Runtime plans all
# of a pass's buffers as one block): mapped and unmapped on every request, that block's
# pages would be zeroed again each time, a CPU cost docs/memory.md measured.
LARGE_BLOCK_BYTES = 16 * 1024 * 1024
# The heap's free end is given back by free() only beyond this (fixing the limit above also
# stops glibc from adjusting this one): the blocks every request reuses stay; trim_heap()
# gives back the rest after a batch.
KEPT_FREE_HEAP_BYTES = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): their own defaults
        return None


_LIBC = _libc()


def return_large_blocks_to_the_system() -> None:
    """From now on, large blocks go back to the system as soon as they are freed."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_HEAP_BYTES)


def trim_heap() -> None:
    """Return the free memory at the heap's end and in its free pages."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
