"""What the Open Inference Protocol costs beside /predict: the same images, the same server.

    flock /tmp/cpu.lock python -m bench.inference_protocol   # minutes; bench/inference-protocol-results.md
    python -m bench.inference_protocol --rounds 1 --requests 8 --output /tmp/oip.md   # a quick run

One Procfile server (nginx, gunicorn, 2 workers, as deployed, default engine) serves the
shipped ``model.zip`` on loopback. Each round sends ``--requests`` data-set JPEGs, one per
request on a new connection, by each contender in a new random order, at concurrency 1 and
``--concurrency``: ``POST /predict`` with the raw bytes, ``POST /predict`` multipart (as the
page and curl -F send), and ``POST /v2/models/{name}/infer`` with the image as a BYTES tensor,
binary (the binary tensor data extension, as tritonclient sends it) and base64 in JSON. The
ratio of a contender's requests/s to raw ``/predict``'s is taken within each round.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import struct
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testing.load import send, timed_posts  # noqa: E402
from testing.multipart import form_body  # noqa: E402
from testing.samples import dataset_jpegs  # noqa: E402
from testing.servers import procfile_server  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402

_OUR_SETTINGS = ("WEB_CONCURRENCY", "TORCH_THREADS", "MODEL_PATH", "INFERENCE_ENGINE", "ONNX_MODEL_PATH",
                 "DATABASE_URL", "RECORD_PREDICTIONS", "KEEP_IMAGES", "CANDIDATE_MODEL_PATH", "API_KEY")
BASELINE = "/predict, raw bytes"


def contenders(model: str, images: list[bytes]) -> dict[str, list[tuple[str, bytes, dict]]]:
    """Each contender's requests, (path, body, headers), one per image, made before timing."""
    infer = f"/v2/models/{model}/infer"
    requests = defaultdict(list)
    for image in images:
        requests[BASELINE].append(("/predict", image, {"Content-Type": "image/jpeg"}))
        form, form_type = form_body([("upload", image)])
        requests["/predict, multipart"].append(("/predict", form, {"Content-Type": form_type}))
        tensor = struct.pack("<I", len(image)) + image
        best_five = {"name": "probabilities", "parameters": {"classification": 5}}
        head = json.dumps({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(tensor)}}],
                           "outputs": [best_five], "parameters": {"binary_data_output": True}}).encode()
        binary_header = {"Inference-Header-Content-Length": str(len(head))}
        requests["OIP infer, binary"].append((infer, head + tensor, binary_header))
        body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                            "data": [base64.b64encode(image).decode()]}], "outputs": [best_five]}
        json_type = {"Content-Type": "application/json"}
        requests["OIP infer, JSON"].append((infer, json.dumps(body).encode(), json_type))
    return requests


def markdown(throughputs, latencies, args, load_before: str, load_after: str) -> str:
    levels = (1, args.concurrency)
    lines = [
        "# The Open Inference Protocol beside /predict",
        "",
        "*Written by `flock /tmp/cpu.lock python -m bench.inference_protocol"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; run it again to refresh.*",
        "",
        f"- **Machine**: {machine_description()}; load average (1/5/15 min) {load_before} before, "
        f"{load_after} after (a shared machine)",
        "- **Server**: the Procfile's (nginx, gunicorn, 2 workers), default engine, the shipped `model.zip`.",
        f"- **Load**: {args.requests} data-set JPEGs (256×256) per round, contender and concurrency, "
        "one per "
        f"request, in a closed loop; {args.rounds} rounds, the contenders in a new random order each. "
        "The OIP requests ask for the 5 best classes (the classification extension), as /predict answers.",
        f"- **Ratio**: in each round, the contender's requests/s ÷ {BASELINE}'s in that round; the median "
        "over the rounds. Latency: as the client sees it, every request of every round.",
        "",
        "| contender | " + " | ".join(f"requests/s, c={c} | ratio | p50 / p95, c={c}" for c in levels) + " |",
        "| --- |" + " ---: | ---: | ---: |" * len(levels),
    ]
    for name in throughputs:
        cells = []
        for clients in levels:
            mine, base = throughputs[name][clients], throughputs[BASELINE][clients]
            p50, p95 = np.percentile(latencies[name][clients], [50, 95])
            ratio = statistics.median(a / b for a, b in zip(mine, base))
            cells += [f"{statistics.median(mine):.1f}", f"**{ratio:.3f}**", f"{p50:.1f} / {p95:.1f} ms"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--model", type=Path, default=ROOT / "model.zip")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "inference-protocol-results.md")
    add_data_option(parser)
    args = parser.parse_args()

    images = [path.read_bytes() for path in dataset_jpegs(data_set_or_exit(parser, args.data), per_class=4)]
    for name in _OUR_SETTINGS:
        os.environ.pop(name, None)
    load_before = load_average()
    throughputs, latencies = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="bench-oip-") as scratch:
        env = {"MODEL_PATH": str(args.model.resolve()), "DATABASE_URL": f"sqlite:///{scratch}/records.db"}
        with procfile_server(env=env, log_path=Path(scratch) / "server.log") as (url, _server):
            model = send(url, "GET", "/health")[1]["model"]
            requests = contenders(model, images)
            for name in requests:  # warm-up: every worker's first requests of each kind
                timed_posts(url, requests[name], 8, 2)
            order = list(requests)
            for round_ in range(args.rounds):
                random.Random(round_).shuffle(order)
                for name in order:
                    for clients in (1, args.concurrency):
                        throughput, times = timed_posts(url, requests[name], args.requests, clients)
                        throughputs[name][clients].append(throughput)
                        latencies[name][clients] += times
                print(f"[oip] round {round_ + 1} of {args.rounds}", flush=True)
    ordered = {name: throughputs[name] for name in requests}
    text = markdown(ordered, latencies, args, load_before, load_average())
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
