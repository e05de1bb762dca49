"""The served model's other forms, made and measured in one step: ``python -m training.variants``.

``make variants`` and the notebook's last cell run the same function, ``make_variants``. From a
model file (``model.zip``) it makes, beside it:

- ``model.onnx`` and its manifest ``model.onnx.json``: ONNX float32, with the evidence that it
  gives the model file's answers; what the server's ONNX Runtime engine serves
  (``classifier/onnx_copy.py``).
- ``model-int8.onnx`` and ``model-fp16.onnx``: made from ``model.onnx`` with ONNX Runtime's own
  tools (``training/onnx_variants.py``); measured, not committed.
- ``model-browser.onnx`` and its manifest: the form the page's "On this device" downloads
  (``web/device.py``), the smallest whose top-1 agreement with the model file on the
  validation split is at least ``BROWSER_MIN_AGREEMENT``; its manifest says which and why.

Each form is measured beside the TorchScript model on every validation image (size, accuracy,
top-1 agreement, largest probability difference) and timed on this CPU; the table goes to
``docs/model-variants.md``. Their speed in a browser is ``bench/browser_forms.py``'s.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from classifier.engines import OnnxRuntimeEngine, TorchScriptEngine
from classifier.model import load_model, read_meta
from classifier.onnx_copy import file_sha256

from .data import load_images, stratified_split
from .data_set import add_data_option, data_set_or_exit
from .latency import interleaved_latencies, load_average, machine_description, median_ms
from .onnx_variants import convert_onnx_fp16, export_onnx, quantize_onnx_int8, write_browser_manifest
from .verify import Agreement, agreement, probabilities

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 8)
# The page may download a smaller form than the server's copy when it gives the model file's
# best class on at least this share of the validation images.
BROWSER_MIN_AGREEMENT = 0.995
REFERENCE = "TorchScript float32"
RUNS_ON = {"torchscript": "torch (TorchScript)", "onnxruntime": "ONNX Runtime (CPU)"}


@dataclass(frozen=True)
class Form:
    """An ONNX form of the model: ``key`` is what the browser's manifest calls it."""

    key: str
    title: str
    path: Path


def forms_beside(model_path: str | Path) -> list[Form]:
    """model.zip → model.onnx, model-int8.onnx, model-fp16.onnx, in the same folder."""
    stem = Path(model_path).with_suffix("")
    return [
        Form("fp32", "ONNX float32", stem.with_suffix(".onnx")),
        Form("int8", "ONNX int8 (static, QDQ)", stem.with_name(stem.name + "-int8.onnx")),
        Form("fp16", "ONNX float16", stem.with_name(stem.name + "-fp16.onnx")),
    ]


def browser_path(model_path: str | Path) -> Path:
    """model.zip → model-browser.onnx: the form the page downloads (DEVICE_MODEL_PATH's default)."""
    stem = Path(model_path).with_suffix("")
    return stem.with_name(stem.name + "-browser.onnx")


@dataclass
class Measured:
    title: str
    path: Path
    engine: str
    size_bytes: int
    agreement: Agreement
    key: str = ""  # the ONNX form; empty for the TorchScript file itself
    latency_ms: dict[int, float] = field(default_factory=dict)


@dataclass
class Report:
    model_path: Path
    model_meta: dict
    model_sha256: str
    data: str
    calibration_images: int
    threads: int
    rounds: int
    machine: str
    load_before: str
    load_after: str
    seconds: float
    rows: list[Measured]
    browser: Measured

    @property
    def reference(self) -> Measured:
        return self.rows[0]


def calibration_indices(targets: Sequence[int], per_class: int) -> list[int]:
    """The first ``per_class`` training images of every class, in the split's order."""
    taken: dict[int, int] = {}
    chosen = []
    for index, target in enumerate(targets):
        if taken.get(int(target), 0) < per_class:
            taken[int(target)] = taken.get(int(target), 0) + 1
            chosen.append(index)
    return chosen


def make_forms(model_path: str | Path, calibration_images: torch.Tensor, log=print) -> list[Form]:
    """Export the float32 copy (with its manifest), then the int8 and float16 forms made from it."""
    fp32, int8, fp16 = forms = forms_beside(model_path)
    steps = [
        (fp32, lambda: export_onnx(model_path, fp32.path)),
        (int8, lambda: quantize_onnx_int8(fp32.path, int8.path, calibration_images)),
        (fp16, lambda: convert_onnx_fp16(fp32.path, fp16.path)),
    ]
    for form, step in steps:
        started = time.perf_counter()
        step()
        log(f"made {form.path} in {time.perf_counter() - started:.0f}s")
    return forms


