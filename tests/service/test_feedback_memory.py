"""What a serving process remembers for feedback (bounded by count and time) and its rate limit."""

from __future__ import annotations

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
