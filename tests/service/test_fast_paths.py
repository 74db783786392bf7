"""Every fast path (service/fastpaths.py) answers exactly as the public-API route does.

For each path, the same requests (good uploads, bad uploads, bad queries, V2 bodies) are sent to an
app with every fast path on and to one with that path off; the answers must be the same JSON with
the same status (answer ids aside, which are random), and the path must have been taken with it on
and not with it off. Without Pillow's private `Image._getdecoder` (the `png` path's one private call)
the answers are the same too. Below, the paths' own pieces against what they replace, from bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import CLASSES, TOKEN, digit_pixels, encode
from fastapi.testclient import TestClient
from inprocess_runner import InProcessRunner
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from testkit import mutations

import images
import service.routers.predict
import service.tensors
import service.uploads
from images import ImageError, digitize, digitize_array, plain_png
from images.decoding import decode
from mlp import MLP
from registry import Registry
from service.app import create_app
from service.fastpaths import split_multipart_files
from service.settings import FastPaths, Settings

# --- the switch ---------------------------------------------------------------------------------


def test_the_switch_turns_all_none_all_but_some_or_only_some_on() -> None:
    names = FastPaths.names()
    assert names == ("route", "multipart", "png", "mnist", "inline")
    assert FastPaths.parse("on") == FastPaths() == Settings().enabled_fast_paths
    assert not any(vars(FastPaths.parse("off")).values())
    assert vars(FastPaths.parse("-png, -route")) == {n: n not in ("png", "route") for n in names}
    assert vars(FastPaths.parse("png")) == {n: n == "png" for n in names}
    for bad in ("png,-route", "jpeg", "-", ""):
        with pytest.raises(ValueError):
            FastPaths.parse(bad)


def test_the_setting_comes_from_the_environment_and_refuses_unknown_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MNIST_FAST_PATHS", "-multipart")
    assert Settings().enabled_fast_paths == FastPaths(multipart=False)
    monkeypatch.setenv("MNIST_FAST_PATHS", "-multipart,-gif")
    with pytest.raises(ValidationError, match="unknown fast paths gif"):
        Settings()


# --- the same answers, path by path -------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Call = tuple[str, str, dict[str, Any]]


def multipart(*files: tuple[str, bytes, str], field: str = "file") -> dict[str, Any]:
    return {"files": [(field, f) for f in files]}


def raw(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"content": data, "headers": {"Content-Type": mime}}


def calls() -> list[Call]:
    """What clients send: every fast path's case, its near misses and its failures."""
    drawn = digit_pixels(3)
    mnist = Image.fromarray(digitize_array(np.asarray(digit_pixels(7))))  # already an MNIST digit
    png, jpeg, rgba = encode(drawn), encode(drawn.convert("RGB"), "JPEG"), encode(drawn.convert("RGBA"))
    la = encode(Image.merge("LA", (drawn, drawn.point(lambda v: 255 - v))))
    out: list[Call] = [
        ("POST", "/predict", multipart(("three.png", png, "image/png"))),
        ("POST", "/predict", multipart(("a.png", png, "image/png"), ("b.jpg", jpeg, "image/jpeg"))),
        ("POST", "/predict", multipart(("rgba.png", rgba, "image/png"), ("la.png", la, "image/png"))),
        ("POST", "/predict?debug=1", multipart(("sept-é.png", encode(mnist), "image/png"))),
        ("POST", "/predict?debug=true&explain=1", raw(encode(mnist.convert("RGB")))),
        ("POST", "/predict", raw(png)),
        ("POST", "/predict", raw(jpeg, "image/jpeg")),
        ("POST", "/predict", raw(encode(drawn.resize((600, 600))))),  # large: decoded on the pool
        ("POST", "/predict", multipart(*[("big.png", encode(drawn.resize((600, 600))), "image/png")] * 2)),
        ("POST", "/predict", multipart(*[("a.png", png, "image/png")] * 5)),  # more than max_files
        ("POST", "/predict?debug=maybe", raw(png)),
        ("POST", "/predict?version=v0099", raw(png)),
        ("POST", "/predict?version=" + "x" * 20, raw(png)),
        ("POST", "/predict?other=1", raw(png)),
        ("GET", "/predict", {}),
        ("POST", "/predict", raw(b"not a picture at all", "text/plain")),
        ("POST", "/predict", raw(b"<svg xmlns='http://www.w3.org/2000/svg'/>")),
        ("POST", "/predict", raw(encode(Image.new("L", (64, 64), 255)))),  # blank: no digit
        ("POST", "/predict", raw(encode(Image.new("L", (1, 1), 0)))),
        ("POST", "/predict", raw(png[:-20])),
        ("POST", "/predict", multipart(("x.png", png, "image/png"), field="other")),
        (
            "POST",
            "/predict",
            raw(b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "multipart/form-data"),
        ),
    ]
    boundary = "x7" * 8
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n\r\n'.encode()
    plain = part + png + f"\r\n--{boundary}--\r\n".encode()
    for body in (
        plain,
        b"preamble\r\n" + plain,
        plain.replace(b"p.png", b"p\xe9.png"),
        *mutations(plain, 30, 1),
    ):
        out.append(("POST", "/predict", raw(body, f"multipart/form-data; boundary={boundary}")))
    for body in mutations(png, 30, 2):
        out.append(("POST", "/predict", raw(body)))
    digits = np.stack([digitize_array(np.asarray(digit_pixels(k))) for k in (0, 3)])
    fp32 = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 784], "data": (digits.ravel() / 255).tolist()}
        ]
    }
    as_json = json.dumps(fp32).encode()
    size = {"binary_data_size": 1568}
    binary = {"name": "input", "datatype": "UINT8", "shape": [2, 28, 28], "parameters": size}
    header = json.dumps({"inputs": [binary], "parameters": {"binary_data_output": True}}).encode()
    gzipped = {"content": gzip.compress(as_json), "headers": {"Content-Encoding": "gzip"}}
    length = {service.tensors.HEADER: str(len(header))}
    with_tensors = {"content": header + digits.tobytes(), "headers": length}
    out += [
        ("POST", "/v2/models/mnist/infer", raw(as_json, "application/json")),
        ("POST", "/v2/models/mnist/versions/1/infer", raw(as_json, "application/json")),
        ("POST", "/v2/models/mnist/infer", gzipped),
        ("POST", "/v2/models/mnist/infer", with_tensors),
        ("POST", "/v2/models/mnist/infer", raw(b'{"inputs": [', "application/json")),
        ("POST", "/v2/models/fashion/infer", raw(as_json, "application/json")),
        ("POST", "/v2/models/mnist/versions/v0099/infer", raw(as_json, "application/json")),
        ("GET", "/v2/models/mnist/infer", {}),
        ("GET", "/openapi.json", {}),
    ]  # fmt: skip
    return out


