"""One command, one run: the floor and the three servers under identical load; then the report.

    python -m bench.run                 # what `make bench` runs: writes bench/RESULTS.md,
                                        # bench/results.json and bench/results.png
    python -m bench.run --requests 8 --concurrency 1 --out /tmp/b   # a quick smoke run

Each server runs alone: start it, time its cold start, warm it up, then for each concurrency
a closed loop of ``--requests`` data-set JPEGs and, at concurrency 1, ``--big-requests``
of each 12 MP JPEG, and for ours ``--batch-requests`` 16-image POST /predict/batch at
concurrency 2, while its processes' memory is sampled; then stop it. ``--baseline REV``
also runs our service as it was at a git revision, to compare a change with what it replaces.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from classifier.model import read_meta
from training.onnx_variants import installed_versions
from testing.servers import free_port
from training.data_set import add_data_option, data_set_or_exit

from . import report, servers
from .load import run_locust
from .workload import build_workloads

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = {"ours": servers.ours, "ours-direct": servers.ours_direct, "ours-torchscript": servers.ours_torchscript,
              "reference": servers.reference, "litserve": servers.litserve}
WARMUP_REQUESTS = 10
# POST /predict/batch, ours only (the others have no such route): MAX_BATCH_FILES' default,
# the largest batch a client may send, from one client per worker, so that the memory peak
# includes both workers in a batch at once.
BATCH_FILES = 16
BATCH_CONCURRENCY = 2
BATCH_WORKLOAD = f"batch{BATCH_FILES}"
BATCH_SIZES = (1, 2, 4, 8)  # the floor also times the forward pass alone at these


def run_floor(model: Path, threads: int, plan: list[tuple[str, Path, int]], work: Path, engine: str = "auto") -> dict:
    out = work / f"floor-{engine}-{threads}.json"
    command = [sys.executable, "-m", "bench.floor", "--model", str(model), "--threads", str(threads), "--out", str(out),
               "--engine", engine, "--batch-sizes", *map(str, BATCH_SIZES)]
    for name, payload_list, count in plan:
        command += ["--workload", name, str(payload_list), str(count)]
    subprocess.run(command, cwd=ROOT, env=servers.clean_env(), check=True)
    return json.loads(out.read_text())


def run_contender(name: str, model: Path, plan: list[tuple[str, Path, int, int, int]], probe: Path, work: Path,
                  make=None) -> dict:
    port = free_port()
    contender = (make or CONTENDERS[name])(port, model)
    print(f"[bench] {contender.title}: starting", flush=True)
    with servers.serve(contender, port, work / f"{name}-server.log", probe) as running:
        print(f"[bench] {contender.title}: ready in {running.cold_start_s:.2f}s", flush=True)
        # Not measured: lets every worker run its first requests (lazy init, caches).
        run_locust(running.url, plan[0][1], WARMUP_REQUESTS, 2, work / f"{name}-warmup.json")
        runs = []
        with running.memory as memory:
            for workload, payload_list, count, concurrency, batch_files in plan:
                record = work / f"{name}-{workload}-c{concurrency}.json"
                result = run_locust(running.url, payload_list, count, concurrency, record, batch_files=batch_files)
                print(f"[bench] {contender.title}: {workload} c={concurrency}: "
                      f"{result.throughput_rps:.1f} req/s, p50 {result.p50_ms:.1f} ms, "
                      f"{result.errors} errors", flush=True)
                runs.append({"workload": workload, "concurrency": concurrency, **result.to_json()})
        return {
            "title": contender.title,
            "config": contender.config,
            "cold_start_s": running.cold_start_s,
            "readiness": contender.readiness,
            "peak_rss_mb": memory.peak_rss / 1e6,
            "peak_rss_children_mb": memory.peak_rss_children / 1e6,
            "peak_pss_mb": memory.peak_pss / 1e6,
            "processes": memory.processes,
            "pids": sorted(memory.pids),
            "runs": runs,
        }


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(memory_kb / 1e6, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: found or "not installed" for name, found in
                     installed_versions("torch", "onnxruntime", "gunicorn", "flask", "litserve", "locust", "pillow").items()},
    }


def git_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where RESULTS.md and results.* go")
    parser.add_argument("--model", type=Path, default=ROOT / "model.zip")
    add_data_option(parser)
    parser.add_argument("--requests", type=int, default=200, help="data-set requests per concurrency")
    parser.add_argument("--big-requests", type=int, default=30, help="requests per 12 MP JPEG")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-requests", type=int, default=30,
                        help=f"POST /predict/batch requests of {BATCH_FILES} images (ours only)")
    parser.add_argument("--contenders", nargs="+", default=["floor", *CONTENDERS],
                        choices=["floor", *CONTENDERS])
    parser.add_argument("--baseline", metavar="REVISION",
                        help="also run our service as it was at this git revision (contender ours-before)")
    args = parser.parse_args(argv)
    data_set = data_set_or_exit(parser, args.data)
    model = args.model.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    results = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine_info(),
        "load_average_start": os.getloadavg(),
        "model": {"file": model.name, **read_meta(model)},
        "settings": {"requests": args.requests, "big_requests": args.big_requests,
                     "concurrency": args.concurrency, "warmup_requests": WARMUP_REQUESTS,
                     "batch_requests": args.batch_requests, "batch_files": BATCH_FILES,
                     "batch_concurrency": BATCH_CONCURRENCY},
        "floor": {},  # on the engine our service picks by default: the targets' floor
        "floor_torchscript": {},  # on the engine the reference app and LitServe run
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(scratch)
        workloads = build_workloads(work / "images", data_set)
        results["workloads"] = {name: w.title for name, w in workloads.items()}
        results["workloads"][BATCH_WORKLOAD] = f"POST /predict/batch of {BATCH_FILES} data-set JPEGs (ours only)"
        lists = {name: w.write_list(work) for name, w in workloads.items()}
        big = [name for name in workloads if name != "dataset"]
        if "floor" in args.contenders:
            floor_plan = [("dataset", lists["dataset"], args.requests)] + [
                (name, lists[name], args.big_requests) for name in big]
            for threads in sorted({1, results["machine"]["cores"]}):
                print(f"[bench] floor, {threads} thread(s)", flush=True)
                results["floor"][str(threads)] = run_floor(model, threads, floor_plan, work)
                print(f"[bench] floor, TorchScript, {threads} thread(s)", flush=True)
                results["floor_torchscript"][str(threads)] = run_floor(model, threads, floor_plan, work, "torchscript")
        plan = [("dataset", lists["dataset"], args.requests, c, 0) for c in args.concurrency] + [
            (name, lists[name], args.big_requests, 1, 0) for name in big]
        batches = [(BATCH_WORKLOAD, lists["dataset"], args.batch_requests, BATCH_CONCURRENCY, BATCH_FILES)]
        probe = workloads["dataset"].files[0]
        for name in (n for n in CONTENDERS if n in args.contenders):
            ours = name.startswith("ours") and args.batch_requests > 0
            results["servers"][name] = run_contender(name, model, plan + (batches if ours else []), probe, work)
        if args.baseline:
            results["servers"]["ours-before"] = run_contender(
                "ours-before", model, plan + (batches if args.batch_requests > 0 else []), probe, work,
                make=servers.ours_at(args.baseline))
    results["load_average_end"] = os.getloadavg()

    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, args.out)
    print(f"[bench] wrote {args.out / 'RESULTS.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
