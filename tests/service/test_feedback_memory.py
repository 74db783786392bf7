"""What a serving process remembers for feedback (bounded by count and time) and its rate limit."""

from __future__ import annotations

import tracemalloc

import numpy as np

from service.feedback import AnswerIds, ClientRate, RecentAnswers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_forgotten_oldest_first_after_the_ttl_and_once_taken() -> None:
    clock = Clock()
    recent = RecentAnswers(capacity=2, ttl_s=10, clock=clock)
    digits = np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28) % 251
    for row, answer_id in enumerate(("a", "b", "c")):
        recent.keep(answer_id, digits, row, "v0001", row, 0.5)
    assert len(recent) == 2 and recent.take("a") is None  # beyond the capacity
    taken = recent.take("b")
    assert taken is not None and taken.digit.tolist() == digits[1].tolist() and taken.answer == 1
    assert recent.take("b") is None  # once
    clock.now = 10.5
    assert recent.take("c") is None  # expired
    off = RecentAnswers(capacity=0, ttl_s=10)
    off.keep("a", digits, 0, "v0001", 0, 0.5)
    assert len(off) == 0


def test_answer_ids_are_distinct_random_hex() -> None:
    new_id = AnswerIds()
    ids = [new_id() for _ in range(3 * AnswerIds.BATCH)]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_the_rate_refills_over_a_minute_and_forgets_clients_beyond_its_table() -> None:
    clock = Clock()
    rate = ClientRate(per_minute=2, max_clients=2, clock=clock)
    assert [rate.wait_s("x") for _ in range(3)] == [0, 0, 30.0]
    clock.now = 30.0
    assert rate.wait_s("x") == 0 and rate.wait_s("x") > 0
    rate.wait_s("y")
    rate.wait_s("z")  # x is dropped: the table holds two clients
    assert rate.wait_s("x") == 0


def test_the_recent_answers_take_about_a_kib_each_and_nothing_more_as_they_turn_over() -> None:
    """A worker's memory for them is fixed (README: 4,096 answers, ~4 MiB): the digits as bytes,
    not as the network's floats (4x as much), and keeping answer after answer adds nothing."""
    digits = np.full((1, 28, 28), 255, np.uint8)
    new_id = AnswerIds()
    tracemalloc.start()
    try:
        recent = RecentAnswers(capacity=1024, ttl_s=60)
        for _ in range(2 * 1024):  # full, then turned over once (the id table settles at its size)
            recent.keep(new_id(), digits, 0, "v0001", 7, 0.5)
        full = tracemalloc.get_traced_memory()[0]
        for _ in range(4 * 1024):
            recent.keep(new_id(), digits, 0, "v0001", 7, 0.5)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(recent) == 1024
    assert full < 1024 * 1280  # 784 bytes of pixels, the id, the slot: < 1.25 KiB an answer
    assert after - full < 4 * 1024