def measure(
    model_path: str | Path,
    forms: Sequence[Form],
    val_images: torch.Tensor,
    val_targets: torch.Tensor,
    threads: int = 1,
    rounds: int = 30,
) -> list[Measured]:
    """Accuracy and agreement with the TorchScript file on every validation image; interleaved latency."""
    torch.set_num_threads(threads)  # as the service's workers run: TORCH_THREADS
    engines = {REFERENCE: TorchScriptEngine(load_model(model_path))}
    engines.update({form.title: OnnxRuntimeEngine(form.path, threads) for form in forms})
    answers = {title: probabilities(engine, val_images) for title, engine in engines.items()}
    paths = {REFERENCE: Path(model_path), **{form.title: form.path for form in forms}}
    keys = {form.title: form.key for form in forms}
    rows = [
        Measured(title, paths[title], RUNS_ON[engines[title].name], paths[title].stat().st_size,
                 agreement(answers[REFERENCE], answers[title], val_targets), key=keys.get(title, ""))
        for title in engines
    ]
    for batch_size in BATCH_SIZES:
        batch = val_images[:batch_size].float().div(255).numpy()
        calls = {title: (lambda engine=engine: engine(batch)) for title, engine in engines.items()}
        samples = interleaved_latencies(calls, rounds=rounds, seed=batch_size)
        for row in rows:
            row.latency_ms[batch_size] = median_ms(samples[row.title])
    return rows


def choose_browser_form(rows: Sequence[Measured]) -> Measured:
    """The smallest ONNX form that gives the model file's best class on ``BROWSER_MIN_AGREEMENT`` of them."""
    fit = [row for row in rows if row.key and row.agreement.top1_agreement >= BROWSER_MIN_AGREEMENT]
    if not fit:
        raise ValueError(f"no ONNX form agrees with the model file on {BROWSER_MIN_AGREEMENT:.1%} of "
                         "the validation images, not even float32: the export is broken")
    return min(fit, key=lambda row: row.size_bytes)


def why(rows: Sequence[Measured], chosen: Measured) -> str:
    """The browser form's choice in one sentence, with the figures it was made on."""
    a = chosen.agreement
    others = "; ".join(
        f"{row.key} {_size(row.size_bytes)}, {row.agreement.top1_agreement:.2%}"
        for row in rows if row.key and row is not chosen
    )
    return (f"{chosen.key}: the smallest form ({_size(chosen.size_bytes)}) whose top-1 agreement with the "
            f"model file on {a.images} validation images is at least {BROWSER_MIN_AGREEMENT:.1%} "
            f"({a.top1_agreement:.2%}; max |Δp| {a.max_probability_difference:.1e}). The others: {others}.")


def write_browser_form(model_path: str | Path, rows: Sequence[Measured], chosen: Measured) -> Path:
    """Copy the chosen form to ``model-browser.onnx`` and write its manifest, with the evidence."""
    target = browser_path(model_path)
    shutil.copyfile(chosen.path, target)
    evidence = {
        "rule": f"the smallest form whose top-1 agreement with {Path(model_path).name} on the validation "
                f"split is at least {BROWSER_MIN_AGREEMENT}",
        "why": why(rows, chosen),
        "validation_images": chosen.agreement.images,
        "forms": [_evidence(row) for row in rows if row.key],
    }
    fp32 = next(row for row in rows if row.key == "fp32")
    write_browser_manifest(target, load_model(model_path), chosen.key, fp32.path, evidence)
    return target


def _evidence(row: Measured) -> dict:
    a = row.agreement
    return {"form": row.key, "bytes": row.size_bytes, "top1_agreement": round(a.top1_agreement, 6),
            "max_probability_difference": float(f"{a.max_probability_difference:.2e}"),
            "accuracy": round(a.accuracy, 6)}


def make_variants(
    model_path: str | Path,
    val_images: torch.Tensor,
    val_targets: torch.Tensor,
    calibration_images: torch.Tensor,
    data: str,
    report_path: str | Path | None = None,
    threads: int = 1,
    rounds: int = 30,
    log=print,
) -> Report:
    """Every form of ``model_path``, measured; the browser's chosen and written; the table written."""
    started = time.perf_counter()
    load_before = load_average()
    forms = make_forms(model_path, calibration_images, log=log)
    rows = measure(model_path, forms, val_images, val_targets, threads=threads, rounds=rounds)
    browser = choose_browser_form(rows)
    log(f"the browser's form: {write_browser_form(model_path, rows, browser)} ({why(rows, browser)})")
    report = Report(
        model_path=Path(model_path),
        model_meta=read_meta(model_path),
        model_sha256=file_sha256(model_path),
        data=data,
        calibration_images=len(calibration_images),
        threads=threads,
        rounds=rounds,
        machine=machine_description(),
        load_before=load_before,
        load_after=load_average(),
        seconds=time.perf_counter() - started,
        rows=rows,
        browser=browser,
    )
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(markdown(report))
    return report


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB"


