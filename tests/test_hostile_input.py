"""Property-based tests (Hypothesis): whatever arrives, the answer is a 4xx or a right prediction.

Random bytes, truncated and bit-flipped data-set images, headers that claim absurd sizes,
bodies over the limit and malformed forms go through the Flask app in-process, so that
many examples run quickly; after each example a normal request must still be answered.
tests/test_hostile_server.py does the same through the real gunicorn, with slow clients.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app import create_app
from classifier.pipeline import Classifier

from testing.samples import TINY_LABELS, image_bytes
from testing.samples import DATA_DIR

ERROR_CODES = {
    400: {"missing_file", "empty_file", "not_an_image", "invalid_parameter", "bad_request", "incomplete_body"},
    413: {"payload_too_large", "image_too_large", "too_many_files"},
    415: {"unsupported_type"},
}
UPLOAD_LIMIT = 256 * 1024
PIXEL_LIMIT = 4_000_000
RED_PNG = image_bytes("PNG", colour=(255, 0, 0))

# Bounded: each property runs a few dozen examples (the suite must stay fast on 2 cores).
examples = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def data_set_samples() -> dict[str, bytes]:
    """Real images: a few UC Merced JPEGs, one original TIFF, and one re-encoded as PNG, GIF, WebP."""
    ucmerced = DATA_DIR / "ucmerced"
    jpegs = [ucmerced / name / f"{name}00.jpg" for name in ("airplane", "beach", "river")]
    samples = {path.name: path.read_bytes() for path in jpegs}
    samples["beach00.tif"] = (DATA_DIR / "ucmerced-tif" / "beach00.tif").read_bytes()
    with Image.open(jpegs[0]) as image:
        for fmt in ("PNG", "GIF", "WEBP"):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            samples[f"airplane00.{fmt.lower()}"] = buffer.getvalue()
    return samples


SAMPLES = data_set_samples()


@pytest.fixture(scope="module")
def hostile_app(tiny_model_path):
    return create_app(
        {
            "TESTING": True,
            "MODEL_PATH": str(tiny_model_path),
            "TORCH_THREADS": 1,
            "MAX_CONTENT_LENGTH": UPLOAD_LIMIT,
            "MAX_IMAGE_PIXELS": PIXEL_LIMIT,
        }
    )


@pytest.fixture(scope="module")
def hostile_client(hostile_app):
    return hostile_app.test_client()


@pytest.fixture(scope="module")
def reference(tiny_model_path) -> Classifier:
    """The pipeline without the web layer: what a correct answer is, for bytes that decode."""
    return Classifier.setup(tiny_model_path, max_pixels=PIXEL_LIMIT, threads=1)


def assert_sound_answer(response, data: bytes | None = None, reference: Classifier | None = None):
    """A 4xx with one of our JSON errors, or a 200 that is the model's prediction for the bytes."""
    body = response.get_json(silent=True)
    assert body is not None, f"{response.status_code} is not JSON: {response.get_data()[:200]!r}"
    if response.status_code == 200 and "results" in body:  # a batch: each item sound alone
        for item in body["results"]:
            assert_sound_error(item) if "error" in item else assert_sound_prediction(item)
    elif response.status_code == 200:
        assert_sound_prediction(body, data, reference)
    else:
        assert response.status_code in ERROR_CODES, f"{response.status_code}: {body}"
        assert body["error"]["code"] in ERROR_CODES[response.status_code], body
        assert_sound_error(body)
    return body


def assert_sound_error(body: dict):
    assert body["error"]["code"] in set().union(*ERROR_CODES.values()), body
    assert len(body["error"]["message"]) > 10


def assert_sound_prediction(body: dict, data: bytes | None = None, reference: Classifier | None = None):
    assert body["label"] in TINY_LABELS and body["label"] == body["top"][0]["label"]
    scores = [entry["score"] for entry in body["top"]]
    assert all(0 <= score <= 1 for score in scores) and scores == sorted(scores, reverse=True)
    assert sum(scores) <= 1 + 1e-4
    if data is not None and reference is not None:
        expected = reference.classify(data, top_k=len(body["top"])).to_json()
        assert body["label"] == expected["label"]
        assert body["score"] == pytest.approx(expected["score"], abs=1e-5)


def assert_still_serving(client):
    response = client.post("/predict", data={"file": (io.BytesIO(RED_PNG), "red.png")}, content_type="multipart/form-data")
    assert response.status_code == 200 and response.get_json()["label"] == "red"


