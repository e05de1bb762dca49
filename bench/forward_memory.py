"""What a lean worker's forward passes cost in memory and time: the figures behind docs/memory.md.

    python -m bench.forward_memory              # prints two Markdown tables

1. Images per forward pass for a 16-image batch (``Classifier.predict`` on as many images at
   a time): the peak RSS over the worker's idle RSS (VmHWM, read from /proc) and the time per
   image. Each size runs in a fresh process, as a worker, on ONNX Runtime with one thread.
2. glibc's mmap threshold (``classifier.engines``) left to glibc, or fixed at 4 or 16 MB
   before or after the ONNX Runtime session is built (the service: 16 MB, after): CPU time
   and page faults per request (decode, resize, forward, top-k), and the RSS they leave.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from testing.samples import DATA_DIR, dataset_jpegs

ROOT = Path(__file__).resolve().parents[1]

PER_FORWARD = """
import json, sys, time
from pathlib import Path
from classifier.images import decode_image, resize_for_model
from classifier.pipeline import Classifier
images_per_pass, files = int(sys.argv[1]), sys.argv[2:]
def status(key):
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(key))
classifier = Classifier.setup("model.zip", threads=1, engine="onnxruntime", onnx_path="model.onnx")
images = [resize_for_model(decode_image(Path(f).read_bytes())) for f in files]
classifier.predict(images[:1])
idle = status("VmRSS")
started = time.perf_counter()
for _ in range(5):
    for start in range(0, len(images), images_per_pass):
        classifier.predict(images[start:start + images_per_pass])
print(json.dumps({"peak_over_idle_mb": status("VmHWM") - idle,
                  "ms_per_image": (time.perf_counter() - started) * 1000 / (5 * len(images))}))
"""

THRESHOLD = """
import json, resource, sys, time
from pathlib import Path
from classifier import engines as memory
from classifier.pipeline import Classifier
when, limit, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def rss():
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))
memory.LARGE_BLOCK_BYTES = limit
fix = memory.return_large_blocks_to_the_system
memory.return_large_blocks_to_the_system = lambda: None  # the engine calls it; here the variant decides when
if when == "before":
    fix()
classifier = Classifier.setup("model.zip", threads=1, engine="onnxruntime", onnx_path="model.onnx")
if when == "after":
    fix()
uploads = [Path(f).read_bytes() for f in files]
for data in uploads:
    classifier.classify(data)
idle, before, started = rss(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(10):
    for data in uploads:
        classifier.classify(data)
after = resource.getrusage(resource.RUSAGE_SELF)
count = 10 * len(uploads)
print(json.dumps({"cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000 / count,
                  "faults": (after.ru_minflt - before.ru_minflt) / count, "held_mb": rss() - idle}))
"""


def run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=600)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR / "ucmerced",
                        help="a folder of class folders of JPEGs; the first of each class is used")
    args = parser.parse_args(argv)
    files = [str(path) for path in dataset_jpegs(args.data, per_class=1)]
    files = (files * 16)[:16]
    print("| images per forward pass | peak RSS over idle | ms per image |")
    print("| ---: | ---: | ---: |")
    for size in (16, 8, 4, 2, 1):
        result = run(PER_FORWARD, str(size), *files)
        print(f"| {size} | +{result['peak_over_idle_mb']:.0f} MB | {result['ms_per_image']:.1f} |")
    print()
    print("| glibc's mmap threshold | fixed | CPU per request | page faults per request | RSS grown over 160 requests |")
    print("| --- | --- | ---: | ---: | ---: |")
    variants = [("glibc's default (dynamic)", "never", 0), ("4 MB", "before", 4 << 20), ("4 MB", "after", 4 << 20),
                ("16 MB", "before", 16 << 20), ("16 MB (the service)", "after", 16 << 20)]
    for limit_text, when, limit in variants:
        result = run(THRESHOLD, when, str(limit), *files)
        fixed = {"never": "–", "before": "before the session is built", "after": "after it"}[when]
        print(f"| {limit_text} | {fixed} | {result['cpu_ms']:.1f} ms | {result['faults']:.0f} | "
              f"+{result['held_mb']:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
