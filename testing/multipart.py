"""The one multipart/form-data builder: files in parts named ``file``, as ``curl -F`` sends them."""

from __future__ import annotations

import mimetypes
import urllib.error
import urllib.request
import uuid
from typing import Sequence


def form_body(files: Sequence[tuple[str, bytes]]) -> tuple[bytes, str]:
    """One part named ``file`` per (file name, bytes), as ``curl -F file=@a.jpg -F file=@b.jpg``.

    Returns (body, Content-Type). Each body gets a fresh random boundary, as curl, browsers
    and ``requests`` do: a server that cached something per boundary would otherwise look
    faster than it is with real clients.
    """
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {mimetypes.guess_type(filename)[0] or 'application/octet-stream'}\r\n\r\n"
        ).encode() + data + b"\r\n"
        for filename, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_files(url: str, files: Sequence[tuple[str, bytes]], timeout: float = 30) -> tuple[int, bytes]:
    """POST ``form_body(files)`` with the standard library; (status, body), errors included."""
    body, content_type = form_body(files)
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
