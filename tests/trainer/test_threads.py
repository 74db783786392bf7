"""BLAS threads re-decided as a run goes: a fake clock plays the machine, nothing sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from threadpoolctl import threadpool_info

from trainer.threads import ThreadTuner, tuned_blas_threads

BIG = (784, 512, 256, 10)  # gains from a second thread on an idle machine
SMALL = (784, 16, 10)  # never does


class Machine:
    """A fake clock, BLAS and helper: a step takes `cost(step, threads)` seconds of fake time,
    times `helper_factor` while the helper runs."""

    def __init__(
        self, cost: Callable[[int, int], float], helper_factor: float = 1.0, refill: float = 0.0
    ) -> None:
        self.cost, self.helper_factor, self.now, self.threads = cost, helper_factor, 0.0, 0
        self.helper = False
        self.steps_on: dict[int, int] = {1: 0, 2: 0}
        self.helped_steps = 0
        # the helper's bank of 12 batches: each step spends one, a running helper makes `refill`
        # per step beside one BLAS thread and none beside two
        self.refill, self.bank = refill, 1.0
        self.step = 0
        self.switches: list[tuple[int, int, float]] = []  # (step, threads now, the bank then)

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.threads = n
        self.switches.append((self.step, n, self.bank))

    def banked(self) -> float:
        return self.bank

    def set_helper(self, on: bool) -> None:
        self.helper = on

    def run(self, tuner: ThreadTuner, steps: int, start: int = 0) -> None:
        for step in range(start, start + steps):
            self.step = step
            tuner.step_started(step)
            self.now += self.cost(step, self.threads) * (self.helper_factor if self.helper else 1)
            self.steps_on[self.threads] += 1
            self.helped_steps += self.helper
            if self.helper:
                made = self.refill if self.threads == 1 else 0.0
                self.bank = min(1.0, max(0.0, self.bank + (made - 1) / 12))
            tuner.step_finished(step)


def tuner_on(machine: Machine, **options: object) -> ThreadTuner:
    return ThreadTuner(clock=machine.clock, set_threads=machine.set_threads, **options)


def test_it_moves_to_two_threads_when_they_are_faster():
    machine = Machine(lambda step, n: {1: 0.010, 2: 0.006}[n])
    with tuner_on(machine) as tuner:
        machine.run(tuner, 2000)
    assert tuner.threads == 2 and machine.threads == 2
    first = tuner.decisions[0]
    assert first.threads == 2 and first.step == 25  # 1 + 12 steps on each count
    assert first.seconds_per_step == {"1": 0.010, "2": 0.006}
    assert machine.steps_on[1] < 0.02 * 2000  # the comparisons on the slower count cost little


def test_it_stays_on_one_thread_and_cuts_a_much_slower_trial_short():
    machine = Machine(lambda step, n: {1: 0.008, 2: 0.240}[n])  # two threads on a busy machine: 30x
    with tuner_on(machine) as tuner:
        machine.run(tuner, 5000)
    assert tuner.threads == 1 and machine.threads == 1
    trials = len(tuner.decisions)
    assert machine.steps_on[2] == trials  # one step each time: longer than twice 12 on one thread
    assert all(d.threads == 1 for d in tuner.decisions)
    wasted = machine.steps_on[2] * (0.240 - 0.008)
    assert wasted < 0.05 * machine.now


def test_a_slow_first_step_or_one_hiccup_does_not_decide():
    def cost(step: int, n: int) -> float:
        if step == 13:  # the first step on two threads: waking them up
            return 0.080
        if step == 17:  # another process took the core for a moment
            return 0.200
        return {1: 0.010, 2: 0.007}[n]

    machine = Machine(cost)
    with tuner_on(machine) as tuner:
        machine.run(tuner, 100)
    assert tuner.decisions[0].threads == 2 and tuner.decisions[0].seconds_per_step == {"1": 0.010, "2": 0.007}


def test_comparisons_grow_rarer_while_the_answer_stays_the_same():
    machine = Machine(lambda step, n: {1: 0.010, 2: 0.007}[n])
    with tuner_on(machine, interval_s=1.0, max_interval_s=8.0) as tuner:
        machine.run(tuner, 6000)  # ~42 s of fake time
    gaps = [b.step - a.step for a, b in itertools.pairwise(tuner.decisions)]
    assert gaps == sorted(gaps)  # each interval at least as long as the last
    assert gaps[-1] > 3.5 * gaps[0]  # 2 s, then 4 s, then 8 s at most
    assert all(d.threads == 2 for d in tuner.decisions)


def test_it_follows_the_load_both_ways():
    # two threads win until step 3000, lose badly until 6000 (another job), then win again
    def cost(step: int, n: int) -> float:
        busy = 3000 <= step < 6000
        return {1: 0.012 if busy else 0.010, 2: 0.050 if busy else 0.007}[n]

    machine = Machine(cost)
    with tuner_on(machine, max_interval_s=20.0) as tuner:
        machine.run(tuner, 3000)
        assert tuner.threads == 2
        machine.run(tuner, 100, start=3000)  # the step time jumps: it compares again at once
        assert tuner.threads == 1
        machine.run(tuner, 2900, start=3100)
        assert tuner.threads == 1
        machine.run(tuner, 3000, start=6000)  # within the longest interval (20 s) it finds two again
        assert tuner.threads == 2
    kept = [d.threads for d in tuner.decisions]
    assert sum(a != b for a, b in itertools.pairwise(kept)) == 2  # no flapping


def test_more_load_on_one_thread_is_no_reason_to_try_two():
    machine = Machine(lambda step, n: {1: 0.008 if step < 500 else 0.016, 2: 0.200}[n])
    with tuner_on(machine) as tuner:
        machine.run(tuner, 1000)
    assert [d.step for d in tuner.decisions if 500 <= d.step < 800] == []  # only the 10 s interval
    assert machine.steps_on[2] == len(tuner.decisions) <= 3


def test_a_small_margin_keeps_the_current_count():
    machine = Machine(lambda step, n: {1: 0.0100, 2: 0.0099}[n])  # 1 % apart: noise, not a reason
    with tuner_on(machine) as tuner:
        machine.run(tuner, 500)
    assert tuner.threads == 1 and all(d.threads == 1 for d in tuner.decisions)


def test_it_keeps_the_helper_where_it_helps_and_drops_it_where_it_hurts():
    for factor, keep in ((0.7, True), (1.8, False)):  # quiet machine / busy machine
        machine = Machine(lambda step, n: {1: 0.010, 2: 0.030}[n], helper_factor=factor)
        with tuner_on(machine) as tuner:
            tuner.helper_control(machine.set_helper)
            assert [str(m) for m in tuner.modes] == ["1+helper", "2+helper", "1", "2"]
            machine.run(tuner, 3000)
        assert tuner.mode.helper is keep and machine.helper is keep and tuner.threads == 1
        assert set(tuner.decisions[0].seconds_per_step) == {"1+helper", "2+helper", "1", "2"}  # all, at once


def test_the_helper_is_kept_beside_two_threads_when_both_pay():
    machine = Machine(lambda step, n: {1: 0.010, 2: 0.006}[n], helper_factor=0.8)
    with tuner_on(machine) as tuner:
        tuner.helper_control(machine.set_helper)
        machine.run(tuner, 3000)
    assert str(tuner.mode) == "2+helper" and machine.helper and machine.threads == 2


def test_beside_two_threads_the_helper_takes_turns_with_the_second_thread():
    """Two threads spend the helper's bank, one refills it: down to one thread only once at most
    one batch is left, back to two once it is half full."""
    machine = Machine(lambda step, n: {1: 0.010, 2: 0.006}[n], helper_factor=0.8, refill=2.5)
    with tuner_on(machine, counts=(2,), interval_s=1e9, max_interval_s=1e9) as tuner:  # one comparison
        tuner.helper_control(machine.set_helper, machine.banked)
        machine.run(tuner, 3000)
    assert str(tuner.mode) == "2+helper" and machine.helper
    decided = tuner.decisions[0].step
    turns = [(n, bank) for step, n, bank in machine.switches if step > decided]
    assert [n for n, _ in turns[:4]] == [1, 2, 1, 2]
    assert all(bank <= 1 / 12 + 1e-9 for n, bank in turns if n == 1)
    assert all(bank >= 0.5 for n, bank in turns if n == 2)
    assert machine.steps_on[1] > 0.2 * 3000 and machine.steps_on[2] > 0.5 * 3000
    before = len(machine.switches)
    with tuner_on(machine, counts=(1,)) as one:  # on one thread: no second thread to take turns with
        one.helper_control(machine.set_helper, machine.banked)
        machine.run(one, 200)
    assert {n for _, n, _ in machine.switches[before:]} == {1}


def test_a_fixed_count_still_decides_the_helper():
    machine = Machine(lambda step, n: {1: 0.010, 2: 0.006}[n], helper_factor=2.0)
    with tuner_on(machine, counts=(2,)) as tuner:
        tuner.helper_control(machine.set_helper)
        machine.run(tuner, 500)
    assert str(tuner.mode) == "2" and machine.steps_on[1] == 0
    lonely = ThreadTuner(counts=(2,), clock=machine.clock, set_threads=machine.set_threads)
    with lonely:
        machine.run(lonely, 100)
    assert lonely.decisions == [] and machine.threads == 2  # one mode: nothing to compare


def test_it_refuses_to_run_outside_its_context_and_bad_counts():
    with pytest.raises(ValueError, match="thread counts must be >= 1"):
        ThreadTuner(counts=(0, 2))
    tuner = ThreadTuner()
    with pytest.raises(RuntimeError, match="context manager"):
        tuner.step_started(0)


def blas_threads_now() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_the_real_limit_is_set_and_restored():
    before = blas_threads_now()
    with ThreadTuner() as tuner:
        assert blas_threads_now() == 1
        tuner.step_started(0)
        tuner.step_finished(0)
    assert blas_threads_now() == before


def test_the_policy_fixes_the_count_when_asked_or_when_a_second_thread_cannot_help():
    before = blas_threads_now()
    with tuned_blas_threads(BIG, 1) as tuner:
        assert tuner.counts == (1,) and blas_threads_now() == 1
    with tuned_blas_threads(SMALL) as tuner:
        assert tuner.counts == (1,) and blas_threads_now() == 1
    with tuned_blas_threads(BIG) as tuner:
        assert tuner.counts in ((1, 2), (1,))  # (1,) on a one-core machine
    assert blas_threads_now() == before


def test_opencv_runs_on_one_thread_while_training_and_gets_its_pool_back():
    import cv2

    before = cv2.getNumThreads()
    with ThreadTuner(counts=(1,)):
        assert cv2.getNumThreads() == 1  # the augmentation's resampling beside BLAS, not against it
    assert cv2.getNumThreads() == before
