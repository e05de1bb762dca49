"""Images per second: the batch command on this machine beside the same command on Ray.

    flock /tmp/cpu-heavy.lock python bench/ray_batch.py          # UC Merced (training/data_set.py), writes bench/ray-results.md
    flock /tmp/cpu-heavy.lock python bench/ray_batch.py --data ../shared/data/eurosat --repeat 1 --reps 1

Three contenders on the same cores, run as a person runs them (``flask --app app predict
FOLDER --output /dev/null``), interleaved in a new random order each round:

- the single-machine command (threads decoding, one forward pass per core);
- ``--ray`` without an address: a local Ray of one node with all the cores;
- ``--ray ADDRESS``: a cluster of one node per core on this machine (``ray start``, as
  testing/ray_cluster.py starts it), so that rows cross between nodes' object stores; with
  the default decoding in the model actors, and with ``--ray-decode tasks``.

Each runs on the folder, and on the folder named three times (``--repeat``). Each run reports its own rate
(``classified N of M files in S s``: from the first file submitted to the last written, so
for Ray with its actors loading the model), and its wall time with start-up (interpreter,
model check, and for Ray joining or starting it). The two sizes split the wall time into a
cost per image and a fixed cost per run; from those, Ray's cost over the single machine and
the number of files from which N machines on Ray end first (docs/scaling.md).
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
from testing.ray_cluster import Cluster, ray_env  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402

# Each node's object store: the test's 200 MB makes Ray spill blocks to disk on a run this size.
OBJECT_STORE_BYTES = 1_000_000_000
SUMMARY = re.compile(r"classified (\d+) of (\d+) files in ([\d.]+)s \(([\d.]+) images/s\)")


@dataclass
class Contender:
    name: str
    args: list[str]
    env: dict
    rates: dict = field(default_factory=dict)  # size ("small", "all") -> images/s of each run
    walls: dict = field(default_factory=dict)  # size -> wall seconds of each run

    def rate(self, size: str) -> float:
        return statistics.median(self.rates[size])

    def wall(self, size: str) -> float:
        return statistics.median(self.walls[size])


@dataclass(frozen=True)
class Cost:
    """Wall time as fixed + per_image × files, from the long runs.

    per_image: from the best long run's own rate (the one least slowed by other work on a
    shared machine; for Ray it still includes the actors loading the model, so it is an
    upper bound). fixed: what that run's wall time adds to it (interpreter, model check on
    the driver, starting or joining Ray). A fit between the two sizes was tried and drowned
    in the noise of a shared machine.
    """

    per_image: float
    fixed: float

    @classmethod
    def of(cls, contender: Contender, counts: dict) -> "Cost":
        best = max(range(len(contender.rates["all"])), key=lambda run: contender.rates["all"][run])
        per_image = 1 / contender.rates["all"][best]
        return cls(per_image, contender.walls["all"][best] - counts["all"] * per_image)


def run(contender: Contender, size: str, paths: list[Path], count: int) -> None:
    command = [sys.executable, "-m", "flask", "--app", "app", "predict", *map(str, paths), "--output", os.devnull,
               *contender.args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=contender.env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    match = SUMMARY.search(done.stderr)
    if done.returncode != 0 or not match or int(match.group(1)) != count:
        raise RuntimeError(f"{contender.name} failed ({done.returncode}): {done.stderr[-1500:]}")
    contender.rates.setdefault(size, []).append(float(match.group(4)))
    contender.walls.setdefault(size, []).append(wall)


def break_even(single: Cost, ray: Cost, machines: int) -> str:
    """Files from which Ray on ``machines`` machines like this one ends before one machine does.

    Assumes Ray's time per image divides by the machines (each node decodes and runs the
    model on its own; the driver only writes rows) and its fixed cost stays.
    """
    saved_per_image = single.per_image - ray.per_image / machines
    if saved_per_image <= 0:
        return "never"
    return f"{max(0.0, (ray.fixed - single.fixed) / saved_per_image):,.0f}"


def markdown(contenders: list[Contender], data: Path, counts: dict, repeat: int, reps: int, cores: int,
             loads: tuple[str, str]) -> str:
    single, cluster = contenders[0], contenders[-1]
    costs = {contender.name: Cost.of(contender, counts) for contender in contenders}
    lines = [
        "# The batch command on Ray: images per second",
        "",
        "*Written by `flock /tmp/cpu-heavy.lock python bench/ray_batch.py`; run it again to refresh.*",
        "",
        f"- **Files**: the {counts['small']} images under `{data.name}/`, and the folder named {repeat} times "
        f"({counts['all']} files, each classified {repeat} times, read from the page cache); model `model.zip`, "
        "served by ONNX Runtime on its verified copy (`INFERENCE_ENGINE=auto`), one thread per forward pass, "
        "`--batch-size 1`.",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {loads[0]} before, {loads[1]} "
        "after (a shared machine: other work ran beside it).",
        f"- **Same cores for all**: {cores}. The single-machine command runs {cores} forward passes side by "
        f"side; `--ray` alone starts a local Ray of one node with {cores} CPUs; the cluster is {cores} "
        f"nodes of 1 CPU each on this machine (`ray start --head`, then nodes joining it, "
        f"{OBJECT_STORE_BYTES / 1e9:g} GB of object store each), up before the runs. Ray runs one model "
        "actor per CPU, which decodes its files too (the default), or with `--ray-decode tasks` half a CPU "
        "per actor and decode tasks of their own in the other half.",
        f"- **images/s**: the command's own figure on all {counts['all']} files, from the first file to the "
        "last row written (for Ray, with its actors loading the model); **wall**: the whole command (the "
        "interpreter, the model check on the driver, starting or joining Ray).",
        f"- **best images/s**, **ms per image** and **fixed**: from the fastest of the {counts['all']}-file runs "
        "(the least slowed by other work): 1000 / its images/s, and what its wall time adds to that.",
        f"- **Method**: {reps} runs of each, interleaved in random order; the median (of {reps}: the mean).",
        "",
        f"| contender | images/s | best | vs single machine (best) | wall, {counts['small']} files "
        f"| wall, {counts['all']} files | ms per image | fixed per run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for contender in contenders:
        cost = costs[contender.name]
        lines.append(
            f"| {contender.name} | **{contender.rate('all'):.1f}** | {max(contender.rates['all']):.1f} "
            f"| {max(contender.rates['all']) / max(single.rates['all']):.2f}x | {contender.wall('small'):.1f} s | {contender.wall('all'):.1f} s | {1000 * cost.per_image:.2f} "
            f"| {cost.fixed:.1f} s |"
        )
    single_cost, cluster_cost = costs[single.name], costs[cluster.name]
    lines += [
        "",
        f"Ray's cost over the single-machine command, on the same cores: "
        f"{1000 * (cluster_cost.per_image - single_cost.per_image):+.2f} ms per image and "
        f"{cluster_cost.fixed - single_cost.fixed:+.1f} s per run (the {cluster.name} row).",
        "",
        "From how many files a Ray cluster of N machines like this one ends sooner than the command on one "
        "(from the figures above, assuming Ray's time per image divides by N and its fixed cost stays):",
        "",
        "| machines | 1 | 2 | 4 | 8 | 16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| files | " + " | ".join(break_even(single_cost, cluster_cost, n) for n in (1, 2, 4, 8, 16)) + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(parser)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="times the long runs name the folder")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "ray-results.md")
    args = parser.parse_args()

    args.data = data_set_or_exit(parser, args.data)
    # The folder once, and named --repeat times (each file classified that many times, read
    # from the page cache): long enough that the cost per image is not lost in the noise.
    sizes = {"small": [args.data], "all": [args.data] * args.repeat}
    counts = {size: len(find_images(paths)) for size, paths in sizes.items()}
    cores = os.cpu_count() or 1
    loads = [load_average()]
    with Cluster(nodes=cores, cpus_per_node=1, object_store_bytes=OBJECT_STORE_BYTES) as cluster:
        contenders = [
            Contender("single machine", [], ray_env()),
            Contender("Ray, local (1 node)", ["--ray"], ray_env()),
            Contender(f"Ray cluster ({cores} nodes), `--ray-decode tasks`", ["--ray-decode", "tasks", "--ray", cluster.address],
                      ray_env(cluster.token)),
            Contender(f"Ray cluster ({cores} nodes)", ["--ray", cluster.address], ray_env(cluster.token)),
        ]
        print(f"{counts} files, {cores} cores; cluster at {cluster.address}", flush=True)
        jobs = [(contender, size) for contender in contenders for size in sizes]
        for rep in range(args.reps):
            random.Random(rep).shuffle(jobs)
            for contender, size in jobs:
                run(contender, size, sizes[size], counts[size])
                print(f"  round {rep + 1}: {contender.name}, {counts[size]} files: {contender.rates[size][-1]:.1f} "
                      f"images/s, {contender.walls[size][-1]:.1f} s wall", flush=True)
    loads.append(load_average())
    text = markdown(contenders, args.data, counts, args.repeat, args.reps, cores, tuple(loads))
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
