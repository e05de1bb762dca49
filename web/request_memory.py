"""gunicorn hook: after a large request, give the memory it used back to the system.

A phone photo or a 16-image batch leaves freed heap in the worker, which glibc keeps for
reuse; summed over the workers, that decides which dyno the server fits (docs/memory.md has
the figures). Trimming makes the next request fault its buffers back in, so it runs only
after requests that leave enough behind, once the response has been sent and the request's
buffers are garbage. Standard library only: the
master imports this module with gunicorn.conf.py.
"""

from __future__ import annotations

from classifier import memory

# Bodies at least this large leave enough behind to be worth a trim: the data set's small
# JPEGs are far below it, a phone's photo above it (docs/memory.md, "How it works").
LARGE_BODY_BYTES = 256 * 1024
BATCH_PATH = "/predict/batch"


def post_request(worker, req, environ, resp) -> None:
    """gunicorn's post_request hook, named in gunicorn.conf.py."""
    try:
        body = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        body = 0
    if body >= LARGE_BODY_BYTES or environ.get("PATH_INFO") == BATCH_PATH:
        memory.trim_heap()
