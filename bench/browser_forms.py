"""The model's ONNX forms in onnxruntime-web, in Chromium: speed, and agreement with the served model.

    python -m bench.browser_forms        # after make variants; writes bench/browser-forms.md

The page's own onnxruntime-web (static/vendor/onnxruntime-web, its WebAssembly build, one
thread, as static/js/device.js sets it up) runs each form that ``training.variants`` made
beside model.zip (float32, int8, float16) in headless Chromium (testing/browser.py) on every
validation image, fed as the page feeds it (pixels / 255, float32). Its answers are compared
with the served model's, ONNX Runtime's on the float32 copy in this process, on the same
pixels: top-1 agreement and the largest probability difference. Then the time of one answer:
each round runs every form once on one image, in a new random order; the median of the
rounds is shown, with the time to create the session (download from loopback, compile).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier.engines import OnnxRuntimeEngine, softmax  # noqa: E402
from testing.browser import chromium  # noqa: E402
from training.data import load_images, stratified_split  # noqa: E402
from training.data_set import add_data_option, data_set_or_exit  # noqa: E402
from training.latency import load_average, machine_description  # noqa: E402
from classifier.onnx_copy import file_sha256  # noqa: E402
from training.variants import browser_path, forms_beside  # noqa: E402

ORT_WEB = ROOT / "static" / "vendor" / "onnxruntime-web"
REPORT = ROOT / "bench" / "browser-forms.md"

RUN_IN_PAGE = """async ([files, count, rounds]) => {
  const ort = await import("/ort/ort.wasm.bundle.min.mjs");
  ort.env.wasm.wasmPaths = { wasm: "/ort/ort-wasm-simd-threaded.wasm" };
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  const pixels = new Uint8Array(await (await fetch("/val.bin")).arrayBuffer());
  const size = 3 * 224 * 224;
  const input = (i) => {
    const scaled = Float32Array.from(pixels.subarray(i * size, (i + 1) * size), (v) => v / 255);
    return new ort.Tensor("float32", scaled, [1, 3, 224, 224]);
  };
  const run = async (session, i) => {
    const outputs = await session.run({ [session.inputNames[0]]: input(i) });
    return outputs[session.outputNames[0]].data;
  };
  const sessions = {}, results = {};
  // The first session compiles the WebAssembly: once per visit, whatever the form, so not any form's.
  await ort.InferenceSession.create(`/forms/${files[0]}`, { executionProviders: ["wasm"] });
  for (const file of files) {
    const started = performance.now();
    sessions[file] = await ort.InferenceSession.create(`/forms/${file}`, { executionProviders: ["wasm"] });
    const created = performance.now() - started;
    const logits = [];
    for (let i = 0; i < count; i++) logits.push(Array.from(await run(sessions[file], i)));
    results[file] = { created, logits, times: [] };
  }
  const order = [...files];
  for (let round = 0; round < rounds; round++) {
    order.sort(() => Math.random() - 0.5);
    for (const file of order) {
      const started = performance.now();
      await run(sessions[file], 0);
      results[file].times.push(performance.now() - started);
    }
  }
  return { results, userAgent: navigator.userAgent };
}"""


class _Files(http.server.SimpleHTTPRequestHandler):
    extensions_map = {".mjs": "text/javascript", ".wasm": "application/wasm", ".html": "text/html"}

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def serve(directory: Path):
    """A static file server on a loopback port, in a thread."""
    handler = functools.partial(_Files, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def in_chromium(site: Path, files: list[str], count: int, rounds: int) -> dict:
    with serve(site) as url, chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(0)
        page.goto(f"{url}/index.html")
        return page.evaluate(RUN_IN_PAGE, [files, count, rounds])


def site_with(forms, val_pixels: np.ndarray, directory: Path) -> Path:
    (directory / "index.html").write_text("<!doctype html><title>forms</title>")
    (directory / "ort").symlink_to(ORT_WEB)
    (directory / "forms").mkdir()
    for form in forms:
        (directory / "forms" / form.path.name).symlink_to(form.path.resolve())
    (directory / "val.bin").write_bytes(np.ascontiguousarray(val_pixels).tobytes())
    return directory


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "model.zip"), help="the model file whose forms to run")
    add_data_option(parser)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--images", type=int, default=0, help="validation images to compare on; 0: all")
    args = parser.parse_args(argv)
    data_set = data_set_or_exit(parser, args.data)
    split = stratified_split(data_set, val_fraction=0.2, seed=0)
    files = split.val_files[: args.images or None]
    pixels = load_images(files).numpy()
    forms = [form for form in forms_beside(args.model) if form.path.is_file()]
    served = softmax(OnnxRuntimeEngine(forms[0].path, threads=1)(pixels.astype(np.float32) / 255))
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        site = site_with(forms, pixels, Path(directory))
        measured = in_chromium(site, [form.path.name for form in forms], len(files), args.rounds)
    browsers = browser_path(args.model)
    page_form = file_sha256(browsers) if browsers.is_file() else ""
    rows = []
    for form in forms:
        chosen = file_sha256(form.path) == page_form
        title = f"{form.title}, the page's (`{browsers.name}`)" if chosen else form.title
        result = measured["results"][form.path.name]
        got = softmax(np.asarray(result["logits"], dtype=np.float64))
        rows.append(
            f"| {title} | `{form.path.name}` | {form.path.stat().st_size / 1e6:.1f} MB "
            f"| {np.mean(got.argmax(1) == served.argmax(1)):.2%} | {np.abs(got - served).max():.1e} "
            f"| {np.median(result['times']):.0f} ms | {result['created']:.0f} ms |"
        )
    ort_version = (ORT_WEB / "VERSION").read_text().split()[1]
    text = f"""# The model's forms in the browser

*Written by `python -m bench.browser_forms` ({time.perf_counter() - started:.0f} s); run it again
after `make variants`.*

- **Browser**: {measured["userAgent"]}, headless, onnxruntime-web {ort_version}
  (WebAssembly, 1 thread, as the page runs it).
- **Machine**: {machine_description()}; load average {load_before} before, {load_average()} after
  (a shared machine).
- **Agreement**: on {len(files)} validation images of {data_set.name} (seed 0), each form in Chromium
  against the served model (ONNX Runtime on `model.onnx` in Python) on the same pixels.
- **Speed**: one image per call, median of {args.rounds} rounds that run every form once in a new random
  order; *session*: the time to create one once onnxruntime-web is ready (read the file from
  loopback, optimise the graph), once per visit; the WebAssembly's own compilation comes before it.

| form | file | size | top-1 agreement | max abs Δp | one answer | session |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + "\n"
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
