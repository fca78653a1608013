"""HTTP for the CommBox API: bearer auth, the response envelope, retries and one shared request budget.

Why not dlt's `RESTClient` / `dlt.sources.helpers.requests.Client`: their tenacity retry runs per thread
and per request, so N parallel fan-out workers each sleep on their own 429 while the others keep
sending, which multiplies the rate the server is throttling; and they clamp a long `Retry-After` to
`request_max_retry_delay` silently, where we must fail loudly before moving any state. Here every
request, first try or retry, takes a slot from one `RequestBudget` (concurrency + rate ceiling +
a pause that a 429 imposes on all workers at once).
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from .coerce import parse_timestamp, to_int
from .settings import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_MAX_RETRY_WAIT_SECONDS,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    RETRY_STATUS,
    STATS_STREAMS,
    SYSTEM_STATUS,
)

logger = logging.getLogger("commbox.client")

# Pacing learnt from what the server says when no ceiling is configured (see RequestBudget).
ANSWER_LOG = 65536  # answers (and starts) remembered for the windows of the bounds
LOOK_BACK_SECONDS = 120.0  # the bounds look this far back
# Shorter spans would bound the rate by the answers' timing jitter. (At the overshoot that ends a
# ramp only spans of about 0.2 s see the rate, the bucket having just emptied; spans from 0.1 s
# there found 193 of 200 req/s on the simulated clock, but 224 on a loaded machine, where the
# simulator took its tokens late and in bunches, and three overshoots followed.)
MIN_SPAN_SECONDS = 0.5
UNDER_CEILING = 0.98  # the floor stays at least this far under the pace that overshot
MIN_WINDOW_SECONDS = 0.5
RAMP_PER_SECOND = 4.0  # from the first 429 until the first bracket closes
BACKOFF_FACTOR = 0.5  # at an overshoot that bounds nothing from below, half the pace
CONFIRM_TOLERANCE = 0.03  # a floor within this of the last one confirms it
PAYBACK = 2.0  # rest until the expected gain is this many times the pause it risks
QUIET_SECONDS = 2.0  # rest at least this long before creeping up; doubles when confirmed
QUIET_AFTER_RAMP_SECONDS = 1.0  # but at most this long on the ramp's loose floor
MAX_QUIET_SECONDS = 600.0
CREEP_SECONDS = 12.0  # time constant of the approach to the ceiling
PROBE_PER_SECOND = 0.005  # past the ceiling
# Past the ceiling this long with no 429 (and long enough for the probe to have spent the burst,
# were the rate still under the ceiling), the ceiling no longer holds: the limit was raised, or a
# resumed bracket was learnt when it was lower. The rate is then found again, by the ramp.
RELEARN_SECONDS = 10.0
ADJUST_SECONDS = 0.25  # the pace changes at most this often
LATE_START_SECONDS = 0.002  # a start this late still keeps the schedule (see RequestBudget.__enter__)
USE_WINDOW_SECONDS = 1.0  # how much of its pace the run uses is counted over this long
USE_STARTS = 10.0  # and over at least this many starts at the pace (fewer cannot tell 90% from 80%)
RAMP_USED = 0.5  # the ramp grows only while the run sends at least this share of its pace
CREEP_USED = 0.9  # and creeps only above this share
MAX_QUOTA_WAIT_SECONDS = 60.0
# A run starts from the pace its pipeline's last run learnt when that is at most this old: a limit
# rarely changes, a wrong one is re-learnt at its first 429, and an older one is learnt afresh.
REMEMBER_SECONDS = 24 * 3600.0
# Throttling can last a while; errors should not. 429s get this many times more attempts.
THROTTLE_ATTEMPTS_FACTOR = 5
USER_AGENT = "commbox-etl/0.1 (+dlt)"


class ApiError(RuntimeError):
    """A request that failed for good. Messages name the endpoint, never the key."""


class AuthError(ApiError):
    pass


class NotFound(ApiError):
    pass


class RetryAfterTooLong(ApiError):
    pass


class BadRequest(ApiError):
    """400: the API did not accept the parameters."""


class NotSupported(ApiError):
    """501: the account does not offer this operation."""


# What an optional endpoint (stats, availability, system status) may answer without failing a run.
OPTIONAL_ENDPOINT_ERRORS = (NotFound, NotSupported, BadRequest)


# The keys of the response envelope; an answer with none of them is not an envelope at all.
ENVELOPE_KEYS = frozenset({"status", "description", "response_time", "data"})


class BadPayload(ApiError):
    """A 200 whose body is not the documented envelope (HTML page, invalid JSON, no `data`)."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled


@dataclass
class Envelope:
    data: Any
    response_time: datetime | None
    description: str | None


