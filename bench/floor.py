"""The floor: decode + preprocess + forward in this process, no HTTP, one image at a time.

Run as ``python -m bench.floor --threads T ...`` in a fresh process per thread count, so
that the engine's thread pool is sized once, as in a server worker. It calls the same pipeline
as our service (``Classifier.classify``: bytes in, top-k prediction out), on the engine the
service picks by default (``--engine auto``: ONNX Runtime on the model's verified ONNX copy)
or on the one named.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from classifier.images import INPUT_SIZE
from classifier.pipeline import Classifier

from .load import summarise


def measure(classifier: Classifier, payloads: list[bytes], count: int, warmup: int = 10):
    for index in range(warmup):
        classifier.classify(payloads[index % len(payloads)])
    latencies = []
    started = time.perf_counter()
    for index in range(count):
        begin = time.perf_counter()
        classifier.classify(payloads[index % len(payloads)])
        latencies.append((time.perf_counter() - begin) * 1000)
    return summarise(latencies, count, errors=0, wall_s=time.perf_counter() - started)


def forward_ms_per_image(classifier: Classifier, batch_sizes, repeats: int = 20) -> dict[int, float]:
    """The forward pass alone, per image, by batch size: what micro-batching could gain."""
    sample = np.random.default_rng(0).random((max(batch_sizes), 3, *INPUT_SIZE), dtype=np.float32)
    result = {}
    for size in batch_sizes:
        for _ in range(3):
            classifier.engine(sample[:size])
        started = time.perf_counter()
        for _ in range(repeats):
            classifier.engine(sample[:size])
        result[size] = (time.perf_counter() - started) * 1000 / (repeats * size)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model.zip")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--engine", default="auto", choices=["auto", "onnxruntime", "torchscript"])
    parser.add_argument("--workload", nargs=3, action="append", required=True,
                        metavar=("NAME", "PAYLOAD_LIST", "COUNT"), help="repeat for each workload")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="also time the forward pass alone at these batch sizes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    onnx_copy = Path(args.model).with_suffix(".onnx")  # where `make variants` puts it
    classifier = Classifier.setup(args.model, threads=args.threads, engine=args.engine, onnx_path=onnx_copy)
    results = {"engine": classifier.engine.name}
    for name, payload_list, count in args.workload:
        files = [Path(line) for line in Path(payload_list).read_text().split("\n") if line]
        payloads = [file.read_bytes() for file in files]
        results[name] = measure(classifier, payloads, int(count)).to_json()
    if args.batch_sizes:
        results["forward_ms_per_image_by_batch"] = forward_ms_per_image(classifier, args.batch_sizes)
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