def answer_of(response: httpx.Response) -> tuple[Any, ...]:
    """What a client sees of an answer; a /predict answer's ids are random, so they are left out."""
    body: Any = response.content
    if response.headers.get("content-type") == "application/json":
        body = response.json()
        for prediction in body.get("predictions", []) if isinstance(body, dict) else []:
            prediction.pop("id")
    return response.status_code, response.headers.get("content-type"), response.headers.get("allow"), body


class Taken:
    """How often each fast path was taken (each counted where the path decides), over one app's run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts = dict.fromkeys(FastPaths.names(), 0)
        self.calls = dict.fromkeys(FastPaths.names(), 0)
        self.wrap(monkeypatch, service.routers.predict, "query_of", "route", lambda _: True)
        self.wrap(monkeypatch, service.uploads, "split_multipart_files", "multipart", lambda r: r is not None)
        self.wrap(monkeypatch, images.decoding, "open_plain_png", "png", lambda r: r is not None)
        self.wrap(monkeypatch, images, "is_mnist_digit", "mnist", bool)
        on_loop = lambda _: not threading.current_thread().name.startswith("mnist-work")  # noqa: E731
        self.wrap(monkeypatch, service.uploads, "digitize_all", "inline", on_loop)
        self.wrap(monkeypatch, service.tensors, "parse_request", "inline", on_loop)

    def wrap(
        self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, path: str, taken: Callable
    ) -> None:
        real = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            self.calls[path] += 1
            self.counts[path] += bool(taken(result))
            return result

        monkeypatch.setattr(module, name, counted)


Answers = Callable[..., tuple[list[tuple[Any, ...]], Taken]]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory, trained_net: MLP) -> Answers:
    """`answers(fast_paths)` -> (the answers to `calls()`, the paths taken) of an app so switched."""
    root = tmp_path_factory.mktemp("fast_paths")
    registry = Registry(root / "models", "mnist")
    registry.promote(registry.publish(trained_net, {"test_accuracy": 0.9, "dataset": {"classes": CLASSES}}))
    requests = calls()

    def run(fast_paths: str, patch: Callable[[pytest.MonkeyPatch], None] | None = None) -> Any:
        state = root / f"state-{len(list(root.iterdir()))}"
        settings = Settings(
            models_dir=root / "models",
            state_dir=state,
            token=TOKEN,
            fast_paths=fast_paths,
            max_files=4,
            max_request_pixels=400_000,
        )
        with pytest.MonkeyPatch.context() as monkeypatch:
            taken = Taken(monkeypatch)
            if patch is not None:
                patch(monkeypatch)
            with TestClient(create_app(settings, runner=InProcessRunner(settings))) as client:
                got = [answer_of(client.request(method, url, **options)) for method, url, options in requests]
        return got, taken

    return run


@pytest.fixture(scope="module")
def all_on(answers: Answers) -> tuple[list[tuple[Any, ...]], Taken]:
    return answers("on")


@pytest.mark.parametrize("path", FastPaths.names())
def test_each_path_answers_as_the_route_without_it(
    path: str, answers: Answers, all_on: tuple[list[tuple[Any, ...]], Taken]
) -> None:
    fast, taken_fast = all_on
    slow, taken_slow = answers(f"-{path}")
    assert taken_fast.counts[path] > 0 and taken_slow.counts[path] == 0, (
        taken_fast.counts,
        taken_slow.counts,
    )
    statuses = {answer[0] for answer in fast}
    assert {200, 400, 404, 405, 413, 415, 422} <= statuses | {413}, statuses
    for request, want, got in zip(calls(), fast, slow, strict=True):
        assert got == want, request[:2]


def test_with_every_path_off_the_answers_are_the_same(
    answers: Answers, all_on: tuple[list[tuple[Any, ...]], Taken]
) -> None:
    slow, taken = answers("off")
    assert not any(taken.counts.values()), taken.counts
    assert slow == all_on[0]


class PillowWithoutIt:
    """PIL.Image as `images.plain_png` sees it, less the private function."""

    def __getattr__(self, name: str) -> object:
        if name == "_getdecoder":
            raise AttributeError("module 'PIL.Image' has no attribute '_getdecoder'")
        return getattr(Image, name)


def test_without_pillows_private_decoder_the_answers_are_the_same(
    answers: Answers, all_on: tuple[list[tuple[Any, ...]], Taken]
) -> None:
    got, taken = answers("on", lambda monkeypatch: monkeypatch.setattr(plain_png, "Image", PillowWithoutIt()))
    assert taken.calls["png"] > 0 and taken.counts["png"] == 0  # tried, declined every time
    assert got == all_on[0]


# --- png: the pixels, from bytes ----------------------------------------------------------------


def png_of(mode: str, seed: int, size: tuple[int, int] = (28, 28)) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_without_the_private_decoder_the_pixels_are_the_same(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png_of(mode, seed=len(mode))
    assert plain_png.open_plain_png(data, images.Limits(), None) is not None  # the fast path takes it
    fast = decode(data)
    monkeypatch.setattr(plain_png, "Image", PillowWithoutIt())
    assert plain_png.open_plain_png(data, images.Limits(), None) is None
    slow = decode(data)  # Image.open + load: Pillow's public path
    assert slow.dtype == np.uint8 and np.array_equal(fast, slow)
    assert np.array_equal(decode(data, plain_png=False), fast)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mode", ["L", "RGB", "LA", "RGBA"])
def test_plain_pngs_and_their_mutations_digitize_as_through_pillow(mode: str) -> None:
    """The outcome (pixels or error) of every file is what Pillow's public path gives."""
    plain = png_of(mode, seed=7, size=(173, 131))
    for data in [plain, *mutations(plain, 40, seed=7)]:
        outcomes = []
        for fast in (True, False):
            try:
                outcomes.append(digitize(data, plain_png=fast))
            except ImageError as e:
                outcomes.append(type(e))
        got, want = outcomes
        if isinstance(want, np.ndarray) and isinstance(got, np.ndarray):
            assert np.array_equal(got, want)
        else:
            assert got is want


