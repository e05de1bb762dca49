"""The model's ONNX forms: int8 and float16 made and checked, and the rule that picks the browser's.

The int8 and float16 forms are made from the shipped model.zip's ONNX copy, whatever its
classes (int8 calibrated on a few fixture images), so the tools are tried on the real
architecture; the whole step (every form, the browser's chosen and its manifest) on the tiny
colour model. The choice is tested on figures made up to hit each case.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch

from classifier.engines import OnnxRuntimeEngine, TorchScriptEngine
from classifier.onnx_copy import file_sha256, manifest_path, matching_onnx_copy
from classifier.model import load_model
from training.data import load_images
from training.onnx_variants import convert_onnx_fp16, export_onnx, quantize_onnx_int8
from training.variants import (BROWSER_MIN_AGREEMENT, Measured, Report, browser_path, calibration_indices,
                               choose_browser_form, forms_beside, make_variants, markdown, why)
from training.verify import Agreement, agreement, probabilities

from testing import ROOT

SHIPPED = ROOT / "model.zip"


# Where the float model's best class leads its runner-up by this much, a smaller form must keep
# it: a flip there takes more than quantisation's usual nudge (docs/model-variants.md measures it).
DECISIVE_MARGIN = 0.1


def fixture_images(data_dir, positions) -> torch.Tensor:
    """The images at ``positions`` of each fixture folder's sorted files, position by position:
    inputs only, since the shipped model's classes need not be the fixtures'."""
    folders = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    files = [sorted(folder.glob("*.jpg")) for folder in folders]
    return load_images([names[i] for i in positions for names in files])


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory) -> Path:
    return export_onnx(SHIPPED, tmp_path_factory.mktemp("forms") / "model.onnx")


@pytest.fixture(scope="module")
def shipped_int8(shipped_onnx, data_dir) -> Path:
    calibration = fixture_images(data_dir, [3])
    return quantize_onnx_int8(shipped_onnx, shipped_onnx.with_name("model-int8.onnx"), calibration)


@pytest.fixture(scope="module")
def shipped_fp16(shipped_onnx) -> Path:
    return convert_onnx_fp16(shipped_onnx, shipped_onnx.with_name("model-fp16.onnx"))


def keeps_the_answers(form: Path, data_dir) -> None:
    """On fixture images: the float model's decisive answers kept, the scores close on the whole."""
    images = fixture_images(data_dir, [0, 1, 2])
    reference = probabilities(TorchScriptEngine(load_model(SHIPPED)), images)
    got = probabilities(OnnxRuntimeEngine(form, threads=1), images)
    best_two = reference.topk(2, dim=1).values
    decisive = best_two[:, 0] - best_two[:, 1] > DECISIVE_MARGIN  # all of them for the UC Merced model
    if decisive.any():  # a model sure of nothing here (a short trial run) has no answer to keep
        result = agreement(reference[decisive], got[decisive], reference[decisive].argmax(1))
        assert result.top1_agreement >= 0.95, result
    assert float((reference - got).abs().max()) < 0.5
    # And the scores as a whole stay close on every model: the mean total-variation distance.
    assert float(0.5 * (reference - got).abs().sum(1).mean()) < 0.1


def test_int8_is_a_quarter_of_the_size_and_keeps_the_answers(shipped_onnx, shipped_int8, data_dir):
    assert shipped_int8.stat().st_size < 0.4 * shipped_onnx.stat().st_size
    keeps_the_answers(shipped_int8, data_dir)


