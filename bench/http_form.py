"""The upload every contender receives: a multipart/form-data field named ``file``.

Each request gets a fresh random boundary, as curl, browsers and ``requests`` send them: a
server that compiled and cached something per boundary would otherwise look faster here than
with real clients.
"""

import uuid


def multipart_body(filename: str, data: bytes) -> tuple[bytes, str]:
    """One field named ``file``, as ``curl -F file=@photo.jpg`` sends it; (body, content type)."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
