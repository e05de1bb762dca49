"""LitServe serving the same model file with our preprocessing, for the benchmark.

Run as ``python -m bench.litserve_app --port P --model model.zip``. The LitAPI reuses
``classifier.images`` (safe decode with JPEG draft, 224×224 resize, [0, 1] tensor) and
``Classifier.setup`` (load, check, warm up, as a worker does), so it does the same work per
request as our service and only the serving stack differs. Its settings are the ones that
did best for it here (see bench/README.md): one inference worker per core with one torch
thread each, ZeroMQ queues (``fast_queue``), and one uvicorn API server process.
"""

from __future__ import annotations

import argparse
import os

import litserve as ls

from classifier.images import decode_image
from classifier.pipeline import Classifier


class ClassifierAPI(ls.LitAPI):
    """decode (multipart field ``file``) → preprocess → forward → {"label", "score"}."""

    def __init__(self, model_path: str, threads: int, **kwargs):
        super().__init__(**kwargs)
        self.model_path = model_path
        self.threads = threads

    def setup(self, device):
        # TorchScript: the engine LitServe's own examples and the reference app run.
        self.classifier = Classifier.setup(self.model_path, threads=self.threads, engine="torchscript")

    def decode_request(self, request):
        upload = request["file"]
        return decode_image(upload.file.read())

    def predict(self, images):
        # One image, or a list of them when LitServe batches (--max-batch-size > 1).
        batch = images if isinstance(images, list) else [images]
        probabilities = self.classifier.predict(batch)
        return list(probabilities) if isinstance(images, list) else probabilities[0]

    def encode_response(self, probabilities):
        index = int(probabilities.argmax())
        return {"label": self.classifier.labels[index], "score": round(float(probabilities[index]), 6)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="model.zip")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--api-servers", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.0)
    parser.add_argument("--no-fast-queue", dest="fast_queue", action="store_false")
    args = parser.parse_args(argv)
    api = ClassifierAPI(
        args.model,
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=args.workers,
        fast_queue=args.fast_queue,
        timeout=120,
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=args.api_servers,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