def test_fp16_is_half_the_size_takes_the_same_input_and_keeps_the_answers(shipped_onnx, shipped_fp16,
                                                                           data_dir):
    assert shipped_fp16.stat().st_size < 0.6 * shipped_onnx.stat().st_size
    session = onnxruntime.InferenceSession(str(shipped_fp16), providers=["CPUExecutionProvider"])
    # The page feeds every form the same float32 tensor and reads float32 logits.
    assert [(i.name, i.type) for i in session.get_inputs()] == [("pixels", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("logits", "tensor(float)")]
    keeps_the_answers(shipped_fp16, data_dir)


def test_onnx_int8_is_smaller_and_agrees_on_the_colour_model(tiny_model_path, tmp_path):
    fp32 = export_onnx(tiny_model_path, tmp_path / "tiny.onnx")
    colours = colour_images()
    int8 = quantize_onnx_int8(fp32, tmp_path / "tiny-int8.onnx", colours)
    reference = probabilities(TorchScriptEngine(load_model(tiny_model_path)), colours)
    got = probabilities(OnnxRuntimeEngine(int8, threads=1), colours)
    result = agreement(reference, got, torch.arange(12) % 3)
    assert result.top1_agreement == 1.0 and result.accuracy == 1.0
    assert result.max_probability_difference < 0.05


def colour_images() -> torch.Tensor:
    """Red, green and blue images of several brightnesses: the colour model's classes in turn."""
    colours = torch.zeros(12, 3, 224, 224, dtype=torch.uint8)
    for i in range(12):
        colours[i, i % 3] = 60 + 15 * i
    return colours


def test_one_step_makes_every_form_and_the_browsers_with_its_manifest(tiny_model_path, tmp_path):
    model = tmp_path / "model.zip"
    model.write_bytes(tiny_model_path.read_bytes())
    colours = colour_images()
    report = make_variants(model, colours, torch.arange(12) % 3, colours, data="colours",
                           report_path=tmp_path / "variants.md", rounds=1, log=lambda line: None)
    fp32, int8, fp16 = forms_beside(model)
    assert all(form.path.is_file() for form in (fp32, int8, fp16))
    assert [row.key for row in report.rows] == ["", "fp32", "int8", "fp16"]  # the TorchScript file first
    browser = browser_path(model)
    assert browser == tmp_path / "model-browser.onnx"
    assert file_sha256(browser) == file_sha256(report.browser.path)
    manifest = json.loads(manifest_path(browser).read_text())
    assert manifest["form"] == report.browser.key and manifest["sha256"] == file_sha256(browser)
    assert manifest["source"] == {"file": "model.zip", "sha256": file_sha256(model)}
    assert manifest["made_from"] == {"file": "model.onnx", "sha256": file_sha256(fp32.path)}
    assert [form["form"] for form in manifest["evidence"]["forms"]] == ["fp32", "int8", "fp16"]
    assert manifest["evidence"]["validation_images"] == 12
    assert manifest["evidence"]["why"].startswith(manifest["form"])
    assert matching_onnx_copy(browser, model).manifest["labels"] == list(load_model(model).labels)
    assert "## Which to serve" in (tmp_path / "variants.md").read_text()


def test_agreement_counts_disagreements():
    reference = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    other = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    result = agreement(reference, other, torch.tensor([0, 1, 0]))
    assert result.top1_agreement == pytest.approx(2 / 3)
    assert result.max_probability_difference == pytest.approx(0.5)
    assert result.accuracy == pytest.approx(2 / 3)


def test_calibration_takes_the_first_images_of_every_class():
    assert calibration_indices([0, 1, 0, 2, 1, 0, 2, 2], per_class=2) == [0, 1, 2, 3, 4, 6]


def test_forms_sit_beside_the_model():
    assert [form.path for form in forms_beside("some/dir/model.zip")] == [
        Path("some/dir/model.onnx"), Path("some/dir/model-int8.onnx"), Path("some/dir/model-fp16.onnx")]
    assert browser_path("some/dir/model.zip") == Path("some/dir/model-browser.onnx")


# --- The rule that picks the browser's form, on made-up figures ---------------------------------


def row(key, size, agree, accuracy=0.99, b1=5.0, max_dp=0.01) -> Measured:
    measured = Agreement(256, top1_agreement=agree, max_probability_difference=max_dp, accuracy=accuracy)
    return Measured(key or "TorchScript float32", Path(f"{key or 'model'}.bin"), "engine", size, measured,
                    key=key, latency_ms={1: b1, 8: 8 * b1})


TORCHSCRIPT = row("", 13_000_000, 1.0, max_dp=0.0)
FP32 = row("fp32", 13_000_000, 1.0, max_dp=1e-6)


def test_the_smallest_form_that_keeps_the_answers_goes_to_the_browser():
    rows = [TORCHSCRIPT, FP32, row("int8", 3_500_000, 255 / 256, max_dp=0.06), row("fp16", 6_500_000, 1.0)]
    assert choose_browser_form(rows).key == "int8"
    assert 255 / 256 >= BROWSER_MIN_AGREEMENT


def test_a_smaller_form_that_changes_more_answers_is_passed_over():
    rows = [TORCHSCRIPT, FP32, row("int8", 3_500_000, 254 / 256), row("fp16", 6_500_000, 1.0)]
    chosen = choose_browser_form(rows)
    assert chosen.key == "fp16"
    assert why(rows, chosen).startswith("fp16: the smallest form (6.5 MB)")
    assert "int8 3.5 MB, 99.22%" in why(rows, chosen)


def test_float32_goes_when_nothing_smaller_keeps_the_answers_and_the_torchscript_file_never():
    small_torchscript = row("", 1_000, 1.0)
    rows = [small_torchscript, FP32, row("int8", 3_500_000, 0.9), row("fp16", 6_500_000, 0.99)]
    assert choose_browser_form(rows).key == "fp32"
    with pytest.raises(ValueError, match="the export is broken"):
        choose_browser_form([small_torchscript, row("fp32", 13_000_000, 0.98)])


def test_the_markdown_holds_the_table_the_method_and_both_choices():
    rows = [TORCHSCRIPT, FP32, row("int8", 3_500_000, 1.0, b1=2.0)]
    text = markdown(Report(Path("model.zip"), {"name": "m", "version": "1"}, "ab" * 32, "data", 256, 1, 30,
                           "cpu", "0", "0", 1.0, rows, rows[2]))
    assert "| int8 | `int8.bin`" in text and "2.0 ms" in text and "16.0 ms |" in text
    assert "30 rounds" in text and "median" in text and "python -m training.variants" in text
    assert "**The server: fp32**" in text and "**The browser: int8**" in text
    assert "bench/browser-forms.md" in text
    assert "TorchScript int8 (`model-int8.zip`) is no longer made" in text
