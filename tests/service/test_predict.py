"""POST /predict on a real app: uploads in every accepted shape, and everything a client may get wrong.

The model is the session's small synthetic-digit model (see conftest), so the answers are real:
a clearly drawn prototype `k` is read as `k`. Every refusal is checked for its exact status and the
JSON body `{"error", "detail"}`; nothing a client sends may produce a 500.
"""

from __future__ import annotations

import base64
import io
import resource
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import DigitImage, MakeClient, Publish, digit_pixels, encode, variant
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from images import digitize_array


def predict_file(client: TestClient, data: bytes, name: str = "digit.png", mime: str = "image/png", **params):
    return client.post("/predict", files={"file": (name, data, mime)}, params=params)


def predict_raw(client: TestClient, data: bytes, mime: str = "image/png", **params) -> httpx.Response:
    return client.post("/predict", content=data, headers={"Content-Type": mime}, params=params)


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    if error is not None:
        assert body["error"] == error, body
    return body


def assert_prediction(item: dict[str, Any]) -> None:
    probabilities = item["probabilities"]
    assert len(probabilities) == 10 and all(0 <= p <= 1 for p in probabilities)
    assert sum(probabilities) == pytest.approx(1, abs=1e-4)
    assert item["digit"] == int(np.argmax(probabilities))
    # One precision (six decimals) for both, as JSON carries them: no float32 noise such as
    # 9.999999974752427e-07, and the confidence is the very number among the probabilities.
    assert item["confidence"] == max(probabilities) == probabilities[item["digit"]]
    for p in [*probabilities, item["confidence"]]:
        assert p == round(p, 6), p


# -- PNG chunks, for hostile files with valid checksums ------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny 8-bit gray PNG whose header claims width x height: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    )


def chunks_of(png: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], len(PNG_MAGIC)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        out.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + length]))
        at += 12 + length
    return out


# -- answers -------------------------------------------------------------------------------------


def test_one_file_is_read_as_its_digit(api: TestClient, digit_image: DigitImage) -> None:
    response = predict_file(api, digit_image(7), name="seven.png")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("mnist", "v0001")
    [item] = body["predictions"]
    assert item["filename"] == "seven.png"
    assert item["digit"] == 7
    assert "input" not in item
    assert_prediction(item)


def test_several_files_answer_in_order(api: TestClient, digit_image: DigitImage) -> None:
    files = [("file", (f"{k}.png", digit_image(k), "image/png")) for k in (3, 0, 8, 5)]

    response = api.post("/predict", files=files)

    assert response.status_code == 200, response.text
    items = response.json()["predictions"]
    assert [i["filename"] for i in items] == ["3.png", "0.png", "8.png", "5.png"]
    assert [i["digit"] for i in items] == [3, 0, 8, 5]
    for item in items:
        assert_prediction(item)


def test_every_accepted_format_as_a_raw_body(api: TestClient, digit_image: DigitImage) -> None:
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        response = predict_raw(api, digit_image(4, fmt), "image/" + fmt.lower())

        assert response.status_code == 200, (fmt, response.text)
        [item] = response.json()["predictions"]
        assert item["filename"] is None
        assert item["digit"] == 4, fmt
        assert_prediction(item)
    bmp = predict_raw(api, digit_image(4, "BMP"), "image/x-ms-bmp")  # what some systems call BMP
    assert bmp.status_code == 200 and bmp.json()["predictions"][0]["digit"] == 4


def test_png_and_jpeg_of_one_drawing_agree(api: TestClient, digit_image: DigitImage) -> None:
    for k in range(10):
        png = predict_raw(api, digit_image(k, "PNG"), debug=1).json()["predictions"][0]
        jpeg = predict_raw(api, digit_image(k, "JPEG", quality=90), "image/jpeg", debug=1).json()
        jpeg = jpeg["predictions"][0]
        assert png["digit"] == jpeg["digit"] == k
        difference = np.abs(np.array(png["input"], float) - np.array(jpeg["input"], float))
        assert difference.mean() < 4, difference.mean()


