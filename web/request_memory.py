"""After a large request, give the memory it used back to the system.

A phone photo or a 16-image batch leaves freed heap in the worker, which glibc keeps for
reuse; summed over the workers, that decides which dyno the server fits (docs/memory.md has
the figures). Trimming makes the next request fault its buffers back in, so it runs only
after requests that leave enough behind, once the response has been sent (the response's
close, which gunicorn calls after the last byte) and the request's buffers are garbage.
"""

from __future__ import annotations

from flask import Flask, Response, request

from classifier import memory

# Bodies at least this large leave enough behind to be worth a trim: the data set's small
# JPEGs are far below it, a phone's photo above it (docs/memory.md, "How it works").
LARGE_BODY_BYTES = 256 * 1024
BATCH_PATH = "/predict/batch"


def init_app(app: Flask) -> None:
    @app.after_request
    def trim_after_large_requests(response: Response) -> Response:
        if (request.content_length or 0) >= LARGE_BODY_BYTES or request.path == BATCH_PATH:
            response.call_on_close(memory.trim_heap)
        return response
