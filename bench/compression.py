"""Bytes the front's gzip saves on the page's files, measured through the real server.

    python -m bench.compression          # prints the Markdown table quoted in docs/front.md

Starts the Procfile's server (nginx in front of gunicorn) on loopback, fetches each file the
page loads with and without ``Accept-Encoding: gzip``, and counts the bytes on the wire; then
what a browser downloads the first time *On this device* is used: onnxruntime-web and the
model's browser form with its manifest (docs/page.md#on-this-device).
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testing.servers import procfile_server  # noqa: E402

FILES = [
    "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm",
    "/static/vendor/onnxruntime-web/ort.wasm.bundle.min.mjs",
    *sorted(f"/static/js/{path.name}" for path in (ROOT / "static" / "js").glob("*.js")),
    "/static/app.css",
    "/",
    "/model.onnx.json",
    "/model.onnx",
]
# What the first use of "On this device" downloads, beyond the page itself.
DEVICE_FILES = FILES[:2] + ["/model.onnx.json", "/model.onnx"]


def fetch(url: str, path: str, gzip: bool) -> tuple[int, str, bytes]:
    """(bytes of the body as sent, Content-Encoding, the body)."""
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip else {})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        return len(body), response.getheader("Content-Encoding") or "none", body
    finally:
        connection.close()


def main() -> None:
    rows, form = [], "?"
    with procfile_server() as (url, _):
        for path in FILES:
            plain, _, body = fetch(url, path, gzip=False)
            sent, encoding, _ = fetch(url, path, gzip=True)
            rows.append((path, plain, sent, encoding))
            if path == "/model.onnx.json":
                form = json.loads(body).get("form", "fp32")  # manifests before issue 25 had no form
    page = [row for row in rows if row[0] not in DEVICE_FILES]
    device = [row for row in rows if row[0] in DEVICE_FILES]
    print("| file | bytes | sent with gzip | saved | encoding |")
    print("| --- | ---: | ---: | ---: | --- |")
    for path, plain, sent, encoding in rows:
        print(f"| `{path}` | {plain:,} | {sent:,} | {1 - sent / plain:.0%} | {encoding} |")
    device_title = f"the first use of *On this device*: onnxruntime-web and the model ({form})"
    for title, chosen in (("the page: its HTML, JavaScript and CSS", page), (device_title, device)):
        plain, sent = sum(row[1] for row in chosen), sum(row[2] for row in chosen)
        print(f"| {title} | {plain:,} | {sent:,} | {1 - sent / plain:.0%} | |")


if __name__ == "__main__":
    main()