def test_debug_returns_the_28x28_the_network_saw(api: TestClient, digit_image: DigitImage) -> None:
    response = predict_file(api, digit_image(1), debug=1)

    assert response.status_code == 200, response.text
    seen = np.array(response.json()["predictions"][0]["input"])
    assert seen.shape == (28, 28)
    assert seen.min() == 0 and seen.max() == 255  # white ink on black, stretched as in MNIST
    assert seen[0].sum() == seen[-1].sum() == 0  # the digit sits in the middle, borders empty


def test_explain_maps_each_pixel_of_what_the_network_saw_and_draws_it(
    api: TestClient, digit_image: DigitImage
) -> None:
    response = predict_file(api, digit_image(3), debug=1, explain=1)

    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    why = prediction["explanation"]
    assert why["digit"] == prediction["digit"] == 3
    pixel_map, seen = np.array(why["map"]), np.array(prediction["input"])
    assert pixel_map.shape == (28, 28) and np.isfinite(pixel_map).all()
    assert (pixel_map[seen == 0] == 0).all()  # no ink, no push either way
    assert pixel_map.sum() > 0  # taken together, the ink argued for the answer
    header, data = why["png"].split(",", 1)
    assert header == "data:image/png;base64"
    overlay = Image.open(io.BytesIO(base64.b64decode(data)))
    assert overlay.format == "PNG" and overlay.size == (224, 224) and overlay.mode == "RGB"
    strongest = np.unravel_index(np.abs(pixel_map).argmax(), pixel_map.shape)
    red, _green, blue = np.asarray(overlay)[strongest[0] * 8 + 4, strongest[1] * 8 + 4].tolist()
    assert (red > 2 * blue) if pixel_map[strongest] > 0 else (blue > 2 * red)
    assert "explanation" not in predict_file(api, digit_image(3)).json()["predictions"][0]


def test_a_version_can_be_chosen(
    make_client: MakeClient, publish: Publish, trained_net: Any, digit_image: DigitImage
) -> None:
    publish()
    publish(variant(trained_net, seed=1), promote=False)
    with make_client() as client:
        for asked, served in (
            (None, "v0001"),
            ("v0001", "v0001"),
            ("current", "v0001"),
            ("v0002", "v0002"),
        ):
            params = {"version": asked} if asked else {}
            response = predict_file(client, digit_image(6), **params)
            assert response.status_code == 200, response.text
            assert response.json()["version"] == served
            assert response.json()["predictions"][0]["digit"] == 6


def test_an_unknown_version_is_a_404(api: TestClient, digit_image: DigitImage) -> None:
    body = assert_error(predict_file(api, digit_image(2), version="v0009"), 404, "version_not_found")
    assert "v0009" in body["detail"]


def test_a_version_that_is_no_version_name_is_a_404_that_says_the_rule(
    api: TestClient, digit_image: DigitImage
) -> None:
    # One rule (registry.parse_version): the name exactly as listed; `1`, `0001`, `v1` once answered
    # as v0001 while `V0001` was a 404.
    for version in ("abc", "current2", "../v0001", "1", "0001", "v1", "v001", "V0001", "v0"):
        body = assert_error(predict_file(api, digit_image(2), version=version), 404, "version_not_found")
        assert "versions are named v0001, v0002" in body["detail"]


def test_no_current_version_is_a_503_with_retry_after(
    make_client: MakeClient, digit_image: DigitImage
) -> None:
    with make_client() as client:
        response = predict_file(client, digit_image(2))
        assert_error(response, 503, "not_ready")
        assert int(response.headers["Retry-After"]) > 0

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert int(ready.headers["Retry-After"]) > 0
        assert client.get("/livez").json() == {"status": "alive"}


# -- images that are odd but fine -----------------------------------------------------------------


