"""Model variants: int8 copies made and checked, and the rule that picks the one to serve.

The int8 TorchScript path rebuilds the real architecture, so it is tested on the shipped
model.zip, whatever its classes (calibrated on a few fixture images); the ONNX paths on the
tiny colour model.
The table's judgement is tested on figures made up to hit each case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classifier.onnx_copy import file_sha256
from classifier.errors import ModelContractError
from classifier.model import load_model
from training.data import load_images
from training.onnx_variants import export_onnx, quantize_onnx_int8
from training.runtimes import OnnxRuntime, TorchScriptRuntime, probabilities
from training.torchscript_int8 import check_rebuild, quantize_torchscript_int8, rebuild_network
from training.variants import Measured, Report, Variant, VariantPaths, calibration_indices, markdown, recommendation
from training.verify import Agreement, agreement

from testing import ROOT

SHIPPED = ROOT / "model.zip"


# Where the float model's best class leads its runner-up by this much, int8 must keep it: a
# flip there takes more than quantisation's usual nudge (docs/model-variants.md measures it).
DECISIVE_MARGIN = 0.1


@pytest.fixture(scope="module")
def classes() -> list[str]:
    """The shipped model's own classes (whatever the notebook's user trained it on)."""
    return list(load_model(SHIPPED).labels)


def fixture_images(data_dir, positions) -> torch.Tensor:
    """The images at ``positions`` of each fixture folder's sorted files, position by position:
    inputs only, since the shipped model's classes need not be the fixtures'."""
    folders = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    files = [sorted(folder.glob("*.jpg")) for folder in folders]
    return load_images([names[i] for i in positions for names in files])


@pytest.fixture(scope="module")
def shipped_int8_path(data_dir, tmp_path_factory) -> Path:
    calibration = fixture_images(data_dir, [3])
    return quantize_torchscript_int8(SHIPPED, tmp_path_factory.mktemp("int8") / "model-int8.zip", calibration)


def test_torchscript_int8_is_a_model_file_the_service_loads(shipped_int8_path, classes):
    torch.backends.quantized.engine = "x86"  # whatever was selected before, the file says
    loaded = load_model(shipped_int8_path)  # the service's loader: contract checks and warm-up
    assert torch.backends.quantized.engine == "onednn"
    assert loaded.labels == tuple(classes)
    assert loaded.meta["quantized_engine"] == "onednn"
    assert loaded.meta["source"] == {"file": "model.zip", "sha256": file_sha256(SHIPPED)}
    assert loaded.meta["version"] == load_model(SHIPPED).meta["version"]
    assert shipped_int8_path.stat().st_size < 0.4 * SHIPPED.stat().st_size


def test_torchscript_int8_keeps_the_float_models_answers(shipped_int8_path, data_dir):
    images = fixture_images(data_dir, [0, 1, 2])
    reference = probabilities(TorchScriptRuntime(SHIPPED, threads=1), images)
    quantized = probabilities(TorchScriptRuntime(shipped_int8_path, threads=1), images)
    best_two = reference.topk(2, dim=1).values
    decisive = best_two[:, 0] - best_two[:, 1] > DECISIVE_MARGIN  # all of them for the UC Merced model
    if decisive.any():  # a model sure of nothing here (a short trial run) has no answer to keep
        result = agreement(reference[decisive], quantized[decisive], reference[decisive].argmax(1))
        assert result.top1_agreement >= 0.95, result
    assert float((reference - quantized).abs().max()) < 0.5
    # And the scores as a whole stay close on every model: the mean total-variation distance.
    assert float(0.5 * (reference - quantized).abs().sum(1).mean()) < 0.1


def test_rebuilt_network_is_checked_against_the_file(data_dir, classes):
    frozen = load_model(SHIPPED).module
    network = rebuild_network(frozen, len(classes))
    images = fixture_images(data_dir, [0])[:2]
    assert check_rebuild(frozen, network, images) < 1e-3
    with torch.no_grad():
        network._fc.bias += 0.5 * torch.arange(len(classes))  # a rebuild that went wrong
    with pytest.raises(ValueError, match="differs from the model file"):
        check_rebuild(frozen, network, images)


def test_rebuild_refuses_another_architecture(tiny_model_path):
    with pytest.raises(ValueError):
        rebuild_network(load_model(tiny_model_path).module, 3)


def test_a_quantized_engine_this_torch_lacks_is_refused(shipped_int8_path, monkeypatch):
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", ["qnnpack"])
    with pytest.raises(ModelContractError, match="'onednn' quantized engine"):
        load_model(shipped_int8_path)


def test_onnx_int8_is_smaller_and_agrees_on_the_colour_model(tiny_model_path, tmp_path):
    fp32 = export_onnx(tiny_model_path, tmp_path / "tiny.onnx")
    colours = torch.zeros(12, 3, 224, 224, dtype=torch.uint8)
    for i in range(12):
        colours[i, i % 3] = 60 + 15 * i  # red, green, blue images of several brightnesses
    int8 = quantize_onnx_int8(fp32, tmp_path / "tiny-int8.onnx", colours)
    reference = probabilities(TorchScriptRuntime(tiny_model_path, threads=1), colours)
    result = agreement(reference, probabilities(OnnxRuntime(int8, threads=1), colours), torch.arange(12) % 3)
    assert result.top1_agreement == 1.0 and result.accuracy == 1.0
    assert result.max_probability_difference < 0.05


def test_agreement_counts_disagreements():
    reference = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    other = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    result = agreement(reference, other, torch.tensor([0, 1, 0]))
    assert result.top1_agreement == pytest.approx(2 / 3)
    assert result.max_probability_difference == pytest.approx(0.5)
    assert result.accuracy == pytest.approx(2 / 3)


def test_calibration_takes_the_first_images_of_every_class():
    assert calibration_indices([0, 1, 0, 2, 1, 0, 2, 2], per_class=2) == [0, 1, 2, 3, 4, 6]


def test_variant_paths_sit_beside_the_model():
    paths = VariantPaths.beside("some/dir/model.zip")
    assert paths == VariantPaths(Path("some/dir/model.onnx"), Path("some/dir/model-int8.onnx"), Path("some/dir/model-int8.zip"))


# --- The rule that picks the variant to serve, on made-up figures ---------------------------


def row(name, runtime, served, accuracy, agree, b1, b8, size=4_000_000, max_dp=0.1, changed=(0, 0)) -> Measured:
    return Measured(
        Variant(name, Path(f"{name}.bin"), runtime, served),
        size,
        Agreement(images=256, top1_agreement=agree, max_probability_difference=max_dp, accuracy=accuracy),
        {1: b1, 8: b8},
        changed_right=changed[0],
        changed_wrong=changed[1],
    )


def report(rows) -> Report:
    return Report(Path("model.zip"), {"name": "m", "version": "1"}, "ab" * 32, "data", 256, 1, 30, "cpu", "0", "0", 1.0, rows)


REFERENCE = row("TorchScript float32", TorchScriptRuntime, True, 0.99, 1.0, 12.0, 100.0, 13_000_000, max_dp=0.0)


def test_the_fastest_variant_with_the_float_models_answers_is_served():
    onnx = row("onnx-fp32", OnnxRuntime, True, 0.99, 1.0, 4.0, 32.0, max_dp=1e-6)
    text = recommendation(report([REFERENCE, onnx]))
    assert "**Served: onnx-fp32** (`onnx-fp32.bin`): 4.0 ms at batch 1 against 12.0 ms (3.0×)" in text
    assert "INFERENCE_ENGINE=auto" in text and "Faster" not in text


def test_a_faster_variant_that_moves_the_scores_is_offered_by_configuration_only():
    rows = [
        REFERENCE,
        row("onnx-fp32", OnnxRuntime, True, 0.99, 1.0, 5.0, 40.0, max_dp=1e-6),
        row("ts-int8", TorchScriptRuntime, True, 0.99, 0.996, 4.0, 40.0, max_dp=0.4, changed=(1, 0)),
        row("onnx-int8", OnnxRuntime, False, 0.99, 0.996, 2.0, 16.0, max_dp=0.05),
    ]
    text = recommendation(report(rows))
    assert "**Served: onnx-fp32**" in text
    assert "**Faster, with other scores: ts-int8**" in text and "MODEL_PATH=ts-int8.bin" in text
    assert "changes the answer on 1 of 256 validation images (0 the float model got wrong, 1 it got right)" in text
    assert "**Not served: onnx-int8**" in text


def test_without_a_faster_exact_variant_the_float_model_stays_served():
    rows = [REFERENCE, row("slow-onnx", OnnxRuntime, True, 0.99, 1.0, 20.0, 160.0, max_dp=1e-6)]
    text = recommendation(report(rows))
    assert "**Served: TorchScript float32**: no faster variant gives its answers." in text


def test_a_variant_that_changes_the_answers_is_refused_however_fast():
    rows = [
        REFERENCE,
        row("low-agreement", TorchScriptRuntime, True, 0.99, 0.97, 1.0, 8.0),
        row("less-accurate", TorchScriptRuntime, True, 0.98, 0.995, 1.0, 8.0),
    ]
    text = recommendation(report(rows))
    assert "Fails the rule: low-agreement" in text and "less-accurate" in text
    assert "**Served: TorchScript float32**" in text and "Faster" not in text


def test_the_markdown_holds_the_table_and_the_method():
    text = markdown(report([REFERENCE, row("ts-int8", TorchScriptRuntime, True, 0.99, 0.995, 4.0, 40.0)]))
    assert "| TorchScript float32 | `model.zip`" not in text  # made-up paths, relative names
    assert "| ts-int8 |" in text and "4.0 ms" in text and "5.0 ms |" in text  # batch 8 per image
    assert "30 rounds" in text and "median" in text and "python -m training.variants" in text
