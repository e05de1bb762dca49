"""ONNX forms of a model file: the float32 copy the server runs, and smaller forms for the browser.

The float32 export goes through torch's TorchScript-based exporter, the one that accepts a
frozen ``ScriptModule`` as it is (the torch.export-based exporter, torch's default since
2.9, needs the eager network). Labels and meta.json travel inside the ONNX file as metadata,
and a manifest beside it tells the server and the page what it is, with the evidence that it
gives the model file's answers, which each worker checks again without torch
(``classifier.onnx_copy``).

The smaller forms are made from the float32 copy with ONNX Runtime's own tools: int8 by its
static quantisation (QDQ format, per-channel symmetric int8 weights, uint8 activations whose
ranges are calibrated on training images), float16 by its float16 converter (input and output
stay float32, so the page feeds every form the same tensor). The one the page downloads gets a
manifest of its own (``write_browser_manifest``): bound to the model file by SHA-256 as the
copy is, with the evidence it was chosen on instead of the smoke batch's.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from classifier.engines import OnnxRuntimeEngine, TorchScriptEngine, softmax
from classifier.errors import OnnxCopyUnavailable
from classifier.images import INPUT_SIZE
from classifier.model import SMOKE_ANSWERS, LoadedModel, load_model, smoke_batch
from classifier.onnx_copy import AGREEMENT_TOLERANCE, file_sha256, manifest_path

from .export import smoke_answers

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
# onnxruntime-web 1.30 and onnxruntime 1.30 run opset 17 fully; newer opsets add nothing here.
OPSET = 17


def export_onnx(model_path: str | Path, onnx_path: str | Path, manifest: bool = True) -> Path:
    """Export a model file to ONNX float32 with a dynamic batch size; write its manifest and evidence."""
    import onnx

    loaded = load_model(model_path)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, *INPUT_SIZE)
    with warnings.catch_warnings():
        # The exporter warns that it is the legacy one; it is the one that takes TorchScript.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            loaded.module,
            (example,),
            str(onnx_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    metadata = {"labels": json.dumps(list(loaded.labels)), "meta.json": json.dumps(loaded.meta)}
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"{loaded.name} {loaded.version}, exported from {Path(model_path).name}"
    onnx.save(model, str(onnx_path))
    if manifest:
        write_manifest(onnx_path, loaded)
    return onnx_path


def write_manifest(onnx_path: str | Path, model: LoadedModel) -> Path:
    """Describe ``onnx_path``, exported from ``model`` (loaded with torch), with the evidence workers check.

    Raises ``OnnxCopyUnavailable`` when the copy does not give the model's answers.
    """
    onnx_path, model_path = Path(onnx_path), Path(model.path)
    expected = TorchScriptEngine(model)(smoke_batch())
    got = OnnxRuntimeEngine(onnx_path, threads=1)(smoke_batch())
    difference = float(np.abs(softmax(got) - softmax(expected)).max())
    if not difference <= AGREEMENT_TOLERANCE:
        raise OnnxCopyUnavailable(f"{onnx_path} disagrees with {model_path} on the smoke batch "
                                  f"(max |Δp| {difference:.1e}).")
    manifest = {
        **describe(onnx_path, model),
        "evidence": {
            SMOKE_ANSWERS: smoke_answers(model.labels, expected),
            "max_difference": float(f"{difference:.2e}"),
            "tolerance": AGREEMENT_TOLERANCE,
            "versions": installed_versions("torch", "onnxruntime"),
        },
    }
    path = manifest_path(onnx_path)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def write_browser_manifest(form_path: str | Path, model: LoadedModel, form: str, made_from: str | Path,
                           evidence: dict) -> Path:
    """Describe the form of ``model`` that browsers download: which form, what it was made from, and why."""
    made_from = Path(made_from)
    manifest = {
        **describe(form_path, model),
        "form": form,
        "made_from": {"file": made_from.name, "sha256": file_sha256(made_from)},
        "evidence": {**evidence, "versions": installed_versions("torch", "onnxruntime")},
    }
    path = manifest_path(form_path)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def describe(onnx_path: str | Path, model: LoadedModel) -> dict:
    """What every manifest says: the file, the model it answers for (by SHA-256), labels, input and output."""
    onnx_path, model_path = Path(onnx_path), Path(model.path)
    return {
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "name": model.meta.get("name", ""),
        "version": model.meta.get("version", ""),
        "labels": list(model.labels),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, *INPUT_SIZE],
            "description": "RGB in [0, 1], resized to 224x224 as the server does (Pillow bilinear, no crop)",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.labels)]},
        "source": {"file": model_path.name, "sha256": file_sha256(model_path)},
    }


def installed_versions(*packages: str) -> dict[str, str]:
    """Each package's installed version, read from its metadata (nothing is imported); "" if absent."""
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = ""
    return found


class _Batches:
    """ONNX Runtime's calibration reader: uint8 images in, float batches in [0, 1] out."""

    def __init__(self, images: torch.Tensor, batch_size: int):
        self._batches = iter(range(0, len(images), batch_size))
        self._images = images
        self._batch_size = batch_size

    def get_next(self):
        start = next(self._batches, None)
        if start is None:
            return None
        batch = self._images[start : start + self._batch_size].float().div(255)
        return {INPUT_NAME: batch.numpy()}


def quantize_onnx_int8(
    onnx_path: str | Path, int8_path: str | Path, calibration_images: torch.Tensor, batch_size: int = 16
) -> Path:
    """ONNX Runtime static int8 quantisation of a float32 ONNX file, calibrated on uint8 images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Batches, CalibrationDataReader):
        pass

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    # Shape inference and graph clean-up first, as ONNX Runtime advises for quantisation:
    # the exporter's padding arithmetic folds to constants, so fewer nodes are quantised.
    prepared = int8_path.with_name(int8_path.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(calibration_images, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


def convert_onnx_fp16(onnx_path: str | Path, fp16_path: str | Path) -> Path:
    """ONNX Runtime's float16 converter on a float32 ONNX file; input and output stay float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16_path = Path(fp16_path)
    fp16_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # It warns about every constant it clamps into float16's range: they are counted below.
        warnings.simplefilter("ignore", UserWarning)
        converted = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(converted, str(fp16_path))
    return fp16_path
