"""What a candidate model costs: the Procfile server without one, with one shadowing, and with a canary.

    flock /tmp/cpu.lock python -m bench.rollout              # several minutes; writes bench/rollout-results.md
    python -m bench.rollout --rounds 2 --output /tmp/r.md    # a quick run

Every contender is the Procfile's server (nginx, gunicorn, 2 workers, as deployed, default
engine) serving the shipped ``model.zip`` on loopback; the candidate is the same network
exported again under another version, with its own ONNX copy, as a retrained model would come
(``make_candidate``). All are started at once and left idle while another is measured: no
candidate, shadow on CANDIDATE_SHARE 0.1 (the default) and 1 (every request), and a canary on
0.1. Each round sends ``--requests`` data-set JPEGs (``POST /predict``, multipart, a new
connection each) at concurrency 1 and at ``--concurrency`` to each contender in a new random
order; the ratio of a contender's requests/s to the server without a candidate is taken within
each round (the same background load on both). Then ``--batches`` 16-image ``POST
/predict/batch`` at concurrency 2 (both workers in a batch at once, the memory's worst case;
a shadow then classifies 16 images after each answer). The whole server's memory (every
process: the front, nginx, gunicorn's master and workers) is sampled every 0.2 s throughout:
its peak RSS and PSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import MemorySampler  # noqa: E402
from testing.load import Load, post_round, send  # noqa: E402
from testing.multipart import form_body  # noqa: E402
from testing.samples import dataset_jpegs  # noqa: E402
from testing.servers import procfile_server  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402

# Settings of ours that the caller's shell might hold; the benchmark serves the defaults.
_OUR_SETTINGS = ("WEB_CONCURRENCY", "TORCH_THREADS", "MODEL_PATH", "INFERENCE_ENGINE", "ONNX_MODEL_PATH",
                 "DATABASE_URL", "RECORD_PREDICTIONS", "KEEP_IMAGES", "CANDIDATE_MODEL_PATH",
                 "CANDIDATE_MODE", "CANDIDATE_SHARE")
DYNO_MB = 512


@dataclass
class Contender:
    name: str
    env: dict
    throughputs: dict = field(default_factory=lambda: defaultdict(list))  # by concurrency
    latencies_ms: dict = field(default_factory=lambda: defaultdict(list))
    memory: MemorySampler | None = None


def make_candidate(folder: Path) -> Path:
    """The shipped model under another version, with its ONNX copy beside it (candidate.onnx)."""
    import torch

    from classifier.model import read_meta
    from training.onnx_variants import export_onnx

    meta = read_meta(ROOT / "model.zip")
    meta["version"] = f"{meta.get('version', '0')}-candidate"
    path = folder / "candidate.zip"
    module = torch.jit.load(str(ROOT / "model.zip"))
    torch.jit.save(module, str(path), _extra_files={"meta.json": json.dumps(meta)})
    export_onnx(path, folder / "candidate.onnx")
    return path


def post_batches(url: str, body: tuple[bytes, str], count: int) -> None:
    """``count`` POST /predict/batch at concurrency 2; RuntimeError unless every one is answered."""
    load = Load(lambda _thread, _index: ("batch", *send(url, "POST", "/predict/batch", body[0],
                                                        {"Content-Type": body[1]})), threads=2, total=count)
    with load:
        load.wait()
    if any(outcome.status != 200 for outcome in load.outcomes):
        raise RuntimeError(f"a batch failed: {[o.status or o.error for o in load.outcomes]}")


def markdown(contenders: list[Contender], args, load_before: str, load_after: str) -> str:
    off = contenders[0]
    lines = [
        "# What a candidate model costs",
        "",
        "*Written by `flock /tmp/cpu.lock python -m bench.rollout"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; run it again to refresh.*",
        "",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after (a shared machine)",
        "- **Server**: the Procfile's (nginx, gunicorn, 2 workers), default engine (ONNX Runtime on "
        "`model.onnx`), the shipped `model.zip`; the candidate is the same network exported again under "
        "another version, with its own ONNX copy; every contender started at the same time, idle while "
        "another runs.",
        f"- **Load**: {args.requests} data-set JPEGs (256×256, 64 distinct) per round and concurrency, "
        f"`POST /predict` multipart, in a closed loop; {args.rounds} rounds, each contender once per round "
        f"in a new random order; then {args.batches} `POST /predict/batch` of 16 JPEGs at concurrency 2.",
        "- **Ratio**: in each round, the contender's requests/s ÷ the server without a candidate's in that "
        "round; the median over the rounds. Latency: as the client sees it, every request of every round.",
        f"- **Memory**: the whole server (every process of the Procfile's tree), sampled every 0.2 s over "
        f"the whole run; the target is the {DYNO_MB} MB dyno.",
        "",
        "| contender | requests/s, c=1 | ratio | p50 / p95, c=1 | requests/s, c=4 | ratio | p50 / p95, c=4 "
        "| peak RSS | peak PSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for contender in contenders:
        cells = []
        for clients in (1, args.concurrency):
            throughputs = contender.throughputs[clients]
            ratios = [mine / theirs for mine, theirs in zip(throughputs, off.throughputs[clients])]
            p50, p95 = np.percentile(contender.latencies_ms[clients], [50, 95])
            cells += [f"{statistics.median(throughputs):.1f}", f"**{statistics.median(ratios):.3f}**",
                      f"{p50:.1f} / {p95:.1f} ms"]
        memory = contender.memory
        cells += [f"{memory.peak_rss / 2**20:.0f} MB", f"{memory.peak_pss / 2**20:.0f} MB"]
        lines.append(f"| {contender.name} | " + " | ".join(cells) + " |")
    lines += ["", "Requests/s of every round, in the order run (c=1; c=4):", ""]
    for contender in contenders:
        rounds = [", ".join(f"{value:.1f}" for value in contender.throughputs[clients])
                  for clients in (1, args.concurrency)]
        lines.append(f"- {contender.name}: " + "; ".join(rounds))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "rollout-results.md")
    add_data_option(parser)
    args = parser.parse_args()

    files = dataset_jpegs(data_set_or_exit(parser, args.data), per_class=4)
    bodies = [form_body([("upload", path.read_bytes())]) for path in files]  # read before timing
    batch = form_body([(path.name, path.read_bytes()) for path in files[:16]])
    for name in _OUR_SETTINGS:
        os.environ.pop(name, None)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as scratch, ExitStack() as stack:
        candidate = str(make_candidate(Path(scratch)))
        contenders = [
            Contender("no candidate", {}),
            Contender("shadow, share 0.1", {"CANDIDATE_MODEL_PATH": candidate}),
            Contender("shadow, share 1", {"CANDIDATE_MODEL_PATH": candidate, "CANDIDATE_SHARE": "1"}),
            Contender("canary, share 0.1", {"CANDIDATE_MODEL_PATH": candidate, "CANDIDATE_MODE": "canary"}),
        ]
        urls = {}
        for contender in contenders:
            env = {**contender.env, "DATABASE_URL": f"sqlite:///{scratch}/{len(urls)}.db"}
            log = Path(scratch) / f"{len(urls)}.log"
            urls[contender.name], server = stack.enter_context(procfile_server(env=env, log_path=log))
            contender.memory = stack.enter_context(MemorySampler(server.process.pid))
            post_round(urls[contender.name], bodies, 16, 2)  # warm-up: every worker's first requests
        print(f"[rollout] {len(contenders)} servers up; {args.rounds} rounds", flush=True)
        order = list(contenders)
        for round_ in range(args.rounds):
            random.Random(round_).shuffle(order)
            for contender in order:
                for clients in (1, args.concurrency):
                    throughput, latencies = post_round(urls[contender.name], bodies, args.requests, clients)
                    contender.throughputs[clients].append(throughput)
                    contender.latencies_ms[clients] += latencies
                throughput = contender.throughputs[args.concurrency][-1]
                print(f"  round {round_ + 1}: {contender.name}: {throughput:.1f} requests/s", flush=True)
        for contender in contenders:
            post_batches(urls[contender.name], batch, args.batches)
    text = markdown(contenders, args, load_before, load_average())
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
