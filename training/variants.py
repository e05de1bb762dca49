"""The served model in other forms, measured: ``python -m training.variants`` writes the table.

From a model file (``model.zip``) it makes

- ``model.onnx``: ONNX float32, and its manifest ``model.onnx.json``. The page's "On this
  device" path runs it in the browser; the server hands it out (``web/device.py``).
- ``model-int8.onnx``: ONNX Runtime static int8, calibrated on training images.
- ``model-int8.zip``: TorchScript int8 (``training/torchscript_int8.py``), a model file the
  service serves unchanged: ``MODEL_PATH=model-int8.zip``.

and measures each beside the TorchScript float model on the validation split: size, top-1
accuracy, agreement with the TorchScript model (top-1, largest probability difference), and
latency at batch 1 and batch 8. The table, with the machine and the method, goes to
``docs/model-variants.md``; the notebook's last cell runs the same code, so a retrained model
gets a new table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from classifier.onnx_copy import file_sha256
from classifier.model import read_meta

from .data import load_images, stratified_split
from .data_set import add_data_option, data_set_or_exit
from .latency import interleaved_latencies, load_average, machine_description, median_ms
from .onnx_variants import export_onnx, quantize_onnx_int8
from .runtimes import OnnxRuntime, TorchScriptRuntime, probabilities
from .torchscript_int8 import quantize_torchscript_int8
from .verify import Agreement, agreement

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 8)
# A variant may replace the served model when it keeps the answers: top-1 agreement with the
# TorchScript float model of at least 99%, and validation accuracy at most half a point lower.
MIN_AGREEMENT = 0.99
MAX_ACCURACY_LOSS = 0.005


@dataclass(frozen=True)
class VariantPaths:
    onnx: Path
    onnx_int8: Path
    torchscript_int8: Path

    @classmethod
    def beside(cls, model_path: str | Path) -> "VariantPaths":
        """model.zip → model.onnx, model-int8.onnx, model-int8.zip, in the same folder."""
        model_path = Path(model_path)
        stem = model_path.with_suffix("")
        return cls(
            onnx=stem.with_suffix(".onnx"),
            onnx_int8=stem.with_name(stem.name + "-int8.onnx"),
            torchscript_int8=stem.with_name(stem.name + "-int8.zip"),
        )


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    runtime: type
    served_by_the_service: bool  # the service can run it: via MODEL_PATH, or as the ONNX copy


@dataclass
class Measured:
    variant: Variant
    size_bytes: int
    agreement: Agreement
    latency_ms: dict[int, float] = field(default_factory=dict)
    # Images whose top-1 differs from the float model's: how many it had right, how many wrong.
    changed_right: int = 0
    changed_wrong: int = 0

    @property
    def exact(self) -> bool:
        """Gives the float model's answers: same top-1 everywhere, probabilities within 1e-3."""
        return self.agreement.top1_agreement == 1.0 and self.agreement.max_probability_difference < 1e-3


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

    @property
    def reference(self) -> Measured:
        return self.rows[0]

    def acceptable(self, row: Measured) -> bool:
        return (
            row.agreement.top1_agreement >= MIN_AGREEMENT
            and row.agreement.accuracy >= self.reference.agreement.accuracy - MAX_ACCURACY_LOSS
        )


def calibration_indices(targets: Sequence[int], per_class: int) -> list[int]:
    """The first ``per_class`` training images of every class, in the split's order."""
    taken: dict[int, int] = {}
    chosen = []
    for index, target in enumerate(targets):
        if taken.get(int(target), 0) < per_class:
            taken[int(target)] = taken.get(int(target), 0) + 1
            chosen.append(index)
    return chosen


def build_variants(model_path: str | Path, paths: VariantPaths, calibration_images: torch.Tensor, log=print) -> list[Variant]:
    """Export every variant of ``model_path``; the TorchScript float model comes first."""
    started = time.perf_counter()
    export_onnx(model_path, paths.onnx)
    log(f"exported {paths.onnx} in {time.perf_counter() - started:.0f}s")
    started = time.perf_counter()
    quantize_onnx_int8(paths.onnx, paths.onnx_int8, calibration_images)
    log(f"quantised {paths.onnx_int8} in {time.perf_counter() - started:.0f}s")
    started = time.perf_counter()
    quantize_torchscript_int8(model_path, paths.torchscript_int8, calibration_images)
    log(f"quantised {paths.torchscript_int8} in {time.perf_counter() - started:.0f}s")
    return [
        Variant("TorchScript float32", Path(model_path), TorchScriptRuntime, True),
        Variant("ONNX float32", paths.onnx, OnnxRuntime, True),
        Variant("ONNX int8 (static, QDQ)", paths.onnx_int8, OnnxRuntime, False),
        Variant("TorchScript int8 (FX, oneDNN)", paths.torchscript_int8, TorchScriptRuntime, True),
    ]