def test_a_transparent_canvas_is_composited_onto_white(api: TestClient) -> None:
    drawing = digit_pixels(9)  # dark ink on white
    black = Image.new("L", drawing.size, 0)
    canvas = Image.merge("RGBA", (black, black, black, Image.eval(drawing, lambda v: 255 - v)))
    assert canvas.getpixel((0, 0)) == (0, 0, 0, 0)  # what a browser canvas holds where nothing was drawn

    transparent = predict_raw(api, encode(canvas), debug=1)
    opaque = predict_raw(api, encode(drawing), debug=1)

    assert transparent.status_code == 200, transparent.text
    got, expected = transparent.json()["predictions"][0], opaque.json()["predictions"][0]
    assert got["digit"] == expected["digit"] == 9
    assert np.abs(np.array(got["input"]) - np.array(expected["input"])).max() <= 2


def test_exif_orientation_is_applied(api: TestClient) -> None:
    upright = digit_pixels(2)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how the camera wrote the pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated_jpeg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    rotated = predict_raw(api, rotated_jpeg, "image/jpeg", debug=1)
    reference = predict_raw(api, encode(upright, "JPEG", quality=95), "image/jpeg", debug=1)
    ignored = predict_raw(api, encode(stored, "JPEG", quality=95), "image/jpeg", debug=1)  # no EXIF

    assert rotated.status_code == 200, rotated.text
    got, expected = rotated.json()["predictions"][0], reference.json()["predictions"][0]
    assert got["digit"] == expected["digit"] == 2
    seen, want = np.array(got["input"], float), np.array(expected["input"], float)
    sideways = np.array(ignored.json()["predictions"][0]["input"], float)
    assert np.abs(seen - want).mean() < 3
    assert np.abs(sideways - want).mean() > 10  # the test would notice an ignored orientation


