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
import logging
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
from requests.adapters import HTTPAdapter

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

# Pacing learnt from 429s when no ceiling is configured (see RequestBudget).
LEARN_WINDOW_SECONDS = 3.0
CRUISE_FACTOR = 0.95
ADJUST_EVERY_SECONDS = 1.0
PROBE_AFTER_SECONDS = 30.0
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

    With no configured ceiling (`rate` 0) the budget learns one: the first 429 sets the pace to the
    rate of answers the server let through, which then climbs until the next 429 marks the server's
    rate; from then on it holds just under that rate and probes above it only after a quiet spell. Without this, every 429 would stop
    all workers for its `Retry-After` and the run would crawl at a fraction of the allowed rate.
    """

    def __init__(self, concurrency: int, rate: float) -> None:
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._lock = threading.Lock()
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_start = 0.0
        self._paused_until = 0.0
        self._adaptive = rate <= 0
        self._successes: deque[float] = deque(maxlen=8192)
        self._ceiling = 0.0
        self._next_adjust = 0.0
        self._probe_after = 0.0

    def record_success(self) -> None:
        if self._adaptive:
            with self._lock:
                self._successes.append(time.monotonic())

    def pause(self, seconds: float) -> None:
        """A 429: everyone waits `seconds`, and an unconfigured budget slows to what the server allows."""
        with self._lock:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + seconds)
            if not self._adaptive:
                return
            if self._interval:
                # Throttled while pacing: that pace is more than the server allows.
                self._ceiling = 1.0 / self._interval
                rate = self._ceiling * CRUISE_FACTOR
            else:
                # The first 429 of an unpaced run: start from the answers the server let through.
                recent = [t for t in self._successes if t > now - LEARN_WINDOW_SECONDS]
                rate = max(1.0, len(recent) / max(now - recent[0], 0.5)) if recent else 1.0
            self._interval = 1.0 / rate
            self._next_adjust = now + seconds + ADJUST_EVERY_SECONDS
            self._probe_after = now + seconds + PROBE_AFTER_SECONDS

    def _adapt(self, now: float) -> None:
        """Climb quickly while the server's rate is unknown, then hold just under it and probe above
        it only after a quiet spell (lock held)."""
        if not self._adaptive or not self._interval or now < self._next_adjust:
            return
        if not self._ceiling:
            self._interval /= 1.15
        elif now >= self._probe_after:
            self._interval /= 1.02
        self._next_adjust = now + ADJUST_EVERY_SECONDS

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
                        self._next_start = now + self._interval
                        break
                time.sleep(min(start - now, 0.5))
        except BaseException:
            self._slots.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


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
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        # The server's clock: the newest envelope `response_time` seen (see `now`).
        self.server_now: datetime | None = None
        self._clock_lock = threading.Lock()
        self._clock_asked = False

    def __repr__(self) -> str:  # never show the key
        return f"CommBoxClient({self.base_url!r})"

    @property
    def _session(self) -> requests.Session:
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

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

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
                envelope = self._get_once(path, params, where)
                self.budget.record_success()
                return envelope
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
        with self.budget:
            self._count("requests")
            started = time.monotonic()
            try:
                response = self._session.get(
                    self.base_url + path,
                    params=params,
                    timeout=(self.connect_timeout, self.request_timeout),
                    stream=True,
                )
                body = self._read_body(response, started)
            except requests.Timeout:
                raise _Retryable("timeout") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
                raise _Retryable(f"connection error ({type(error).__name__})") from None
        self._count("bytes", len(body))
        return self._envelope(response, body, where)

    def _read_body(self, response: requests.Response, started: float) -> bytes:
        """The whole body, or a timeout once the request has taken longer than `request_timeout`
        in total: a body dribbled slowly never trips the per-read timeout on its own."""
        chunks = []
        try:
            for chunk in response.iter_content(chunk_size=256 * 1024):
                chunks.append(chunk)
                if time.monotonic() - started > self.request_timeout:
                    raise requests.Timeout("body slower than request_timeout")
        finally:
            response.close()
        return b"".join(chunks)

    def _envelope(self, response: requests.Response, body: bytes, where: str) -> Envelope:
        status = response.status_code
        if status in RETRY_STATUS:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
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
