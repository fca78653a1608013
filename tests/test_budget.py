"""The request budget every worker shares: rate ceiling, concurrency, a 429 pausing all, rate learning.

Time is a fake clock (the budget reads `time.monotonic` and `time.sleep` of its module) that moves
only when the budget sleeps, so rates are counted on it exactly and no test waits or asserts on the
wall clock. Concurrency is checked with real threads.
"""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace

import pytest

from pipelines.commbox import client as client_module
from pipelines.commbox.client import ADJUST_EVERY_SECONDS, CRUISE_FACTOR, PROBE_AFTER_SECONDS, RequestBudget


class FakeClock:
    """A monotonic clock that a sleep moves forward at once, shared safely by threads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(
        client_module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep, time=time.time)
    )
    return fake


def starts(budget: RequestBudget, clock: FakeClock, count: int) -> list[float]:
    """When each of `count` requests in a row was let through."""
    moments = []
    for _ in range(count):
        with budget:
            moments.append(clock.monotonic())
    return moments


def gaps(moments: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(moments)]


def test_a_configured_rate_spaces_every_start(clock):
    budget = RequestBudget(concurrency=4, rate=20)
    moments = starts(budget, clock, 41)
    assert min(gaps(moments)) == pytest.approx(1 / 20)
    assert moments[-1] - moments[0] == pytest.approx(2.0)  # 41 starts: 40 gaps of 1/20 s


def test_the_rate_holds_across_threads(clock):
    budget = RequestBudget(concurrency=8, rate=50)
    begin = clock.monotonic()

    def worker() -> None:
        for _ in range(25):
            with budget:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 200 starts at most 50 a second: the clock had to move through at least 199 gaps
    assert clock.monotonic() - begin >= 199 / 50 - 1e-6


def test_concurrency_is_never_exceeded():
    budget = RequestBudget(concurrency=3, rate=0)
    lock = threading.Lock()
    full = threading.Event()
    inside = 0
    most = 0

    def worker() -> None:
        nonlocal inside, most
        with budget:
            with lock:
                inside += 1
                most = max(most, inside)
                if inside == 3:
                    full.set()
            full.wait(timeout=5)  # hold the slot until all three are taken, so a fourth would show
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3


def test_a_pause_holds_back_every_worker(clock):
    budget = RequestBudget(concurrency=4, rate=0)
    budget.pause(5.0)
    until = clock.monotonic() + 5.0
    moments: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            with budget, lock:
                moments.append(clock.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(moments) == 12
    assert min(moments) >= until


def test_a_worker_queued_for_a_slot_still_waits_out_a_pause_imposed_meanwhile(clock):
    budget = RequestBudget(concurrency=1, rate=0)
    holding = threading.Event()
    release = threading.Event()
    moments: list[float] = []

    def first() -> None:
        with budget:
            holding.set()
            release.wait(timeout=5)
            budget.pause(5.0)  # its answer was a 429

    def second() -> None:
        with budget:
            moments.append(clock.monotonic())

    one = threading.Thread(target=first)
    one.start()
    holding.wait(timeout=5)
    two = threading.Thread(target=second)
    two.start()
    until = clock.monotonic() + 5.0
    release.set()
    one.join()
    two.join()
    assert moments and moments[0] >= until


def test_a_pause_keeps_a_configured_rate(clock):
    budget = RequestBudget(concurrency=1, rate=10)
    starts(budget, clock, 3)
    budget.pause(2.0)
    assert min(gaps(starts(budget, clock, 10))) == pytest.approx(0.1)


def test_an_unconfigured_budget_learns_the_rate_from_its_first_429_then_holds_under_the_next(clock):
    budget = RequestBudget(concurrency=4, rate=0)
    # the server answers ten a second until it throttles
    for _ in range(31):
        with budget:
            budget.record_success()
        clock.sleep(0.1)
    budget.pause(1.0)
    until = clock.monotonic() + 1.0

    learnt = starts(budget, clock, 10)
    assert learnt[0] >= until
    assert gaps(learnt) == pytest.approx([0.1] * 9)

    # while no ceiling is known the pace climbs every ADJUST_EVERY_SECONDS
    climbing = starts(budget, clock, 40)
    assert gaps(climbing)[-1] < 0.1 / 1.15

    # the next 429 marks the server's rate: hold just under it, no probing for a while
    ceiling = 1 / gaps(climbing)[-1]
    budget.pause(1.0)
    held = starts(
        budget, clock, int((PROBE_AFTER_SECONDS - 2 * ADJUST_EVERY_SECONDS) * ceiling * CRUISE_FACTOR)
    )
    assert gaps(held) == pytest.approx([1 / (ceiling * CRUISE_FACTOR)] * (len(held) - 1))
    probing = starts(budget, clock, int(10 * ceiling))
    assert gaps(probing)[-1] < gaps(held)[-1]
