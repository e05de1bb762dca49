"""What recording every prediction costs: the Procfile server with recording off and on, side by side.

    python -m bench.recording                      # writes bench/recording-results.md
    python -m bench.recording --rounds 2 --requests 64 --output /tmp/r.md   # a quick run

Every contender is the Procfile's gunicorn (2 workers, as deployed, default engine) on
loopback, all started at once and left idle while another is measured: recording off
(``RECORD_PREDICTIONS=0``), on with the default SQLite file, on with PostgreSQL (a real
server on a unix socket, fsync on, started for the run by testing/postgres.py), and SQLite with
``KEEP_IMAGES=1``. Each round sends ``--requests`` data-set JPEGs (``POST /predict``,
multipart, a new connection each) at ``--concurrency`` clients to each contender in a new
random order, so that whatever else the shared machine does falls on all of them. Short
rounds keep the four measurements of a round close in time: the ratio of a contender to
recording off is taken within each round (the same background load on both), and the report
gives the median of those paired ratios beside each contender's median requests/s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testing.load import post_round  # noqa: E402
from testing.multipart import form_body  # noqa: E402
from testing.samples import dataset_jpegs  # noqa: E402
from testing.postgres import PostgresServer  # noqa: E402
from testing.servers import procfile_server  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402


# Settings of ours that the caller's shell might hold; the benchmark serves the defaults.
_OUR_SETTINGS = ("WEB_CONCURRENCY", "TORCH_THREADS", "MODEL_PATH", "INFERENCE_ENGINE", "DATABASE_URL",
                 "RECORD_PREDICTIONS", "KEEP_IMAGES")


@dataclass
class Contender:
    name: str
    env: dict
    throughputs: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def markdown(contenders: list[Contender], args, load_before: str, load_after: str) -> str:
    off = contenders[0]
    lines = [
        "# What recording predictions costs",
        "",
        "*Written by `flock /tmp/cpu-heavy.lock python -m bench.recording"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; run it again to refresh.*",
        "",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after (a shared machine)",
        "- **Server**: the Procfile's gunicorn on loopback, 2 workers, default engine (ONNX Runtime on "
        "`model.onnx`), `model.zip`; every contender started at the same time, idle while another runs.",
        f"- **Load**: {args.requests} data-set JPEGs (256×256, 64 distinct) per round, `POST /predict` "
        f"multipart, {args.concurrency} clients in a closed loop; {args.rounds} rounds, each contender "
        "once per round in a new random order. Median over the rounds; the ratio is to recording off.",
        "- **Target** (issue 16): recording on within 5% of off at concurrency 4.",
        "- **Ratio to off**: in each round, the contender's requests/s ÷ recording off's in that round; "
        "the median over the rounds, and the middle half of them (25th–75th percentile).",
        "",
        "| contender | requests/s (median) | range | ratio to off (median) | middle half | p50 latency | p95 latency |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for contender in contenders:
        median = statistics.median(contender.throughputs)
        p50, p95 = np.percentile(contender.latencies_ms, [50, 95])
        ratios = [mine / theirs for mine, theirs in zip(contender.throughputs, off.throughputs)]
        low, high = np.percentile(ratios, [25, 75])
        lines.append(
            f"| {contender.name} | {median:.1f} | {min(contender.throughputs):.1f}–{max(contender.throughputs):.1f} "
            f"| **{statistics.median(ratios):.3f}** | {low:.3f}–{high:.3f} | {p50:.1f} ms | {p95:.1f} ms |"
        )
    lines += ["", "Requests/s of every round, in the order run:", ""]
    for contender in contenders:
        lines.append(f"- {contender.name}: " + ", ".join(f"{value:.1f}" for value in contender.throughputs))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "recording-results.md")
    add_data_option(parser)
    args = parser.parse_args()

    files = dataset_jpegs(data_set_or_exit(parser, args.data), per_class=4)
    bodies = [form_body([("upload", path.read_bytes())]) for path in files]  # read before timing
    for name in _OUR_SETTINGS:
        os.environ.pop(name, None)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as scratch, ExitStack() as stack:
        postgres = PostgresServer(durable=True)
        stack.callback(postgres.close)
        postgres.start()
        contenders = [
            Contender("recording off", {"RECORD_PREDICTIONS": "0"}),
            Contender("SQLite", {"DATABASE_URL": f"sqlite:///{scratch}/sqlite.db"}),
            Contender("PostgreSQL", {"DATABASE_URL": postgres.new_database()}),
            Contender("SQLite + KEEP_IMAGES", {"DATABASE_URL": f"sqlite:///{scratch}/images.db", "KEEP_IMAGES": "1"}),
        ]
        urls = {}
        for contender in contenders:
            log = Path(scratch) / f"{contender.name.replace(' ', '_')}.log"
            urls[contender.name] = stack.enter_context(procfile_server(env=contender.env, log_path=log))[0]
            post_round(urls[contender.name], bodies, 16, 2)  # warm-up: every worker's first requests
        print(f"[recording] {len(contenders)} servers up; {args.rounds} rounds of {args.requests} requests "
              f"at concurrency {args.concurrency}", flush=True)
        order = list(contenders)
        for round_ in range(args.rounds):
            random.Random(round_).shuffle(order)
            for contender in order:
                throughput, latencies = post_round(urls[contender.name], bodies, args.requests, args.concurrency)
                contender.throughputs.append(throughput)
                contender.latencies_ms += latencies
                print(f"  round {round_ + 1}: {contender.name}: {throughput:.1f} requests/s", flush=True)
    text = markdown(contenders, args, load_before, load_average())
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
