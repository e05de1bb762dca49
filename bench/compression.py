"""Bytes the front's gzip saves on the page's files, measured through the real server.

    python -m bench.compression          # prints the Markdown table quoted in docs/front.md

Starts the Procfile's server (nginx in front of gunicorn) on loopback, fetches each file the
page loads with and without ``Accept-Encoding: gzip``, and counts the bytes on the wire.
"""

from __future__ import annotations

import http.client
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
    "/model.onnx",
]


def fetch(url: str, path: str, gzip: bool) -> tuple[int, str]:
    """(bytes of the body as sent, Content-Encoding)."""
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip else {})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        return len(body), response.getheader("Content-Encoding") or "none"
    finally:
        connection.close()


def main() -> None:
    rows, total_plain, total_sent = [], 0, 0
    with procfile_server() as (url, _):
        for path in FILES:
            plain, _ = fetch(url, path, gzip=False)
            sent, encoding = fetch(url, path, gzip=True)
            rows.append((path, plain, sent, encoding))
            if path != "/model.onnx":
                total_plain, total_sent = total_plain + plain, total_sent + sent
    print("| file | bytes | sent with gzip | saved | encoding |")
    print("| --- | ---: | ---: | ---: | --- |")
    for path, plain, sent, encoding in rows:
        print(f"| `{path}` | {plain:,} | {sent:,} | {1 - sent / plain:.0%} | {encoding} |")
    print(f"| the page's files together (all but the model) | {total_plain:,} | {total_sent:,} | "
          f"{1 - total_sent / total_plain:.0%} | |")


if __name__ == "__main__":
    main()