class RequestBudget:
    """One budget for every worker: at most `concurrency` requests in flight, at most `rate` starts a
    second, and a pause that any 429 imposes on all of them.

    With no configured ceiling (`rate` 0) the budget finds the server's rate itself (see
    `docs/how-a-run-reads.md`, "How the pace is found"). It sends unpaced until the first 429, so an
    account without a limit is never slowed; the answers let through before that 429 are the
    server's burst. From then on the server's rate is bracketed: it is at least what was answered in
    any recent window less that burst (a bucket cannot hand out more than its burst plus its rate
    times the window), and at most the pace that was throttled. After the first 429 the pace starts
    at the burst per `Retry-After` and doubles every second until a 429 closes the bracket; then it
    cruises at the lower bound and creeps above it only after a quiet spell, which doubles each time
    a 429 confirms the same rate. 429s for requests sent before the budget reacted are the same
    overshoot and teach nothing new. Rate-limit headers, where the server sends them, say the rate
    outright (`RateLimit-Policy`) or that the quota is spent (`RateLimit-Remaining: 0`), which is
    learnt from like a 429 without spending one. A budget can start from what an earlier one on the
    same account learnt (`resume`: the next checkpoint slice, the next run); a bracket that no longer
    holds is found again, at a first overshoot that nothing bounds from below, or after a spell past
    the ceiling with no 429.
    """

    def __init__(self, concurrency: int, rate: float) -> None:
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pace = rate if rate > 0 else 0.0  # starts a second; 0: unpaced
        self._next_start = 0.0
        self._paused_until = 0.0
        self._adaptive = rate <= 0
        self._mode = "free"  # free (no 429 yet), ramp (bracketing the rate), cruise, told (by headers)
        # When each answer the server let through (2xx, 4xx, 5xx: every one took a token) was sent.
        self._answers: deque[float] = deque(maxlen=ANSWER_LOG)
        self._starts: deque[float] = deque(maxlen=ANSWER_LOG)  # when each request went out
        self._started = 0  # starts since the last adjustment
        self._resumed_at = 0.0  # when the last pause ended
        self._burst = 0.0  # the server's burst as the first 429 showed it (an upper bound)
        self._reacted_at = float("-inf")
        self._floor = 0.0  # the server's rate is at least this
        self._ceiling = 0.0  # and at most this (the pace of the last overshoot)
        self._told = 0.0  # the rate the server's RateLimit-Policy states
        self._told_factor = 1.0
        self._last_sent_overshoot = self._first_overshoot = (float("-inf"), 0.0)
        self._first_answers: list[float] = []  # answers sent before the first 429
        self._quiet = QUIET_SECONDS
        self._confirmed = 0
        self._probe_after = 0.0
        self._last_adjust = 0.0
        self._above_since: float | None = None  # since when the pace is past the ceiling
        self.events = 0  # overshoots reacted to (429s or an exhausted quota), for the run's log
        # Issue 16: an optional `shared_budget.SharedBudget` joining the other processes that read
        # the same account: it gives every start, hears every answer and 429, and tells this budget
        # what the others' requests met. None: this process alone.
        self.shared: Any = None

    @property
    def pace(self) -> float:
        """Starts a second the budget allows now (0: unpaced)."""
        return self._pace

    def learnt(self) -> dict[str, float] | None:
        """What this budget found out about the server's rate (floor, ceiling, burst), for a later
        budget on the same account to `resume` from; None while it knows nothing."""
        with self._lock:
            if self._mode != "cruise":
                return None
            return {"floor": self._floor, "ceiling": self._ceiling, "burst": self._burst}

    def resume(self, learnt: dict[str, float] | None) -> None:
        """Start from what an earlier budget on the same account `learnt` (a checkpoint slice, the
        previous run): cruise at its floor instead of finding the rate again. A limit lowered
        since shows as an overshoot like any other, and the bracket follows it."""
        if not self._adaptive or not learnt:
            return
        try:
            floor, ceiling, burst = (float(learnt[key]) for key in ("floor", "ceiling", "burst"))
        except (KeyError, TypeError, ValueError):
            return  # an entry from another version: learn afresh
        if not 0 < floor <= ceiling or burst < 1:
            return
        with self._lock:
            self._mode = "cruise"
            self._pace = self._floor = floor
            self._ceiling = ceiling
            self._burst = burst
            self._quiet = QUIET_SECONDS
            self._probe_after = self._last_adjust = time.monotonic()
            self._above_since = None

    def record_answer(self, sent_at: float | None = None) -> None:
        """The server answered a request sent at `sent_at` (default: this thread's last start)
        without throttling it: it took one of the server's tokens."""
        if self._adaptive:
            sent = self._sent_at(sent_at)
            with self._lock:
                self._answers.append(sent)
                if sent <= self._first_overshoot[0]:
                    self._first_answers.append(sent)
        if self.shared is not None:  # issue 16
            self.shared.answered(self, self._sent_at(sent_at))

    record_success = record_answer

    def record_start(self, sent_at: float) -> None:
        """Issue 16: another process sharing the account's budget sent a request at `sent_at`. The
        pace is used by every process together, and the ramp and the creep grow only while it is
        used, so its starts count as this budget's own."""
        if self._adaptive:
            with self._lock:
                # Heard a little late, so kept in order of sending: the sending rate reads the
                # newest starts back to the first one outside its window.
                index = len(self._starts)
                while index and self._starts[index - 1] > sent_at:
                    index -= 1
                if len(self._starts) == self._starts.maxlen:
                    self._starts.popleft()
                    index = max(0, index - 1)
                self._starts.insert(index, sent_at)
                self._started += 1

    def _sent_at(self, sent_at: float | None) -> float:
        if sent_at is not None:
            return sent_at
        return getattr(self._local, "sent_at", None) or time.monotonic()

    def pause(self, seconds: float, sent_at: float | None = None) -> None:
        """A 429 for a request sent at `sent_at` (default: this thread's last start): everyone waits
        `seconds`, and an unconfigured budget learns from it (once per overshoot)."""
        sent = self._sent_at(sent_at)
        if self.shared is not None:  # issue 16: pause the others, and hear them first
            self.shared.throttled(self, seconds, sent)
        with self._lock:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + seconds)
            if self._adaptive:
                self._overshoot(now, sent, seconds)

    def observe_headers(self, headers: Any, sent_at: float | None = None) -> None:
        """Learn from rate-limit headers (`RateLimit-*`, `X-RateLimit-*`) of an answer, where sent."""
        if not self._adaptive or not headers:
            return
        told = _policy_rate(headers)
        remaining = _header_number(headers, "ratelimit-remaining", "x-ratelimit-remaining")
        with self._lock:
            if told:
                if told != self._told:
                    logger.info("the server states its rate: %.4g requests/s", told)
                    self._told = told
                self._mode = "told"
                self._pace = self._floor = told * self._told_factor
            elif remaining is not None and remaining < 1:
                # The quota is spent: the next request would be throttled. Learn as from a 429,
                # and wait for the reset (or one token at the floor) instead of spending one.
                reset = _reset_seconds(headers)
                now = time.monotonic()
                wait = reset if reset is not None else (1.0 / self._floor if self._floor else 1.0)
                wait = min(wait, MAX_QUOTA_WAIT_SECONDS)
                self._paused_until = max(self._paused_until, now + wait)
                self._overshoot(now, self._sent_at(sent_at), wait)

    def _overshoot(self, now: float, sent: float, wait: float) -> None:
        """The server refused (or is about to refuse) a request sent at `sent`: bracket its rate and
        pick the next pace (lock held)."""
        if sent < self._reacted_at:
            return  # sent before the last reaction took effect: the same overshoot
        self._reacted_at = now
        self.events += 1
        if self._mode == "told":
            # Headers stated the rate and we still overshot (clock drift, jitter): shave a little.
            self._told_factor *= 0.99
            self._pace = self._floor = self._told * self._told_factor
            return
        self._above_since = None
        if self._mode == "free":
            self._first_throttle(now, sent, wait)
            return
        # Requests sent before the first 429 but answered after it took tokens too: the burst
        # bound counts every answer sent before it, known or late. A budget that resumed what an
        # earlier one learnt saw no first 429, and keeps the burst it was given.
        if self._first_answers:
            self._burst = float(max(1, len(self._first_answers)))
        floor = max(self._lower_bound(sent), self._since_last_overshoot(sent))
        if floor <= 0 and not self._first_answers:
            # A resumed bracket overshot before anything bounded the rate from below: it was
            # learnt when the limit was higher. Learn it afresh, as at a first 429.
            self._first_throttle(now, sent, wait)
            return
        if floor > 0 and self._first_answers:
            # Once the rate is bounded from below, the answers before the first 429 bound the
            # burst more tightly: the bucket refilled at that rate meanwhile. One step only: a
            # floor that overstated the rate must not feed itself through a smaller burst.
            burst = _most_above(self._first_answers, self._first_overshoot[0], floor) + 1
            if burst < self._burst:
                self._burst = burst
                floor = max(floor, self._lower_bound(sent))
        ramped = self._mode == "ramp"
        if ramped:
            # The pace when it went out (the ramp grows only while it is used).
            self._pace /= RAMP_PER_SECOND ** max(0.0, now - sent)
        else:
            # What overshot is what was sent, which is less than the pace when the run had fewer
            # requests to make than the pace allowed.
            self._pace = min(self._pace, max(self._sending_rate(sent), floor))
        confirmed = self._floor > 0 and abs(floor - self._floor) <= CONFIRM_TOLERANCE * self._floor
        # The pace that overshot is an upper bound; the floor a lower one. Cruise at the floor,
        # and creep back towards the ceiling, at once while the bracket is wide, after a quiet
        # spell (doubling each time an overshoot confirms the floor) once it is narrow.
        self._ceiling = self._pace
        # A floor is a bound only while the answers' send times stand for when the server took
        # their tokens; at least a little under what overshot, so that a floor that was not one
        # (a server whose queue shifted those times) cannot hold the pace above the rate.
        self._floor = (
            min(floor, self._ceiling * UNDER_CEILING) if floor > 0 else self._ceiling * BACKOFF_FACTOR
        )
        self._pace = self._floor
        self._confirmed = self._confirmed + 1 if confirmed else 0
        # Creeping up costs the next overshoot's pause, less the burst the server hands back after
        # it; it gains about half the bracket for as long as it lasts. Rest until that pays, and
        # longer each time an overshoot only confirmed the floor.
        cost = max(0.0, wait - self._burst / self._floor)
        gain = max(self._ceiling / self._floor - 1.0, 1e-3) / 2
        self._quiet = min(max(QUIET_SECONDS * 2.0**self._confirmed, PAYBACK * cost / gain), MAX_QUIET_SECONDS)
        if ramped:
            # The ramp's floor is loose by construction: it grew the pace fourfold a second, so
            # the spans of at least MIN_SPAN_SECONDS that bound the rate from below hold mostly
            # pace under it (89% of 200 req/s on the simulated clock, 75% with tokens taken
            # 30 ms late). Resting there the PAYBACK rule's seconds lost more than the pause a
            # creep risks; the creep, slow near the ceiling, then brackets the rate tightly.
            self._quiet = min(self._quiet, QUIET_AFTER_RAMP_SECONDS)
        self._mode = "cruise"
        self._started = 0
        self._last_sent_overshoot = (sent, wait)
        self._probe_after = now + wait + self._quiet
        self._last_adjust = self._resumed_at = now + wait
        logger.info(
            "throttled: pacing at %.4g requests/s (the server allows %.4g to %.4g)",
            self._pace,
            self._floor,
            self._ceiling,
        )

    def _first_throttle(self, now: float, sent: float, wait: float) -> None:
        """The first 429 (lock held): start bracketing the rate from the answers before it."""
        # Everything answered before the first 429 came out of the burst (and a little of the
        # rate): an upper bound of the burst, which the windows below subtract.
        # Kept apart: the log forgets them on a long run, and the burst bound below needs them.
        self._first_answers = _recent(self._answers, sent)
        self._burst = float(max(1, len(self._first_answers)))
        self._pace = max(1.0 / max(wait, 1e-3), self._burst / max(wait, 1.0))
        self._mode = "ramp"
        self._last_sent_overshoot = self._first_overshoot = (sent, wait)
        self._next_start = 0.0
        self._started = 0
        self._last_adjust = self._resumed_at = now + wait
        logger.info("throttled: finding the server's rate (burst ≤ %d)", self._burst)

    def _sending_rate(self, sent: float) -> float:
        """Starts a second over a short window before `sent` (lock held)."""
        window = max(MIN_WINDOW_SECONDS, 8.0 / self._pace) if self._pace else MIN_WINDOW_SECONDS
        count = 0
        for t in reversed(self._starts):
            if t <= sent - window:
                break
            count += t <= sent
        return count / window

    def _since_last_overshoot(self, sent: float) -> float:
        """A lower bound from the span since the last overshoot, when the server's bucket was empty:
        it handed out its rate times the span, less what overflowed while it sat full, at most
        the pause less the burst (lock held)."""
        previous, paused = self._last_sent_overshoot
        span = sent - previous
        if span <= paused:
            return 0.0
        count = sum(1 for t in self._answers if previous < t <= sent)
        # "Empty" is less than one token: that one may have been handed out too.
        return max((count - 1) / span, (count - 1 - self._burst) / (span - paused))

    def _lower_bound(self, sent: float) -> float:
        """The most the server can be said to allow for sure: from any moment until `sent`, when its
        bucket was empty, it handed out at most its burst plus its rate times the span, so the
        rate is at least (answers since then - burst) / span; the best such moment is when the
        bucket was last full (lock held)."""
        return _best_rate_above(self._answers, sent, self._burst)

    def _adapt(self, now: float) -> None:
        """Ramp (double every second) while the rate is bracketed from below, creep above the floor
        after a quiet spell (lock held)."""
        if self._mode not in ("ramp", "cruise") or now < self._last_adjust + ADJUST_SECONDS:
            return
        elapsed = now - self._last_adjust
        # Raising a pace the run does not use proves nothing and would let it burst later. Use is
        # counted over the last second (a quarter of a second at a few requests a second holds too
        # few starts to tell), and not before the last pause ended.
        window = min(
            max(USE_WINDOW_SECONDS, USE_STARTS / self._pace if self._pace else 0.0),
            max(ADJUST_SECONDS, now - self._resumed_at),
        )
        since = now - window
        recent = 0
        for moment in reversed(self._starts):
            if moment <= since:
                break
            recent += 1
        # The start asking now counts too: without it, a run that uses its whole pace would read
        # as 90% at ten starts a window.
        used = (recent + 1) / window / self._pace if self._pace else 1.0
        if self._mode == "ramp":
            if used >= RAMP_USED:
                self._pace *= RAMP_PER_SECOND**elapsed
        elif now >= self._probe_after and used >= CREEP_USED:
            # Towards the ceiling, then (the server may allow more by now) slowly past it.
            # (Aimed a little past it, so that it gets there: an approach never arrives.)
            target = self._ceiling * (1 + CONFIRM_TOLERANCE)
            gap = max(0.0, target - self._pace) * min(1.0, elapsed / CREEP_SECONDS)
            self._pace += max(gap, self._pace * PROBE_PER_SECOND * elapsed)
            if self._pace >= self._ceiling:
                self._above_since = self._above_since or now
                # Under a rate at most the ceiling, the probe's excess (growing at PROBE_PER_SECOND
                # of the pace a second) spends the burst within sqrt(2 burst / (probe ceiling));
                # half as long again, and no 429 means the rate is above it.
                spent = math.sqrt(2 * self._burst / (PROBE_PER_SECOND * self._ceiling))
                if now - self._above_since >= max(RELEARN_SECONDS, 1.5 * spent):
                    logger.info(
                        "no 429 above %.4g requests/s: finding the server's rate again", self._ceiling
                    )
                    self._mode = "ramp"
                    self._above_since = None
        self._last_adjust = now
        self._started = 0

    def __enter__(self) -> RequestBudget:
        # The slot first, the pause check last: a worker that passed the check and then queued for
        # a slot would otherwise send after a 429 had paused everyone, ignoring its Retry-After.
        self._slots.acquire()
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    self._adapt(now)
                    start = max(now, self._next_start, self._paused_until)
                    if start <= now:
                        if self._adaptive:
                            self._starts.append(now)
                            self._started += 1
                        # A start a little late (the sleep overslept, the thread waited for the
                        # GIL) keeps its place in the schedule: paced from now, every such delay
                        # was lost for good (a pace of 200 sent 196 a second). Later than that,
                        # the schedule starts again from now: a late start grants no burst.
                        due = self._next_start
                        self._next_start = (due if now - due <= LATE_START_SECONDS else now) + (
                            1.0 / self._pace if self._pace else 0.0
                        )
                        break
                time.sleep(min(start - now, 0.5))
            if self.shared is not None:  # issue 16: then the account's schedule and pause
                now = self.shared.acquire(self)
        except BaseException:
            self._slots.release()
            raise
        self._local.sent_at = now
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


