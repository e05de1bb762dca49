"""What a lean worker's forward passes cost in memory and time: the figures behind docs/memory.md.

    python -m bench.forward_memory              # prints two Markdown tables

1. Images per forward pass for a 16-image batch (``Classifier.predict`` on as many images at
   a time): the peak RSS over the worker's idle RSS (VmHWM, read from /proc) and the time per
   image. Each size runs in a fresh process, as a worker, on ONNX Runtime with one thread.
2. glibc's mmap threshold (``classifier.memory``) fixed before the ONNX Runtime session is
   built, after it (what the service does), or left to glibc: forward time at batch 1 and
   RSS after a 16-image batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
import ctypes, json, sys, time
import numpy as np
import onnxruntime
when = sys.argv[1]
def rss():
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))
libc = ctypes.CDLL("libc.so.6")
if when == "before":
    libc.mallopt(-3, 4 * 1024 * 1024)
options = onnxruntime.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
options.enable_cpu_mem_arena = False
session = onnxruntime.InferenceSession("model.onnx", options, providers=["CPUExecutionProvider"])
if when == "after":
    libc.mallopt(-3, 4 * 1024 * 1024)
one = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
for _ in range(10):
    session.run(None, {"pixels": one})
runs = []
for _ in range(5):
    started = time.perf_counter()
    for _ in range(40):
        session.run(None, {"pixels": one})
    runs.append((time.perf_counter() - started) * 1000 / 40)
idle = rss()
session.run(None, {"pixels": np.random.default_rng(0).random((16, 3, 224, 224), dtype=np.float32)})
print(json.dumps({"ms_batch_1": sorted(runs)[2], "held_after_batch_16_mb": rss() - idle}))
"""


def run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=600)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "fixtures" / "data" / "ucmerced",
                        help="a folder of class folders of JPEGs; the first of each class is used")
    args = parser.parse_args(argv)
    files = [str(sorted(folder.glob("*.jpg"))[0]) for folder in sorted(args.data.iterdir()) if folder.is_dir()]
    files = (files * 16)[:16]
    print("| images per forward pass | peak RSS over idle | ms per image |")
    print("| ---: | ---: | ---: |")
    for size in (16, 8, 4, 2, 1):
        result = run(PER_FORWARD, str(size), *files)
        print(f"| {size} | +{result['peak_over_idle_mb']:.0f} MB | {result['ms_per_image']:.1f} |")
    print()
    print("| mmap threshold fixed | forward, batch 1 | RSS held after a 16-image batch |")
    print("| --- | ---: | ---: |")
    for when in ("never (glibc's default)", "before the session is built", "after (the service)"):
        result = run(THRESHOLD, when.split()[0])
        print(f"| {when} | {result['ms_batch_1']:.1f} ms | +{result['held_after_batch_16_mb']:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
