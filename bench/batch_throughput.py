"""Images per second: the batch command beside the HTTP API, on the same files and machine.

    python bench/batch_throughput.py                       # UC Merced's 1280 images, writes bench/batch-results.md
    python bench/batch_throughput.py --models model.zip,other.zip --reps 3

The batch command is run as a person runs it (``flask --app app predict FOLDER``, output to
/dev/null) and reports its own rate, model loading excluded; its wall time with start-up is
noted too. The HTTP path is the Procfile's gunicorn (2 workers, as deployed) on loopback,
fed by 1 client (one request after another, like a script calling curl) and by 2 clients
(enough to keep both workers busy). Every configuration runs ``--reps`` times, in a new
random order each round, so that other work on a shared machine is spread over all of them;
the median is reported.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier.batch import find_images  # noqa: E402
from classifier.model import read_meta  # noqa: E402
from testing.load import post_round  # noqa: E402
from testing.multipart import form_body  # noqa: E402
from testing.servers import procfile_server  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402

RATE = re.compile(r"\(([\d.]+) images/s\)")


@dataclass
class Measured:
    path: str  # "batch command" or "HTTP"
    setting: str
    model: str
    rates: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def run_cli(data: Path, model: str, batch_size: int) -> tuple[float, float]:
    """(images/s as the command reports it, wall seconds including start-up)."""
    command = [sys.executable, "-m", "flask", "--app", "app", "predict", str(data),
               "--output", os.devnull, "--batch-size", str(batch_size)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "MODEL_PATH": model},
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    match = RATE.search(done.stderr)
    if not match:
        raise RuntimeError(f"no rate in the command's output: {done.stderr[-500:]}")
    return float(match.group(1)), wall


def run_http(url: str, files: list[Path], clients: int) -> float:
    """Images/s for POST /predict of every file by ``clients`` threads sharing the list."""
    bodies = [form_body([("upload", path.read_bytes())]) for path in files]  # read before timing
    return post_round(url, bodies, len(bodies), clients)[0]


def markdown(results: list[Measured], data: Path, count: int, reps: int, load_before: str, load_after: str) -> str:
    lines = [
        "# Batch command and HTTP API: images per second",
        "",
        "*Written by `python bench/batch_throughput.py`; run it again to refresh.*",
        "",
        f"- **Files**: {count} images under `{os.path.relpath(data, ROOT)}`",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after (a shared machine)",
        "- **Batch command**: `flask --app app predict FOLDER --output /dev/null --batch-size N`, "
        "one forward pass per core side by side (`--lanes` = all cores, `TORCH_THREADS` unset: no "
        "gunicorn workers to share with), decoding in threads; its own rate (model load excluded), "
        "and its wall time with start-up.",
        "- **HTTP**: `POST /predict` (multipart, one image per request, a new connection each) to the "
        "Procfile's gunicorn on loopback: 2 workers × 1 inference thread, as deployed.",
        "- **Engine**: both paths run the service's default (`INFERENCE_ENGINE=auto`): ONNX Runtime "
        "where a verified ONNX copy of the model file sits beside it (`model.onnx` is `model.zip`'s), "
        "TorchScript otherwise (a model file without its ONNX copy).",
        f"- **Method**: {reps} runs of each, interleaved in random order; the median (and the range).",
        "",
        "| path | setting | model | images/s (median) | range | wall time incl. start-up |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in results:
        wall = f"{statistics.median(row.walls):.1f} s" if row.walls else "-"
        lines.append(
            f"| {row.path} | {row.setting} | `{row.model}` | **{row.median:.1f}** "
            f"| {min(row.rates):.1f}–{max(row.rates):.1f} | {wall} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(parser)
    parser.add_argument("--models", default="model.zip", help="comma-separated model files")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--clients", default="1,2")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "batch-results.md")
    args = parser.parse_args()
    args.data = data_set_or_exit(parser, args.data)

    files = find_images([args.data])
    load_before = load_average()
    results: list[Measured] = []
    for model in args.models.split(","):
        meta = read_meta(ROOT / model)
        label = f"{model}"
        cli = {size: Measured("batch command", f"--batch-size {size}", label) for size in map(int, args.batch_sizes.split(","))}
        http = {n: Measured("HTTP", f"{n} client{'s' if n > 1 else ''}", label) for n in map(int, args.clients.split(","))}
        print(f"{model}: {meta.get('name')} {meta.get('version')}, {len(files)} files", flush=True)
        with procfile_server(env={"MODEL_PATH": model}) as (url, _):
            jobs = [("cli", size) for size in cli] + [("http", n) for n in http]
            for rep in range(args.reps):
                random.Random(rep).shuffle(jobs)
                for kind, setting in jobs:
                    if kind == "cli":
                        rate, wall = run_cli(args.data, model, setting)
                        cli[setting].rates.append(rate)
                        cli[setting].walls.append(wall)
                    else:
                        rate = run_http(url, files, setting)
                        http[setting].rates.append(rate)
                    print(f"  round {rep + 1}: {kind} {setting}: {rate:.1f} images/s", flush=True)
        results += list(cli.values()) + list(http.values())
    text = markdown(results, args.data, len(files), args.reps, load_before, load_average())
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
