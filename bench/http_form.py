"""The upload every contender receives: a multipart/form-data field named ``file``."""

BOUNDARY = "----bench-boundary-5b1c9e"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart_body(filename: str, data: bytes) -> bytes:
    """One field named ``file``, as ``curl -F file=@photo.jpg`` sends it."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