# -- hostile and broken uploads -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    png = encode(digit_pixels(3, side=64))
    return {
        "junk": bytes(range(256)) * 4,
        "truncated": png[: len(png) // 2],
        "one_pixel": encode(Image.new("L", (1, 1), 0)),
        "line": encode(Image.new("L", (2000, 10), 255)),
        "blank": encode(Image.new("L", (100, 100), 255)),
        "bomb": png_claiming(100_000, 100_000),  # 10^10 pixels: Pillow's own guard fires on the header
        "big_header": png_claiming(5000, 5000),  # 25 M pixels: under Pillow's guard, over the service's
    }


HOSTILE = {  # name: (status, error)
    "junk": (400, "unreadable_image"),
    "truncated": (400, "unreadable_image"),
    "one_pixel": (422, "bad_image_dimensions"),
    "line": (422, "bad_image_dimensions"),
    "blank": (422, "no_digit_found"),
    "bomb": (422, "bad_image_dimensions"),
    "big_header": (422, "bad_image_dimensions"),
}


def test_bad_images_are_refused_with_a_clear_status(api: TestClient, hostile: dict[str, bytes]) -> None:
    for name, (status, error) in HOSTILE.items():
        for response in (predict_raw(api, hostile[name]), predict_file(api, hostile[name])):
            assert (response.status_code, response.json()["error"]) == (status, error), (name, response.text)
            assert_error(response, status, error)


def test_a_bomb_is_refused_from_its_header_without_allocating(
    api: TestClient, hostile: dict[str, bytes]
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(3):
        body = assert_error(predict_raw(api, hostile["bomb"]), 422, "bad_image_dimensions")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, f"peak memory grew by {grown_mib:.0f} MiB"  # decoding would need 9.3 GiB
    assert "pixels" in body["detail"]


def test_one_bad_image_among_several_is_named(api: TestClient, digit_image: DigitImage) -> None:
    blank = encode(Image.new("L", (50, 50), 255))
    files = [("file", ("good.png", digit_image(1), "image/png")), ("file", ("blank.png", blank, "image/png"))]

    body = assert_error(api.post("/predict", files=files), 422, "no_digit_found")

    assert body["detail"].startswith("image 2 (blank.png): ")


def test_a_body_that_is_not_an_image_type_is_a_415(api: TestClient, digit_image: DigitImage) -> None:
    for mime in ("text/plain", "application/json", "application/octet-stream", "video/mp4"):
        assert_error(predict_raw(api, digit_image(3), mime), 415, "unsupported_media_type")


def test_no_content_type_is_a_415(api: TestClient, digit_image: DigitImage) -> None:
    response = api.post("/predict", content=digit_image(3))
    assert "content-type" not in response.request.headers
    assert_error(response, 415, "unsupported_media_type")


def test_text_claiming_to_be_an_image_is_a_415(api: TestClient) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>'
    assert_error(predict_raw(api, svg, "image/png"), 415, "unsupported_image_type")


def test_multipart_without_a_file_field_is_a_400(api: TestClient, digit_image: DigitImage) -> None:
    wrong_field = api.post("/predict", files={"image": ("a.png", digit_image(1), "image/png")})
    assert_error(wrong_field, 400, "bad_request")

    text_only = api.post("/predict", files={"file": (None, "not a file")})  # a plain form field
    assert_error(text_only, 400, "bad_request")


def test_malformed_multipart_is_a_400(api: TestClient) -> None:
    no_boundary = predict_raw(api, b"--x\r\n\r\n", "multipart/form-data")
    assert_error(no_boundary, 400, "bad_request")

    garbage = predict_raw(api, b"\x00\xff" * 100, "multipart/form-data; boundary=xyz")
    assert garbage.status_code == 400, garbage.text
    assert set(garbage.json()) == {"error", "detail"}


def test_an_empty_body_is_a_400(api: TestClient) -> None:
    for mime in ("image/png", "multipart/form-data; boundary=xyz"):
        assert_error(predict_raw(api, b"", mime), 400, "bad_request")


@pytest.fixture
def small_limits(make_client: MakeClient, publish: Publish) -> Iterator[TestClient]:
    publish()
    with make_client(max_upload_bytes=2048, max_files=3) as client:
        yield client


def test_an_image_over_the_upload_limit_is_a_413(small_limits: TestClient) -> None:
    image = png_claiming(64, 64) + b"\0" * 3000  # over 2048 bytes per image, under the body cap
    assert_error(predict_raw(small_limits, image), 413, "image_too_large")
    assert_error(predict_file(small_limits, image), 413, "image_too_large")


def test_a_raw_image_over_the_upload_limit_is_an_image_too_large_however_big(
    small_limits: TestClient,
) -> None:
    """Once the code of an oversized raw image depended on where it was caught: `image_too_large`
    up to the multipart body's cap (8 images), `payload_too_large` past it."""
    huge = b"\x89PNG" + b"\0" * 100_000  # over the whole-body cap (2048 x min(max_files, 8)) too
    assert_error(predict_raw(small_limits, huge), 413, "image_too_large")

    def stream() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(100):
            yield b"\0" * 1000

    chunked = small_limits.post("/predict", content=stream(), headers={"Content-Type": "image/png"})
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, "image_too_large")


def test_a_multipart_body_over_the_request_cap_is_a_payload_too_large(small_limits: TestClient) -> None:
    image = png_claiming(64, 64) + b"\0" * 1800  # each under the 2048-byte image limit
    files = [("file", (f"{i}.png", image, "image/png")) for i in range(4)]  # 4 x 1.8 kB > 2048 x 3
    assert_error(small_limits.post("/predict", files=files), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("content_type", "code"),
    [("image/png", "image_too_large"), ("multipart/form-data; boundary=x", "payload_too_large")],
)
def test_a_declared_content_length_over_the_limit_is_refused_unread(
    small_limits: TestClient, content_type: str, code: str
) -> None:
    request = small_limits.build_request(
        "POST", "/predict", content=b"x", headers={"Content-Type": content_type}
    )
    request.headers["Content-Length"] = "1000000000"

    body = assert_error(small_limits.send(request), 413, code)

    assert "1000000000" in body["detail"]


def test_too_many_files_is_a_400(small_limits: TestClient) -> None:
    image = encode(digit_pixels(1, side=28))
    files = [("file", (f"{i}.png", image, "image/png")) for i in range(4)]  # max_files is 3

    body = assert_error(small_limits.post("/predict", files=files), 400, "bad_request")

    assert "Too many files" in body["detail"]
    ok = small_limits.post("/predict", files=files[:3])
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["predictions"]) == 3


