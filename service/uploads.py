"""The images of a `/predict` request -> the 28x28 digits the network reads.

`read_uploads` takes the body apart (multipart parts named `file`, or a raw image body), after the
size and count checks. `digitize_uploads` checks the pixels the images' headers declare against
the request's budget (413 before anything is decoded), then decodes small work at once, on the
event loop (a 28x28 PNG: the hot path, where a hop to a thread would cost more than the work), and
large work on the app's pool of threads, so probes and small requests are answered meanwhile.
Four of the fast paths (service/fastpaths.py) are taken here or in `images`, each as `fast` says:
`multipart`, `png`, `mnist` and `inline` (the small work on the loop). One private name is read:
Starlette's list of the files its multipart parser opened, to close the one a truncated body leaves
open (Starlette is pinned in requirements.txt; without the list, that file is closed when collected).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from images import ImageError, ImageTooLarge, Limits, PixelBudget, declared_size, digitize
from service.body import BodyBudget, read_body
from service.errors import BadRequest, UnsupportedMediaType
from service.fastpaths import split_multipart_files
from service.offload import WorkPool
from service.settings import FastPaths, Settings

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/x-ms-bmp")

# Decoding goes to the pool when the request's images declare more pixels than this in all (or
# when a header does not say): a 256x256 upload takes ~5 ms to digitize, a 28x28 one ~0.1 ms.
OFFLOAD_PIXELS = 256 * 256

Upload = tuple[str | None, bytes | bytearray | memoryview]


async def read_uploads(
    request: Request, settings: Settings, bodies: BodyBudget, fast: FastPaths
) -> tuple[list[Upload], int]:
    """The images of the request as (filename, bytes), after the size and count checks, and the
    number of body bytes held against `bodies` for them: the caller releases those when done.

    One 413 code per situation: an image over `max_upload_bytes` is `image_too_large` whether it
    came as a raw body (refused while reading) or as a part (refused by `images`); a multipart body
    over the request's cap is `payload_too_large`, as any other route's body over its cap.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data" and not content_type.startswith("image/"):
        raise UnsupportedMediaType(
            "send multipart/form-data with a 'file' field, or a raw body of type "
            f"{', '.join(IMAGE_TYPES[:5])}; got {content_type or 'no content type'}"
        )
    if content_type.startswith("image/"):  # the body is one image: its cap, and its error past it
        body = await read_body(request, settings.max_upload_bytes, bodies, ImageTooLarge)
    else:
        body = await read_body(request, settings.max_predict_body_bytes, bodies)
    try:
        return await split_uploads(request, content_type, body, settings, fast), len(body)
    except BaseException:
        bodies.release(len(body))
        raise


async def split_uploads(
    request: Request, content_type: str, body: bytes | bytearray, settings: Settings, fast: FastPaths
) -> list[Upload]:
    if content_type.startswith("image/"):
        return [(None, body)]
    if fast.multipart:
        files = split_multipart_files(request.headers["content-type"], body, settings.max_files)
        if files is not None:  # a plain well-formed body; anything else goes to Starlette's parser
            return files
    parser = MultiPartParser(
        request.headers, single_chunk(bytes(body)), max_files=settings.max_files, max_fields=16
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from None
    try:  # every part closed, files in other fields too (each is a spooled temporary file)
        parts = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not parts:
            raise BadRequest("the multipart body has no file in a field named 'file'")
        return [(upload.filename, await upload.read()) for upload in parts]
    finally:
        await form.close()
        # A part cut off by the end of the body is in no field, and Starlette's parser leaves its
        # spooled file open (a ResourceWarning when it is collected). Its list is private (Starlette
        # is pinned); without it, the file is closed when collected, as before.
        for file in getattr(parser, "_files_to_close_on_error", ()):
            file.close()


async def single_chunk(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def digitize_uploads(
    uploads: list[Upload], settings: Settings, pool: WorkPool, fast: FastPaths
) -> np.ndarray:
    """(n, 28, 28) uint8 digits of the uploads; large work on `pool`, small work at once (`inline`)."""
    limits = Limits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    declared, unknown = 0, False  # pixels the headers declare, before anything is decoded
    for _, data in uploads:
        size = declared_size(data)
        if size is None:
            unknown = True  # not an image, or a header this does not read: decoding will say
        elif size[0] * size[1] <= limits.max_pixels:  # a bomb is refused by decoding, from its header
            declared += size[0] * size[1]
    if declared > settings.max_request_pixels:
        refuse_over_budget(uploads, limits, settings.max_request_pixels)
    budget = PixelBudget(settings.max_request_pixels)  # charged by decoding, from the real headers
    if unknown or declared > OFFLOAD_PIXELS or not fast.inline:
        return await pool.run(digitize_all, uploads, limits, budget, fast)
    return digitize_all(uploads, limits, budget, fast)


def refuse_over_budget(uploads: list[Upload], limits: Limits, pixels: int) -> None:
    """Raise the TooManyPixels that charging the declared sizes in turn meets, naming the image."""
    budget = PixelBudget(pixels)
    for i, (filename, data) in enumerate(uploads):
        size = declared_size(data)
        if size is not None and size[0] * size[1] <= limits.max_pixels:
            try:
                budget.charge(*size)
            except ImageError as exc:
                raise name_the_image(exc, i, filename, len(uploads)) from None


def digitize_all(uploads: list[Upload], limits: Limits, budget: PixelBudget, fast: FastPaths) -> np.ndarray:
    """Each upload through `images.digitize`, in turn; an error says which of several images it was."""
    digits = np.empty((len(uploads), 28, 28), dtype=np.uint8)
    for i, (filename, data) in enumerate(uploads):
        try:
            digits[i] = digitize(data, limits, budget, plain_png=fast.png, mnist_as_is=fast.mnist)
        except ImageError as exc:
            raise name_the_image(exc, i, filename, len(uploads)) from None
    return digits


def name_the_image(exc: ImageError, index: int, filename: str | None, count: int) -> ImageError:
    if count > 1:  # say which of several images was refused
        exc.args = (f"image {index + 1} ({filename or 'unnamed'}): {exc}",)
    return exc
