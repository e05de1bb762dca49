"""Images per second: the batch command on this machine beside the same command on Ray.

    flock /tmp/cpu-heavy.lock python bench/ray_batch.py          # UC Merced, writes bench/ray-results.md
    flock /tmp/cpu-heavy.lock python bench/ray_batch.py --data ../shared/data/eurosat --reps 1

Three contenders on the same cores, run as a person runs them (``flask --app app predict
FOLDER --output /dev/null``), interleaved in a new random order each round:

- the single-machine command (threads decoding, one forward pass per core);
- ``--ray`` without an address: a local Ray of one node with all the cores;
- ``--ray ADDRESS``: a cluster of one node per core on this machine (``ray start``, as
  tests/ray_cluster.py starts it), so that rows cross between nodes' object stores.

Each run reports its own rate (``classified N of M files in S s``: from the first file
submitted to the last written, so for Ray with its actors loading the model), and its wall
time with start-up (interpreter, model check, and for Ray joining or starting it). From
those, Ray's cost per image and its fixed cost per run, and the break-even point with more
machines (docs/scaling.md).
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
from tests.ray_cluster import Cluster, ray_env  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402

SUMMARY = re.compile(r"classified (\d+) of (\d+) files in ([\d.]+)s \(([\d.]+) images/s\)")


@dataclass
class Contender:
    name: str
    args: list[str]
    env: dict
    rates: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def run(contender: Contender, data: Path, count: int) -> None:
    command = [sys.executable, "-m", "flask", "--app", "app", "predict", str(data), "--output", os.devnull, *contender.args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=contender.env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    match = SUMMARY.search(done.stderr)
    if done.returncode != 0 or not match or int(match.group(1)) != count:
        raise RuntimeError(f"{contender.name} failed ({done.returncode}): {done.stderr[-1500:]}")
    contender.rates.append(float(match.group(4)))
    contender.walls.append(wall)


def markdown(contenders: list[Contender], data: Path, count: int, reps: int, cores: int, loads: tuple[str, str]) -> str:
    single = contenders[0]
    lines = [
        "# The batch command on Ray: images per second",
        "",
        "*Written by `flock /tmp/cpu-heavy.lock python bench/ray_batch.py`; run it again to refresh.*",
        "",
        f"- **Files**: {count} images under `{os.path.relpath(data, ROOT)}`; model `model.zip`, served by "
        "ONNX Runtime on its verified copy (`INFERENCE_ENGINE=auto`), one thread per forward pass, "
        "`--batch-size 1`.",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {loads[0]} before, {loads[1]} "
        "after (a shared machine).",
        f"- **Same cores for all**: {cores}. The single-machine command runs {cores} forward passes side by "
        f"side; `--ray` alone starts a local Ray of one node with {cores} CPUs; the cluster is {cores} "
        "nodes of 1 CPU each on this machine (`ray start --head`, then nodes joining it), already up. "
        "Ray runs one model actor per CPU (half a CPU each) and the decode tasks in the other half.",
        "- **images/s**: the command's own figure, from the first file to the last row written (for Ray "
        "this includes the actors loading the model); **wall**: the whole command, with the interpreter, "
        "the model check on the driver and, for Ray, starting or joining it.",
        f"- **Method**: {reps} runs of each, interleaved in random order; the median.",
        "",
        "| contender | images/s | vs single machine | wall | ms per image | ms per image over single | fixed cost per run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for contender in contenders:
        per_image = 1000 / contender.rate
        over = per_image - 1000 / single.rate
        # Wall time that does not grow with the files: start-up, joining, and what the
        # single-machine command also pays (so the Ray rows show the extra).
        fixed = contender.wall - count / contender.rate
        lines.append(
            f"| {contender.name} | **{contender.rate:.1f}** | {contender.rate / single.rate:.2f}x | "
            f"{contender.wall:.1f} s | {per_image:.2f} | {'-' if contender is single else f'{over:+.2f}'} | {fixed:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ucmerced")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "ray-results.md")
    args = parser.parse_args()

    count = len(find_images([args.data]))
    cores = os.cpu_count() or 1
    loads = [load_average()]
    with Cluster(nodes=cores, cpus_per_node=1) as cluster:
        contenders = [
            Contender("single machine", [], ray_env()),
            Contender("Ray, local (1 node)", ["--ray"], ray_env()),
            Contender(f"Ray cluster ({cores} nodes)", ["--ray", cluster.address], ray_env(cluster.token)),
        ]
        print(f"{count} files, {cores} cores; cluster at {cluster.address}", flush=True)
        for rep in range(args.reps):
            order = contenders[:]
            random.Random(rep).shuffle(order)
            for contender in order:
                run(contender, args.data, count)
                print(f"  round {rep + 1}: {contender.name}: {contender.rates[-1]:.1f} images/s, "
                      f"{contender.walls[-1]:.1f} s wall", flush=True)
    loads.append(load_average())
    text = markdown(contenders, args.data, count, args.reps, cores, tuple(loads))
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