# -- nothing a client sends is a 500 -------------------------------------------------------------


def mutations(rng: np.random.Generator, seeds: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """Random byte strings, byte-flipped and truncated files, and PNGs with altered chunks whose
    checksums are recomputed (so the parser gets past the CRC check and meets the damage)."""
    for _ in range(80):
        yield "image/png", rng.bytes(int(rng.integers(0, 600)))
    for _ in range(120):
        data = bytearray(seeds[int(rng.integers(len(seeds)))])
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        yield "image/webp", bytes(data)
    png = seeds[0]
    for _ in range(100):
        parts = chunks_of(png)
        i = int(rng.integers(len(parts)))
        kind, data = parts[i]
        if kind == b"IHDR" and rng.random() < 0.5:
            width, height = (int(v) for v in rng.integers(0, 2**31, 2))
            data = struct.pack(">II", width, height) + data[8:]
        elif data:
            data = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            data = bytes(data)
        parts[i] = (kind, data)
        yield "image/png", PNG_MAGIC + b"".join(chunk(k, d) for k, d in parts)


def test_random_and_mutated_uploads_never_cause_a_500(api: TestClient) -> None:
    drawing = digit_pixels(5, side=48)
    seeds = [encode(drawing, fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")]
    seeds.append(encode(Image.merge("LA", (drawing, drawing)), "PNG"))
    statuses: dict[int, int] = {}
    for mime, data in mutations(np.random.default_rng(1234), seeds):
        response = predict_raw(api, data, mime)
        assert response.status_code < 500, (response.text, data[:64])
        if response.status_code != 200:
            assert set(response.json()) == {"error", "detail"}
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(400, 0) > 0 and sum(statuses.values()) == 300, statuses


def test_the_answer_is_plain_json_with_io_of_bytes(api: TestClient, digit_image: DigitImage) -> None:
    # A file-like body (as requests/httpx users often send) works like bytes.
    response = api.post(
        "/predict", content=io.BytesIO(digit_image(0)).read(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["predictions"][0]["digit"] == 0


def test_the_predict_route_is_documented_and_refuses_other_methods(api: TestClient) -> None:
    """/predict's declared parameters produce the OpenAPI document (the same with the `route` fast
    path, which calls the endpoint without FastAPI's dependency machinery: test_fast_paths.py)."""
    operation = api.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(operation["requestBody"]["content"])
    assert {p["name"] for p in operation["parameters"]} == {"version", "debug", "explain"}
    assert set(operation["responses"]) >= {"200", "413", "415", "422"}
    response = api.get("/predict")
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_each_answer_says_how_digit_like_the_image_looked(
    make_client: MakeClient, registry: Any, trained_net: Any, digit_image: DigitImage
) -> None:
    from trainer.evaluation import digit_score_calibration

    uploads = np.stack([digitize_array(np.asarray(digit_pixels(k))) for k in range(10)]).reshape(10, 784)
    calibration = digit_score_calibration(trained_net, np.repeat(uploads, 5, axis=0))
    calibrated = registry.publish(trained_net, {"test_accuracy": 0.9, "digit_score": calibration})
    plain = registry.publish(trained_net, {"test_accuracy": 0.9})  # published before the score existed
    registry.promote(calibrated)
    scribble = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(scribble).rectangle((30, 40, 250, 240), outline=0, width=40)  # a thick square frame
    with make_client() as client:
        digit, frame = (
            client.post("/predict", files={"file": ("f.png", data, "image/png")}).json()["predictions"][0]
            for data in (digit_image(7), encode(scribble))
        )
        assert 0.1 <= digit["digit_score"] <= 1  # what it was calibrated on scores like it
        assert 0 <= frame["digit_score"] < digit["digit_score"]
        old = client.post(f"/predict?version={plain}", files={"file": ("f.png", digit_image(7), "image/png")})
        assert old.json()["predictions"][0]["digit_score"] is None
        scores = client.get("/metrics").text
    assert "mnist_prediction_digit_score_count 2.0" in scores