def account_memory(values: dict[str, Any], base_url: str) -> dict[str, Any]:
    """`values` as a run keeps them for the next runs of its pipeline (in its source state): with
    when (Unix seconds) and which account (a digest of the base URL: a pipeline pointed at another
    account must not start from this one's findings). Read back with `recall_memory`."""
    return {**values, "at": round(time.time(), 3), "account": _account_digest(base_url)}


def recall_memory(memory: Any, base_url: str) -> dict[str, Any] | None:
    """An `account_memory` when it belongs to the account at `base_url` and is at most
    `REMEMBER_SECONDS` old; None otherwise (find out afresh)."""
    if not isinstance(memory, dict) or memory.get("account") != _account_digest(base_url):
        return None
    try:
        age = time.time() - float(memory["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if abs(age) > REMEMBER_SECONDS:  # (a state written on another host's clock may be ahead)
        return None
    return memory


def pace_memory(learnt: dict[str, float] | None, base_url: str) -> dict[str, Any] | None:
    """What a run keeps of `RequestBudget.learnt()` for the next run of its pipeline."""
    return account_memory(learnt, base_url) if learnt else None


def recalled_pace(memory: Any, base_url: str) -> dict[str, float] | None:
    """The bracket a `pace_memory` holds, for `RequestBudget.resume`, when it is this account's and
    recent; None otherwise (learn afresh)."""
    memory = recall_memory(memory, base_url)
    if memory is None:
        return None
    return {key: memory[key] for key in ("floor", "ceiling", "burst") if key in memory}


def _account_digest(base_url: str) -> str:
    return hashlib.sha256(base_url.rstrip("/").lower().encode()).hexdigest()[:16]


def _recent(answers: Iterable[float], until: float) -> list[float]:
    """The answers sent within `LOOK_BACK_SECONDS` before `until`, in order of sending."""
    return sorted(t for t in answers if until - LOOK_BACK_SECONDS <= t <= until)


def _best_rate_above(answers: deque[float], until: float, burst: float) -> float:
    """max over moments m at least `MIN_SPAN_SECONDS` before `until` of
    (answers sent in [m, until] - burst) / (until - m); the best m is about when the bucket was
    last full."""
    times = _recent(answers, until)
    best = 0.0
    for index, moment in enumerate(times):
        span = until - moment
        if span < MIN_SPAN_SECONDS:
            break
        best = max(best, (len(times) - index - burst) / span)
    return best


def _most_above(answers: Iterable[float], until: float, rate: float) -> float:
    """max over moments m before `until` of (answers sent in [m, until] - rate * (until - m)):
    the tokens a bucket refilled at `rate` must have held to hand them out."""
    times = _recent(answers, until)
    return max(
        (len(times) - index - rate * (until - moment) for index, moment in enumerate(times)), default=0.0
    )


def _header(headers: Any, *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return str(value)
    return None


def _header_number(headers: Any, *names: str) -> float | None:
    value = _header(headers, *names)
    if value is None:
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)?)", value)
    return float(match.group(1)) if match else None


def _policy_rate(headers: Any) -> float | None:
    """Requests a second a `RateLimit-Policy` states: `10;w=1` (draft 7) or `"p";q=10;w=1` (later)."""
    policy = _header(headers, "ratelimit-policy", "x-ratelimit-policy")
    if not policy:
        return None
    first = policy.split(",")[0]
    quota = re.search(r"(?:^|;)\s*q=(\d+(?:\.\d+)?)", first) or re.match(r"\s*(\d+(?:\.\d+)?)", first)
    window = re.search(r"w=(\d+(?:\.\d+)?)", first)
    if not quota or not window or float(window.group(1)) <= 0:
        return None
    return float(quota.group(1)) / float(window.group(1))


def _reset_seconds(headers: Any) -> float | None:
    """Seconds until the quota resets: a delay, or (above a year of seconds) a Unix time."""
    reset = _header_number(headers, "ratelimit-reset", "x-ratelimit-reset")
    if reset is None:
        return None
    if reset > 365 * 86400:
        return max(0.0, reset - time.time())
    return reset


class CommBoxClient:
    """GETs against the CommBox API returning the envelope's `data`, with retries under one budget."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_requests_per_second: float = DEFAULT_MAX_REQUESTS_PER_SECOND,
        max_retry_wait_seconds: float = DEFAULT_MAX_RETRY_WAIT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Keys read from files and Kubernetes secrets end in a newline; requests would refuse the
        # header and quote it, key included, in its error.
        self._auth = f"Bearer {api_key.strip()}"
        self.budget = RequestBudget(max_concurrency, max_requests_per_second)
        self.max_retry_wait_seconds = max_retry_wait_seconds
        self.max_attempts = max(1, max_attempts)
        self.connect_timeout = connect_timeout_seconds
        self.request_timeout = request_timeout_seconds
        self._pool_size = max(4, max_concurrency)
        self._local = threading.local()
        self._direct: _Direct | None = None
        self._direct_lock = threading.Lock()
        # Fan-out workers queue here before they queue for the budget (see `serve_in_background`).
        self._gate = _Gate(max(1, max_concurrency))
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        # The server's clock: the newest envelope `response_time` seen (see `now`).
        self.server_now: datetime | None = None
        self.server_now_seen_at: float | None = None  # the local time.time() it arrived at
        self._clock_lock = threading.Lock()
        self._clock_asked = False

    def __repr__(self) -> str:  # never show the key
        return f"CommBoxClient({self.base_url!r})"

    @property
    def _session(self) -> requests.Session:
        """This thread's `requests` session: only for a server that redirects or sets cookies (see
        `_send`); every other request goes straight to urllib3's pool."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # Proxies from the environment are resolved once; `trust_env` would re-read the
            # environment and ~/.netrc on every request (a measurable share of the run's CPU).
            session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
            session.trust_env = False
            session.headers.update({"Authorization": self._auth, "Accept": "application/json"})
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    def _open_direct(self) -> _Direct:
        """The connection pool, request target and headers every request of this client uses,
        built once by `requests`' own adapter so that TLS verification (its CA bundle), proxies
        from the environment (resolved once, as the session does) and pool sizing are the ones a
        session would use."""
        with self._direct_lock:
            if self._direct is not None:
                return self._direct
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
            proxies = requests.utils.get_environ_proxies(self.base_url)
            prepared = requests.Request("GET", self.base_url + "/").prepare()
            pool = adapter.get_connection_with_tls_context(prepared, True, proxies)
            adapter.cert_verify(pool, prepared.url, True, None)
            # The path, or the whole URL through a plain-HTTP proxy, without the trailing "/".
            prefix = adapter.request_url(prepared, proxies)[:-1]
            headers = {
                **requests.utils.default_headers(),
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Authorization": self._auth,
            }
            timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.request_timeout)
            self._direct = _Direct(adapter, pool, prefix, headers, timeout)
            return self._direct

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def serve_in_background(self) -> None:
        """Mark the calling thread a fan-out worker (a thread pool's `initializer`).

        Its requests first pass a gate that holds at most `max_concurrency` of them and none while
        a request from an unmarked thread (the walker's list call, which the next batch of work
        waits for) waits for the budget: that request is then next in line as soon as a request in
        flight is answered, instead of behind every queued worker. Measured: the walker's thread
        waited for a budget slot 43% of the extract time and the fan-out ran dry meanwhile
        (bench/README.md "Findings"). The budget still caps requests in flight.
        """
        self._local.background = True

    def now(self) -> datetime:
        """The server's now: the newest `response_time` it has sent, asking `/core/systemstatus` (or,
        where that is missing, `/stats/streams`) when it has sent none yet.

        Windows close relative to the server's clock, so a skewed local clock can neither skip nor
        re-read data. Only when the API sends no `response_time` at all is the local clock used.
        """
        with self._clock_lock:
            if self.server_now is None and not self._clock_asked:
                self._clock_asked = True
                try:
                    self.get(SYSTEM_STATUS)
                except OPTIONAL_ENDPOINT_ERRORS as error:
                    logger.warning("%s; taking the server's clock from the next answer", error)
                    self.get(STATS_STREAMS)
                if self.server_now is None:
                    logger.warning("the API sent no response_time; using the local clock as now")
        return self.server_now or datetime.now(UTC)

    def clock_skew(self) -> float | None:
        """Seconds the server's clock is ahead of this machine's (negative: behind), from the newest
        `response_time`; None before the server has sent one. A run keeps it so that the next run
        can estimate the server's now without asking (see `estimated_now`)."""
        with self._lock:
            if self.server_now is None or self.server_now_seen_at is None:
                return None
            return self.server_now.timestamp() - self.server_now_seen_at

    def estimated_now(self, skew: float | None) -> tuple[datetime, bool]:
        """The server's now without a request: the newest `response_time` when one has come, else
        this machine's clock corrected by `skew` (a previous run's `clock_skew`), else (no skew
        known) `now()`, which asks. The flag says whether the value is an estimate, which the
        caller must check against the first answer (`StreamWalker` does)."""
        if self.server_now is None and skew is not None:
            return datetime.fromtimestamp(time.time() + skew, UTC), True
        return self.now(), False

    def get(self, path: str, params: dict[str, Any] | None = None) -> Envelope:
        """The envelope of GET `path`, retried on 429, 5xx, dropped connections, timeouts and bodies
        that are not the envelope; raises `ApiError` subclasses when it cannot be had."""
        where = f"GET {path}" + (f"?{urlencode(params)}" if params else "")
        attempt = 0
        throttled = 0
        delay = 0.5
        while True:
            attempt += 1
            try:
                return self._get_once(path, params, where)
            except _Retryable as retry:
                if retry.throttled:
                    throttled += 1
                    self._count("throttled")
                    limit = self.max_attempts * THROTTLE_ATTEMPTS_FACTOR
                    spent = throttled
                else:
                    self._count(f"retry: {retry.reason}")
                    limit = self.max_attempts
                    spent = attempt - throttled
                if spent >= limit:
                    raise ApiError(f"{where} failed after {attempt} attempts: {retry.reason}") from None
                wait = retry.retry_after if retry.retry_after is not None else delay
                if wait > self.max_retry_wait_seconds:
                    raise RetryAfterTooLong(
                        f"{where}: the server asked to wait {wait:.0f}s, more than "
                        f"max_retry_wait_seconds={self.max_retry_wait_seconds:.0f}"
                    ) from None
                if retry.throttled:
                    # Everyone waits: parallel workers must not keep hitting a throttled server.
                    self.budget.pause(wait)
                else:
                    time.sleep(wait)
                delay = min(delay * 2, max(self.max_retry_wait_seconds, 0.5))
                logger.debug("retrying %s after %s (%.1fs)", where, retry.reason, wait)

    def _get_once(self, path: str, params: dict[str, Any] | None, where: str) -> Envelope:
        background = getattr(self._local, "background", False)
        self._gate.enter(background)
        try:
            with self.budget:
                if not background:
                    self._gate.served()
                    background = None  # served: nothing left to undo
                self._count("requests")
                status, headers, body = self._send(path, params, time.monotonic())
                # Whatever the server answered (but a 429) took one of its tokens: the budget counts
                # it to bracket the server's rate, and reads its rate-limit headers where it sends them.
                if status != 429:
                    self.budget.record_answer()
                self.budget.observe_headers(headers)
        finally:
            if background:
                self._gate.leave()
            elif background is False:
                self._gate.served()  # the budget refused before serving
        self._count("bytes", len(body))
        return self._envelope(status, headers, body, where)

    def _send(self, path: str, params: dict[str, Any] | None, started: float) -> tuple[int, Any, bytes]:
        """One GET: the status, headers and whole body, or `_Retryable` for a timeout or a broken
        connection (named as `requests` names them).

        Straight to urllib3's pool: `requests`' per-call work (preparing the request, merging
        settings, hooks, cookies) cost more CPU than the HTTP itself (bench/README.md "Findings").
        A server that redirects or sets cookies is read through `requests` sessions from then on,
        which follow redirects (dropping the key on another host) and keep cookies as before.
        """
        direct = self._direct or self._open_direct()
        if direct.via_requests:
            return self._send_via_requests(path, params, started)
        url = direct.prefix + path
        if params:
            url += "?" + urlencode({key: value for key, value in params.items() if value is not None})
        try:
            response = direct.pool.urlopen(
                "GET",
                url,
                headers=direct.headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=direct.timeout,
            )
        except ConnectTimeoutError as error:
            if isinstance(error, NewConnectionError):
                raise _Retryable("connection error (ConnectionError)") from None
            raise _Retryable("timeout") from None
        except ReadTimeoutError:
            raise _Retryable("timeout") from None
        except (ProxyError, SSLError) as error:
            raise _Retryable(f"connection error ({type(error).__name__})") from None
        except (ProtocolError, ClosedPoolError, OSError):
            raise _Retryable("connection error (ConnectionError)") from None
        if (response.status in _REDIRECTS and "location" in response.headers) or (
            "set-cookie" in response.headers
        ):
            response.drain_conn()
            response.release_conn()
            direct.via_requests = True
            logger.info("the server redirects or sets cookies: reading it through requests sessions")
            return self._send_via_requests(path, params, started)
        return response.status, response.headers, self._read_body(response, started)

    def _send_via_requests(
        self, path: str, params: dict[str, Any] | None, started: float
    ) -> tuple[int, Any, bytes]:
        try:
            response = self._session.get(
                self.base_url + path,
                params=params,
                timeout=(self.connect_timeout, self.request_timeout),
                stream=True,
            )
            chunks = []
            try:
                for chunk in response.iter_content(chunk_size=256 * 1024):
                    chunks.append(chunk)
                    if time.monotonic() - started > self.request_timeout:
                        raise requests.Timeout("body slower than request_timeout")
            finally:
                response.close()
        except requests.Timeout:
            raise _Retryable("timeout") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            raise _Retryable(f"connection error ({type(error).__name__})") from None
        return response.status_code, response.headers, b"".join(chunks)

    def _read_body(self, response: urllib3.BaseHTTPResponse, started: float) -> bytes:
        """The whole body, or a timeout once the request has taken longer than `request_timeout`
        in total: a body dribbled slowly never trips the per-read timeout on its own. A body read
        whole leaves its connection to the pool; one that broke off closes it."""
        chunks = []
        whole = False
        try:
            for chunk in response.stream(256 * 1024, decode_content=True):
                chunks.append(chunk)
                if time.monotonic() - started > self.request_timeout:
                    raise _Retryable("timeout")
            whole = True
        except ReadTimeoutError:
            raise _Retryable("connection error (ConnectionError)") from None
        except SSLError:
            raise _Retryable("connection error (SSLError)") from None
        except ProtocolError:
            raise _Retryable("connection error (ChunkedEncodingError)") from None
        except DecodeError as error:
            raise requests.exceptions.ContentDecodingError(error) from None
        finally:
            if not whole:
                response.close()
            response.release_conn()
        return b"".join(chunks)

    def _envelope(self, status: int, headers: Any, body: bytes, where: str) -> Envelope:
        if status in RETRY_STATUS:
            retry_after = _retry_after_seconds(headers.get("Retry-After"))
            raise _Retryable(f"HTTP {status}", retry_after, throttled=status == 429)
        payload = self._parse(body, status, where)
        description = payload.get("description") if isinstance(payload, dict) else None
        if status == 401:
            raise AuthError(f"{where}: the API key was rejected (401 {description or 'Unauthorized'})")
        if status == 404:
            raise NotFound(f"{where}: not found (404)")
        if status == 400:
            raise BadRequest(f"{where}: HTTP 400 {description or 'Bad Request'}".rstrip())
        if status == 501:
            raise NotSupported(f"{where}: HTTP 501 {description or 'Not Implemented'}".rstrip())
        if status >= 400:
            raise ApiError(f"{where}: HTTP {status} {description or ''}".rstrip())
        if not isinstance(payload, dict) or not ENVELOPE_KEYS & payload.keys():
            raise _Retryable("a 200 without the response envelope")
        # An API that leaves out null fields sends no `data` where it has none (the vendor's own
        # `/core/systemstatus` example has `data: null`): that is an envelope with no data, and the
        # caller decides whether its endpoint allows it.
        envelope_status = _envelope_status(payload.get("status"))
        if envelope_status in RETRY_STATUS:
            raise _Retryable(f"envelope status {envelope_status}", throttled=envelope_status == 429)
        if envelope_status is not None and envelope_status >= 400:
            if envelope_status == 401:
                raise AuthError(f"{where}: the API key was rejected ({description or 'Unauthorized'})")
            if envelope_status == 404:
                raise NotFound(f"{where}: not found")
            if envelope_status == 400:
                raise BadRequest(f"{where}: envelope status 400 {description or ''}".rstrip())
            raise ApiError(f"{where}: envelope status {envelope_status} {description or ''}".rstrip())
        try:
            response_time = parse_timestamp(payload.get("response_time"))
        except ValueError:
            response_time = None
        if response_time is not None:
            with self._lock:
                if self.server_now is None or response_time > self.server_now:
                    self.server_now = response_time
                    self.server_now_seen_at = time.time()
        return Envelope(payload.get("data"), response_time, description)

    def _parse(self, body: bytes, status: int, where: str) -> Any:
        if not body.strip():
            if status >= 400:
                return {}
            raise _Retryable("an empty body")
        if b"\\u0000" in body:
            # PostgreSQL text cannot hold NUL and COPY would fail the whole package: replace it.
            body, replaced = _NUL_ESCAPE.subn(rb"\1\\ufffd", body)
            if replaced:
                self._count("warning: NUL characters replaced", replaced)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # Broken bytes inside an otherwise valid document (a mis-encoded e-mail, say): keep the
            # document, replace what cannot be decoded, and say so.
            try:
                payload = orjson.loads(body.decode("utf-8", errors="replace"))
            except orjson.JSONDecodeError:
                pass
            else:
                self._count("warning: invalid UTF-8 replaced")
                logger.warning("%s: response had invalid UTF-8; replaced with U+FFFD", where)
                return payload
        if status >= 400:
            return {}
        kind = "an HTML page" if body.lstrip()[:1] == b"<" else "invalid JSON"
        raise _Retryable(f"{kind} instead of the response envelope")


