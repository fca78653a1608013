"""The simulated clock: starts at the configured ``end`` and runs with real time (unless frozen)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SimClock:
    """Simulated UTC clock.

    ``now()`` = start + real seconds elapsed since construction (when running) + every ``advance``.
    Time is kept in integer microseconds so that served timestamps and ground truth agree exactly.
    """

    def __init__(self, start: datetime, running: bool = True) -> None:
        self._start_us = to_us(start)
        self._offset_us = 0
        self._running = running
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def now_us(self) -> int:
        elapsed = int((time.monotonic() - self._t0) * 1_000_000) if self._running else 0
        return self._start_us + self._offset_us + elapsed

    def now(self) -> datetime:
        return from_us(self.now_us())

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset_us += round(seconds * 1_000_000)
        return self.now()

    def set_running(self, running: bool) -> None:
        with self._lock:
            now = self.now_us()
            self._running = running
            self._t0 = time.monotonic()
            self._offset_us = now - self._start_us


def to_us(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
