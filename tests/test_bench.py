"""The benchmark runs end to end on a tiny load: every contender, every table row, the plot.

No timing is asserted: this proves the command works, not how fast anything is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import psutil
import pytest

from training.onnx_variants import export_onnx

from testing import ROOT

pytestmark = pytest.mark.slow

CONCURRENCY = (1, 2)


@pytest.fixture(scope="module")
def bench_run(tiny_model_path, tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("bench")
    # The model with its ONNX copy beside it, as model.zip has model.onnx.
    model = shutil.copyfile(tiny_model_path, out / "tiny.zip")
    export_onnx(model, out / "tiny.onnx")
    command = [sys.executable, "-m", "bench.run", "--out", str(out), "--model", str(model),
               "--data", str(data_dir / "ucmerced"),
               "--requests", "6", "--big-requests", "2", "--batch-requests", "2", "--concurrency", *map(str, CONCURRENCY),
               "--baseline", "HEAD"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_every_contender_ran_every_load_without_errors(bench_run):
    _, results = bench_run
    assert set(results["servers"]) == {"ours", "ours-direct", "ours-before", "ours-torchscript", "reference", "litserve"}
    for name, server in results["servers"].items():
        loads = {(run["workload"], run["concurrency"]) for run in server["runs"]}
        batches = {("batch16", 2)} if name.startswith("ours") else set()  # the others have no batch route
        assert loads == {("dataset", c) for c in CONCURRENCY} | {("12mp", 1), ("12mp-detailed", 1)} | batches, name
        for run in server["runs"]:
            assert run["errors"] == 0, (name, run)
            assert run["requests"] == (6 if run["workload"] == "dataset" else 2)
            assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
        assert server["cold_start_s"] > 0 and server["peak_rss_mb"] > 0 and server["processes"] >= 2
    for key, engine in [("floor", "onnxruntime"), ("floor_torchscript", "torchscript")]:
        assert set(results[key]) == {"1", str(results["machine"]["cores"])}
        for floor in results[key].values():
            assert set(floor) == {"engine", "dataset", "12mp", "12mp-detailed", "forward_ms_per_image_by_batch"}
            assert floor["engine"] == engine  # the service's default engine found the ONNX copy
            assert set(floor["forward_ms_per_image_by_batch"]) == {"1", "2", "4", "8"}


def test_results_md_has_the_targets_every_row_and_the_plot(bench_run):
    out, results = bench_run
    text = (out / "RESULTS.md").read_text()
    assert "## Ours against the targets" in text and "machine's limit" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    baseline = results["servers"]["ours-before"]["title"]
    for title in ("ours (Procfile, behind nginx)", "ours, gunicorn direct (no nginx)", baseline,
                  "ours, TorchScript engine", "reference app", "LitServe"):
        assert sum(row.startswith(f"| {title} | dataset |") for row in rows) == len(CONCURRENCY)
        assert any(row.startswith(f"| {title} | 12mp |") for row in rows)
    assert any(row.startswith("| ours (Procfile, behind nginx) | batch16 | 2 |") for row in rows)
    for target in ("the whole server ≤ 350 MB RSS", "cold start ≤ 5 s"):
        assert any(target in row and "not measured" not in row for row in rows), target
    assert any("not below today's" in row for row in rows)  # measured at concurrency 4, not run here
    assert sum(row.startswith("| floor (onnxruntime), ") for row in rows) == 3 * len(results["floor"])
    assert sum(row.startswith("| floor (torchscript), ") for row in rows) == 3 * len(results["floor_torchscript"])
    assert "**The front** (nginx in front of gunicorn" in text
    assert "load average" in text.lower() and results["commit"].split()[0] in text
    assert "](results.png)" in text
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_server_process_is_left_running(bench_run):
    _, results = bench_run
    for name, server in results["servers"].items():
        assert server["pids"], name
        assert not [pid for pid in server["pids"] if psutil.pid_exists(pid)], name


def test_the_inference_protocols_benchmark_runs_every_contender(tmp_path, data_dir):
    output = tmp_path / "oip.md"
    command = [sys.executable, "-m", "bench.inference_protocol", "--rounds", "1", "--requests", "2",
               "--data", str(data_dir / "ucmerced"), "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in output.read_text().splitlines() if line.startswith(("| /predict", "| OIP"))]
    assert [row.split(" | ")[0] for row in rows] == ["| /predict, raw bytes", "| /predict, multipart",
                                                     "| OIP infer, binary", "| OIP infer, JSON"]