def post_file(client, data: bytes, filename="upload.jpg", query=""):
    return client.post(f"/predict{query}", data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")


@examples
@given(data=st.binary(max_size=4096), raw=st.booleans(), content_type=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream"]))
def test_random_bytes(hostile_client, reference, data, raw, content_type):
    response = hostile_client.post("/predict", data=data, content_type=content_type) if raw else post_file(hostile_client, data)
    assert_sound_answer(response, data, reference)
    assert_still_serving(hostile_client)


# A TIFF cut inside its trailing tags still decodes; Pillow warns, and the answer must be right.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
@examples
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_data_set_images(hostile_client, reference, name, cut):
    data = SAMPLES[name][: int(len(SAMPLES[name]) * cut)]
    assert_sound_answer(post_file(hostile_client, data, filename=name), data, reference)
    assert_still_serving(hostile_client)


@examples
@given(name=st.sampled_from(sorted(SAMPLES)), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 7)), min_size=1, max_size=16))
def test_bit_flipped_data_set_images(hostile_client, reference, name, flips):
    data = bytearray(SAMPLES[name])
    for position, bit in flips:
        data[int(len(data) * position)] ^= 1 << bit
    data = bytes(data)
    # A flip in pixel data still decodes: then the answer must be the model's for those bytes.
    assert_sound_answer(post_file(hostile_client, data, filename=name), data, reference)
    assert_still_serving(hostile_client)


def claim_size(fmt: str, width: int, height: int) -> bytes:
    """A small real image whose header is rewritten to claim ``width`` × ``height``."""
    data = bytearray(image_bytes(fmt, size=(8, 8), colour=(0, 0, 255)))
    if fmt == "PNG":  # IHDR right after the signature; its CRC must match or Pillow refuses
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt == "GIF":  # logical screen, then the image descriptor's size
        data[6:10] = struct.pack("<HH", width, height)
        descriptor = data.index(b"\x2c")
        data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":  # the start-of-frame segment: precision, then height and width
        frame = data.index(b"\xff\xc0")
        data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@examples
@given(
    fmt=st.sampled_from(["PNG", "GIF", "BMP", "JPEG"]),
    width=st.integers(1, 65_535),
    height=st.integers(1, 65_535),
)
def test_headers_that_claim_absurd_dimensions(hostile_client, reference, fmt, width, height):
    data = claim_size(fmt, width, height)
    response = post_file(hostile_client, data, filename=f"claims.{fmt.lower()}")
    body = assert_sound_answer(response, data, reference)
    if width * height > PIXEL_LIMIT:
        # Refused from the header (413), or as unreadable; never decoded into a bitmap.
        assert response.status_code in (400, 413), body
    assert_still_serving(hostile_client)


@examples
@given(
    colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]),
    size=st.tuples(st.integers(1, 600), st.integers(1, 600)),
)
def test_any_image_of_one_colour_gets_that_colours_label(hostile_client, colour, fmt, size):
    # The tiny model scores each channel, so a clearly dominant channel is the right answer.
    dominant = max(range(3), key=lambda channel: colour[channel])
    others = sorted(colour[channel] for channel in range(3) if channel != dominant)
    data = image_bytes(fmt, size=size, colour=colour)
    response = post_file(hostile_client, data, filename=f"x.{fmt.lower()}")
    body = assert_sound_answer(response)
    if response.status_code == 413:  # uncompressed BMP and TIFF, with the form around them
        assert body["error"]["code"] == "payload_too_large" and len(data) > UPLOAD_LIMIT - 1024, body
        return
    assert response.status_code == 200, (colour, fmt, size, body)
    if colour[dominant] - others[-1] >= 40:  # lossy formats shift colours a little
        assert body["label"] == TINY_LABELS[dominant], (colour, fmt, size, body)


@examples
@given(size=st.integers(UPLOAD_LIMIT + 1, 4 * UPLOAD_LIMIT), raw=st.booleans())
def test_bodies_over_the_upload_limit_are_413(hostile_client, size, raw):
    data = b"\xff\xd8\xff" + bytes(size - 3)
    response = hostile_client.post("/predict", data=data, content_type="image/jpeg") if raw else post_file(hostile_client, data)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert_still_serving(hostile_client)


@examples
@given(parts=st.integers(0, 1500), field=st.sampled_from(["file", "other"]))
def test_forms_with_many_parts(hostile_client, parts, field):
    # Werkzeug refuses forms of over 1,000 parts (413); fewer are read and checked.
    items = [(io.BytesIO(b"x"), f"{i}.jpg") for i in range(parts)]
    response = hostile_client.post("/predict/batch", data={field: items}, content_type="multipart/form-data")
    body = assert_sound_answer(response)
    if parts > 1000:
        assert response.status_code == 413 and "parts" in body["error"]["message"]
    assert_still_serving(hostile_client)


@examples
@given(body=st.binary(max_size=2048), boundary=st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=80))
def test_malformed_multipart(hostile_client, body, boundary):
    response = hostile_client.post(
        "/predict", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_sound_answer(response)
    assert_still_serving(hostile_client)


@examples
@given(top=st.text(max_size=12))
def test_any_top_parameter(hostile_client, top):
    response = hostile_client.post("/predict", query_string={"top": top}, data=RED_PNG, content_type="image/png")
    body = assert_sound_answer(response)
    if response.status_code == 200:
        assert top == "" or len(body["top"]) == int(top)


def test_the_samples_are_real_images(reference):
    # The truncation and bit-flip properties mean something only if the originals classify.
    assert len(SAMPLES) >= 6
    for data in SAMPLES.values():
        assert reference.classify(data).top[0][0] in TINY_LABELS