def measure_variants(
    variants: Sequence[Variant],
    val_images: torch.Tensor,
    val_targets: torch.Tensor,
    threads: int = 1,
    rounds: int = 30,
) -> list[Measured]:
    """Accuracy and agreement on every validation image; interleaved latency at each batch size."""
    runtimes = {variant.name: variant.runtime(variant.path, threads) for variant in variants}
    answers_by_variant = {variant.name: probabilities(runtimes[variant.name], val_images) for variant in variants}
    reference = answers_by_variant[variants[0].name]
    rows = []
    for variant in variants:
        answers = answers_by_variant[variant.name]
        changed = reference.argmax(1) != answers.argmax(1)
        reference_right = reference.argmax(1) == val_targets
        rows.append(
            Measured(
                variant,
                variant.path.stat().st_size,
                agreement(reference, answers, val_targets),
                changed_right=int((changed & reference_right).sum()),
                changed_wrong=int((changed & ~reference_right).sum()),
            )
        )
    for batch_size in BATCH_SIZES:
        batch = val_images[:batch_size].float().div(255).numpy()
        calls = {name: (lambda runtime=runtime: runtime.logits(batch)) for name, runtime in runtimes.items()}
        samples = interleaved_latencies(calls, rounds=rounds, seed=batch_size)
        for row in rows:
            row.latency_ms[batch_size] = median_ms(samples[row.variant.name])
    return rows


def make_report(
    model_path: str | Path,
    val_images: torch.Tensor,
    val_targets: torch.Tensor,
    calibration_images: torch.Tensor,
    paths: VariantPaths,
    data: str,
    threads: int = 1,
    rounds: int = 30,
    log=print,
) -> Report:
    """Build every variant of ``model_path`` and measure them: what the table shows."""
    started = time.perf_counter()
    load_before = load_average()
    variants = build_variants(model_path, paths, calibration_images, log=log)
    rows = measure_variants(variants, val_images, val_targets, threads=threads, rounds=rounds)
    return Report(
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
    )


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
        "| variant | file | runs on | size | val top-1 | top-1 agreement | max abs Δp "
        "| batch 1 | batch 8 | batch 8, per image |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report.rows:
        a = row.agreement
        lines.append(
            f"| {row.variant.name} | `{_path(row.variant.path)}` | {row.variant.runtime.engine} "
            f"| {_size(row.size_bytes)} | {a.accuracy:.2%} | {a.top1_agreement:.2%} "
            f"| {_difference(a.max_probability_difference)} | {row.latency_ms[1]:.1f} ms "
            f"| {row.latency_ms[8]:.1f} ms | {row.latency_ms[8] / 8:.1f} ms |"
        )
    return "\n".join(lines)