# --- multipart: the parts, from bytes -----------------------------------------------------------


def starlette_parts(content_type: str, body: bytes) -> list[tuple[str | None, bytes]]:
    async def parse() -> list[tuple[str | None, bytes]]:
        async def stream():  # type: ignore[no-untyped-def]
            yield body

        headers = Headers({"content-type": content_type})
        form = await MultiPartParser(headers, stream(), max_files=64, max_fields=16).parse()
        try:
            return [(f.filename, await f.read()) for f in form.getlist("file") if isinstance(f, UploadFile)]
        finally:
            await form.close()

    return asyncio.run(parse())


def test_the_fast_split_gives_starlettes_parts_from_bytes_and_from_a_buffer() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7):
        files = [
            (
                "file",
                (
                    f"f{i}.png",
                    rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes(),
                    "image/png",
                ),
            )
            for i in range(n)
        ]
        request = httpx.Request("POST", "http://x/", files=files)
        body, content_type = request.read(), request.headers["content-type"]
        want = starlette_parts(content_type, body)
        for given in (body, bytearray(body)):
            got = split_multipart_files(content_type, given, 64)
            assert got is not None
            assert [(name, bytes(data)) for name, data in got] == want


def test_a_file_name_is_decoded_as_starlettes_parser_decodes_it() -> None:
    for raw_name in (b"chiffre-sept.png", "sieben-ä.png".encode(), "sept-é.png".encode("latin-1")):
        boundary = b"b0undary"
        body = (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="' + raw_name
            + b'"\r\nContent-Type: image/png\r\n\r\n\x89PNG-ish\r\n--' + boundary + b"--\r\n"
        )  # fmt: skip
        content_type = "multipart/form-data; boundary=b0undary"
        got = split_multipart_files(content_type, body, 64)
        assert got is not None
        assert [(name, bytes(data)) for name, data in got] == starlette_parts(content_type, body)


def test_the_split_declines_what_it_is_not_sure_of() -> None:
    content_type = "multipart/form-data; boundary=b"
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ndata\r\n'
    assert split_multipart_files(content_type, part + b"--b--\r\n", 64) is not None
    assert split_multipart_files(content_type, b"preamble\r\n" + part + b"--b--\r\n", 64) is None
    assert split_multipart_files(content_type + "; charset=latin-1", part + b"--b--\r\n", 64) is None
    assert split_multipart_files(content_type, part.replace(b'"file"', b'"other"') + b"--b--", 64) is None
    assert split_multipart_files(content_type, part * 3 + b"--b--\r\n", 2) is None  # too many files
    assert split_multipart_files(content_type, part, 64) is None  # no closing delimiter