class _Gate:
    """Where fan-out workers queue before the budget (see `CommBoxClient.serve_in_background`): at
    most `size` of them past it, and none let past while a foreground request waits."""

    def __init__(self, size: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._size = size
        self._past = 0
        self._foreground = 0

    def enter(self, background: bool) -> None:
        with self._cond:
            if not background:
                self._foreground += 1
                return
            while self._foreground or self._past >= self._size:
                self._cond.wait()
            self._past += 1

    def served(self) -> None:
        """A foreground request has its budget slot (or gave up waiting): the workers may go on."""
        with self._cond:
            self._foreground -= 1
            if not self._foreground:
                self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self._past -= 1
            self._cond.notify()


@dataclass
class _Direct:
    """How `CommBoxClient` sends: one urllib3 pool shared by its threads (see `_open_direct`)."""

    adapter: HTTPAdapter  # owns the pool (and a proxy manager, through a proxy)
    pool: urllib3.HTTPConnectionPool
    prefix: str  # what goes before an endpoint's path in the request target
    headers: dict[str, str] = field(repr=False)  # the key is in them
    timeout: urllib3.Timeout = field(repr=False)
    via_requests: bool = False  # the server redirects or sets cookies: use `requests` from now on


_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# `\u0000` preceded by an even number of backslashes: an escaped NUL, not the text "\u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        return float(header)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(header)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _envelope_status(value: Any) -> int | None:
    try:
        return to_int(value)
    except ValueError:
        return None