def _difference(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def _path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def table(report: Report) -> str:
    lines = [
        "| form | file | runs on | size | val top-1 | top-1 agreement | max abs Δp "
        "| batch 1 | batch 8 | batch 8, per image |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.rows:
        a = row.agreement
        lines.append(
            f"| {row.title} | `{_path(row.path)}` | {row.engine} "
            f"| {_size(row.size_bytes)} | {a.accuracy:.2%} | {a.top1_agreement:.2%} "
            f"| {_difference(a.max_probability_difference)} | {row.latency_ms[1]:.1f} ms "
            f"| {row.latency_ms[8]:.1f} ms | {row.latency_ms[8] / 8:.1f} ms |"
        )
    return "\n".join(lines)


def server_text(report: Report) -> str:
    reference = report.reference
    fp32 = next(row for row in report.rows if row.key == "fp32")
    return (
        f"**The server: {fp32.title}** (`{_path(fp32.path)}`), {fp32.latency_ms[1]:.1f} ms at batch 1 "
        f"against {reference.latency_ms[1]:.1f} ms for the TorchScript file, max abs Δp "
        f"{fp32.agreement.max_probability_difference:.1e}. The rule is the engine's, not this table's: "
        "ONNX Runtime serves only a copy that gives the model file's answers, probabilities within 1e-4 "
        "on the smoke batch, checked by every worker as it starts (`classifier/onnx_copy.py`); else the "
        "TorchScript file serves. The int8 and float16 forms do not pass it: the server never serves them."
    )


def browser_text(report: Report) -> str:
    chosen = report.browser
    return (
        f"**The browser: {chosen.title}**, copied to `{_path(browser_path(report.model_path))}` with a "
        f"manifest that binds it to `{report.model_path.name}` by SHA-256 and records why: "
        f"{why(report.rows, chosen)} The rule: the page downloads the smallest form whose top-1 agreement "
        f"with the model file on the validation split is at least {BROWSER_MIN_AGREEMENT:.1%}; the server "
        "hands it out only while its manifest names the served file (`web/device.py`). Its speed in "
        "Chromium with onnxruntime-web, and the same agreement measured there: "
        "[bench/browser-forms.md](../bench/browser-forms.md); the first visit's download: "
        "[docs/page.md](page.md#on-this-device)."
    )


def markdown(report: Report) -> str:
    meta = report.model_meta
    return f"""# Model variants, measured

*Generated by `python -m training.variants` (`make variants`, or the last cell of
`train_notebook.ipynb`) from `{report.model_path.name}`: do not edit by hand, run it again after
training a new model.*

- **Model**: {meta.get("name", "?")} {meta.get("version", "?")}, created {meta.get("created", "?")},
  `{report.model_path.name}` SHA-256 `{report.model_sha256[:16]}…`
- **Data**: {report.data}; int8 calibrated on {report.calibration_images} training images.
- **Machine**: {report.machine}; {report.threads} thread(s) per engine (torch and ONNX Runtime),
  as each gunicorn worker runs (`TORCH_THREADS` = cores ÷ workers); load average (1/5/15 min)
  {report.load_before} before, {report.load_after} after (a shared machine).
- **Method**: accuracy and agreement on every validation image, against the true class and
  against the TorchScript file. Latency on this CPU: the first validation images as one batch
  of 1 or 8, 3 warm-up calls, then {report.rounds} rounds that time every form once in a new
  random order; the median is shown. Model inference only: decoding, resizing and HTTP come on
  top, the same for every form.

{table(report)}

## Which to serve

{server_text(report)}

{browser_text(report)}

TorchScript int8 (`model-int8.zip`) is no longer made: the browser cannot run it, it changed
the scores far more than ONNX int8 does, and it needed a rebuild of the network and its own
quantized engine in the loader; [docs/model.md](model.md#model-variants) keeps its last figures.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model.zip", help="the model file to make the forms of")
    add_data_option(parser)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="as in the notebook")
    parser.add_argument("--seed", type=int, default=0, help="as in the notebook")
    parser.add_argument("--calibration-per-class", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--report", default="docs/model-variants.md")
    args = parser.parse_args(argv)
    data_set = data_set_or_exit(parser, args.data)

    split = stratified_split(data_set, val_fraction=args.val_fraction, seed=args.seed)
    chosen = calibration_indices(split.train_targets, args.calibration_per_class)
    report = make_variants(
        args.model,
        load_images(split.val_files),
        torch.tensor(split.val_targets),
        load_images([split.train_files[i] for i in chosen]),
        data=f"{data_set.name} validation split: {split.summary()} "
             f"(val_fraction {args.val_fraction}, seed {args.seed})",
        report_path=args.report,
        threads=args.threads,
        rounds=args.rounds,
    )
    print(table(report))
    print(f"wrote {args.report} in {report.seconds:.0f}s")


if __name__ == "__main__":
    main()
