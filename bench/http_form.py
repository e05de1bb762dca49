"""The upload every contender receives: a multipart/form-data field named ``file``.

Each request gets a fresh random boundary, as curl, browsers and ``requests`` send them: a
server that compiled and cached something per boundary would otherwise look faster here than
with real clients.
"""

import uuid


def multipart_body(filename: str, data: bytes) -> tuple[bytes, str]:
    """One field named ``file``, as ``curl -F file=@photo.jpg`` sends it; (body, content type)."""
    return multipart_files([(filename, data)])


def multipart_files(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """One field named ``file`` per (name, bytes), as ``curl -F file=@a.jpg -F file=@b.jpg`` sends them.

    Returns (body, content type).
    """
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode() + data + b"\r\n"
        for filename, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