def recommendation(report: Report) -> str:
    """Which variant the figures say to serve, by the rule stated with it, and why."""
    reference = report.reference
    acceptable = [row for row in report.rows if report.acceptable(row)]
    served = min((row for row in report.rows if row.exact and row.variant.served_by_the_service),
                 key=lambda row: row.latency_ms[1])
    refused = [row for row in report.rows if row not in acceptable]
    images = reference.agreement.images

    def versus(row: Measured) -> str:
        text = (
            f"{row.latency_ms[1]:.1f} ms at batch 1 against {reference.latency_ms[1]:.1f} ms "
            f"({reference.latency_ms[1] / row.latency_ms[1]:.1f}×), {row.latency_ms[8] / 8:.1f} ms per image "
            f"at batch 8 against {reference.latency_ms[8] / 8:.1f} ms, "
            f"{_size(row.size_bytes)} against {_size(reference.size_bytes)}, "
            f"validation top-1 {row.agreement.accuracy:.2%} against {reference.agreement.accuracy:.2%}, "
            f"max abs Δp {row.agreement.max_probability_difference:.1e}"
        )
        changed = row.changed_right + row.changed_wrong
        if changed:
            text += (
                f"; it changes the answer on {changed} of {images} validation images "
                f"({row.changed_wrong} the float model got wrong, {row.changed_right} it got right)"
            )
        return text

    rule = (
        "The rule: the service serves the fastest variant that gives the float model's answers "
        "(the same top-1 on every validation image, probabilities within 1e-3), so that the "
        "notebook's verified figures, the server and the browser's on-device path all say the "
        "same thing. A variant that keeps the top-1 answers (agreement with the float model at "
        f"least {MIN_AGREEMENT:.0%}, validation top-1 at most {MAX_ACCURACY_LOSS:.1%} lower) but "
        "moves the scores can be chosen by configuration where throughput matters more."
    )
    parts = [rule, ""]
    if served is reference:
        parts.append(f"**Served: {reference.variant.name}**: no faster variant gives its answers.")
    else:
        parts.append(
            f"**Served: {served.variant.name}** (`{_path(served.variant.path)}`): {versus(served)}. "
            "`INFERENCE_ENGINE=auto` (the default) finds it beside the model file, checks that its "
            "manifest names that file and that ONNX Runtime gives the TorchScript answers recorded "
            "for it on a smoke batch, and runs it with ONNX Runtime; where it is missing or stale "
            "the service runs the TorchScript file and says why (`classifier/onnx_copy.py`)."
        )
    faster = [row for row in acceptable if not row.exact and row.latency_ms[1] < served.latency_ms[1]]
    opt_in = [row for row in faster if row.variant.served_by_the_service]
    if opt_in:
        best = min(opt_in, key=lambda row: row.latency_ms[1])
        parts += ["", (
            f"**Faster, with other scores: {best.variant.name}** (`{_path(best.variant.path)}`): "
            f"{versus(best)}. Opt in with `MODEL_PATH={best.variant.path.name}`; it is not the "
            "default because its scores are not the verified model's, and int8 speed depends on "
            "the CPU's int8 instructions: measure on the platform's CPU first."
        )]
    for row in sorted((r for r in faster if not r.variant.served_by_the_service), key=lambda r: r.latency_ms[1]):
        parts += ["", (
            f"**Not served: {row.variant.name}**: {versus(row)}. ONNX Runtime serves only a copy "
            "that gives the model file's answers, which this one does not."
        )]
    if refused:
        parts += ["", "Fails the rule: " + "; ".join(
            f"{row.variant.name} (agreement {row.agreement.top1_agreement:.2%}, "
            f"top-1 {row.agreement.accuracy:.2%})"
            for row in refused
        ) + "."]
    return "\n".join(parts)


def markdown(report: Report) -> str:
    meta = report.model_meta
    return f"""# Model variants, measured

*Generated by `python -m training.variants` (or the last cell of `train_notebook.ipynb`) from
`{report.model_path.name}`: do not edit by hand, run it again after training a new model.*

- **Model**: {meta.get("name", "?")} {meta.get("version", "?")}, created {meta.get("created", "?")},
  `{report.model_path.name}` SHA-256 `{report.model_sha256[:16]}…`
- **Data**: {report.data}; int8 variants calibrated on {report.calibration_images} training images.
- **Machine**: {report.machine}; {report.threads} thread(s) per engine (torch and ONNX Runtime),
  as each gunicorn worker runs (`TORCH_THREADS` = cores ÷ workers); load average (1/5/15 min)
  {report.load_before} before, {report.load_after} after (a shared machine).
- **Method**: accuracy and agreement on every validation image, against the true class and
  against the TorchScript float model. Latency: the first validation images as one batch of 1
  or 8, 3 warm-up calls, then {report.rounds} rounds that time every variant once in a new
  random order; the median is shown. Model inference only: decoding and resizing (under
  1 ms for a 256×256 JPEG) and HTTP come on top, the same for every variant; for whole
  requests and the batch command with each TorchScript model see `bench/batch-results.md`.

{table(report)}

## Which to serve

{recommendation(report)}

The browser's "On this device" path runs the same **ONNX float32** file (`model.onnx`) with
onnxruntime-web: it gives the server's answers (scores within 0.01, checked in Chromium by
`tests/test_browser_device.py`), which int8 does not promise (see max abs Δp above).

These are model-only timings at one thread. Whole requests through gunicorn, against the
reference app and LitServe, are in `bench/RESULTS.md`; the batch command's in
`bench/batch-results.md`.
"""


def write_markdown(report: Report, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model.zip", help="the model file to make variants of")
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
    calibration = load_images([split.train_files[i] for i in chosen])
    report = make_report(
        args.model,
        load_images(split.val_files),
        torch.tensor(split.val_targets),
        calibration,
        VariantPaths.beside(args.model),
        data=f"{data_set.name} validation split: {split.summary()} (val_fraction {args.val_fraction}, seed {args.seed})",
        threads=args.threads,
        rounds=args.rounds,
    )
    print(table(report))
    print(f"wrote {write_markdown(report, args.report)} in {report.seconds:.0f}s")


if __name__ == "__main__":
    main()
