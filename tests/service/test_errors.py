"""The one error table (service/errors.py): every domain error has one status and one code everywhere."""

from __future__ import annotations

import pytest

import images
from registry import CorruptVersion, RegistryError, VersionNotFound
from service.errors import DOMAIN_ERRORS, NotReady, http_answer
from service.jobs.errors import QueueFull, RunnerStopped


def test_an_image_error_is_answered_with_the_code_its_class_carries() -> None:
    for kind in (
        images.ImageTooLarge,
        images.TooManyPixels,
        images.UnsupportedImageType,
        images.NoDigitFound,
        images.BadImageDimensions,
        images.UnreadableImage,
    ):
        answer = http_answer(kind("what was wrong"))
        assert answer is not None
        assert (answer.code, answer.detail) == (kind.code, "what was wrong")
        assert DOMAIN_ERRORS[kind] == (answer.status, kind.code)


def test_the_nearest_listed_class_decides() -> None:
    class Unlisted(CorruptVersion):
        pass

    assert http_answer(VersionNotFound("v9")).status == 404  # type: ignore[union-attr]
    assert http_answer(Unlisted("bad")).code == "corrupt_version"  # type: ignore[union-attr]
    assert http_answer(RegistryError("odd")).code == "registry_error"  # type: ignore[union-attr]
    assert http_answer(QueueFull(1, 4, 1, 4)).status == 409  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("error", "headers"),
    [(RunnerStopped(), {"Retry-After": "5"}), (NotReady("no model", retry_after_s=3), {"Retry-After": "3"})],
)
def test_retry_after_comes_with_the_error(error: Exception, headers: dict[str, str]) -> None:
    answer = http_answer(error)
    assert answer is not None and answer.status == 503 and answer.headers == headers


def test_anything_else_is_not_in_the_table() -> None:
    assert http_answer(ValueError("a bug")) is None
    assert http_answer(KeyError("x")) is None
