"""What runs the forward pass: the TorchScript file itself, or ONNX Runtime on its ONNX copy.

``model.zip`` is the contract and the source of truth: it is always loaded and checked.
On this project's CPUs ONNX Runtime runs the same network about three times faster than
TorchScript (docs/model-variants.md), with the same answers, so where a verified ONNX copy
of the served model sits beside it (``model.onnx``, made by ``python -m training.variants``
and named by its manifest), the service runs that copy instead. "Verified" means the
manifest names the served file by its SHA-256 and both engines agree on a smoke batch;
otherwise the service keeps TorchScript and logs why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .device_model import load_device_model
from .errors import DeviceModelUnavailable, ModelContractError
from .model import LoadedModel, smoke_batch

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnxruntime", "torchscript")
# Largest difference in any class probability between the two engines that still counts as
# the same model: float rounding gives about 1e-6, a different model gives far more.
AGREEMENT_TOLERANCE = 1e-4


class TorchScriptEngine:
    """The loaded TorchScript module."""

    name = "torchscript"

    def __init__(self, model: LoadedModel):
        self.module = model.module

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # Channels-last is the order oneDNN's convolutions work in: the same numbers, and
        # torch need not reorder each layer's input.
        with torch.inference_mode():
            return self.module(batch.contiguous(memory_format=torch.channels_last))


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
        # The arena keeps every block it ever allocated: after one /predict/batch of 16 images
        # a worker would hold about 110 MB more for good. Without it the memory goes back,
        # at no cost measurable here (8.9 ms per image either way).
        options.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: batch.contiguous().numpy()})
        return torch.from_numpy(logits)


def choose_engine(model: LoadedModel, setting: str, onnx_path: str | Path | None, threads: int):
    """The engine ``setting`` asks for; with ``auto``, ONNX Runtime where a verified copy exists.

    ``onnxruntime`` insists, and a copy that is missing or disagrees stops start-up with the
    reason; ``auto`` falls back to TorchScript and logs the reason.
    """
    if setting not in ENGINES:
        raise ValueError(f"INFERENCE_ENGINE must be one of {', '.join(ENGINES)}, not {setting!r}")
    torchscript = TorchScriptEngine(model)
    if setting == "torchscript":
        return torchscript
    try:
        return _verified_onnx_engine(model, onnx_path, threads, torchscript)
    except (DeviceModelUnavailable, ModelContractError, ImportError) as refusal:
        reason = getattr(refusal, "message", str(refusal))
        if setting == "onnxruntime":
            raise ModelContractError(f"INFERENCE_ENGINE=onnxruntime, but {reason}") from refusal
        log.info("serving with TorchScript: %s", reason)
        return torchscript


def _verified_onnx_engine(model: LoadedModel, onnx_path, threads: int, reference: TorchScriptEngine):
    if not onnx_path:
        raise DeviceModelUnavailable("no ONNX copy is configured (ONNX_MODEL_PATH is empty).")
    copy = load_device_model(onnx_path, model.path)  # the manifest names the served file
    engine = OnnxRuntimeEngine(copy.path, threads)
    smoke = smoke_batch()
    expected = torch.softmax(reference(smoke).float(), dim=1)
    try:
        got = torch.softmax(engine(smoke).float(), dim=1)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelContractError(f"{copy.path} failed on a smoke batch: {exc}") from exc
    if got.shape != expected.shape:
        raise ModelContractError(f"{copy.path} gives {tuple(got.shape)} outputs, the model {tuple(expected.shape)}.")
    difference = float((got - expected).abs().max())
    if difference > AGREEMENT_TOLERANCE:
        raise ModelContractError(
            f"{copy.path} disagrees with {model.path} on a smoke batch (max |Δp| {difference:.1e})."
        )
    for _ in range(3):  # the first ONNX Runtime calls are slow too
        engine(smoke[:1])
    return engine
