"""A small in-process CommBox account for unit tests of the read machinery: no HTTP, no dlt.

`FakeAccount.get(path, params)` answers `GET /streams/{id}/objects` the way the list endpoint does
(it is the `client` a `WindowReader` is given): it filters a stream's conversations by the window on
`updatedTime` or `createdTime` per `timeFilter`, sorts them by `order`/`sort`, caps and pages them,
and returns an `Envelope`. Its switches are the legal readings of the loosely documented paging that
real accounts differ in (the simulator has the same ones, over HTTP); every request is counted and
its parameters kept, so tests can bound and inspect what the reader asked.
"""

from __future__ import annotations

import functools
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.commbox.client import BadRequest, Envelope

MICROS = 1_000_000
# The API's own default when `order`/`sort` are not sent.
DEFAULT_ORDER, DEFAULT_SORT = "createdtime", "desc"
TIME_FIELDS = {"updatedtime": "updated", "createdtime": "created"}


@dataclass
class Conversation:
    """One conversation as the fake keeps it: times in unix microseconds."""

    id: int
    stream: int
    created: int
    updated: int
    status: int = 1

    def sort_key(self, order: str) -> tuple[int, int]:
        """Where this conversation falls in a listing by `order`. Closed and priority times are not
        modelled: a fixed scramble of the id stands in, so those orders list a second in a
        different sequence than the time orders do (which is why the reader asks for them)."""
        if order in TIME_FIELDS:
            return getattr(self, TIME_FIELDS[order]), self.id
        salt = 7919 if order == "closedtime" else 104729
        return (self.id * salt) % 1_000_003, self.id

    def as_item(self) -> dict[str, Any]:
        return {
            "objectId": self.id,
            "streamId": self.stream,
            "createdTime": iso(self.created),
            "updatedTime": iso(self.updated),
            "status": self.status,
        }


@functools.lru_cache(maxsize=65536)
def iso(micros: int) -> str:
    """The API's timestamp form: seven fractional digits and Z."""
    moment = datetime.fromtimestamp(micros // MICROS, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{micros % MICROS:06d}0Z"


@dataclass
class FakeAccount:
    """The list endpoint of one account, with the paging quirks real accounts show.

    Switches:
        page_base: the first page's number (0 or 1).
        lenient: a `pageNumber` below `page_base` is answered as the first page (else 400).
        overlap: page n starts `n * overlap` items before the previous page ended.
        max_page_size: `pageSize` above it is clamped silently, or refused (400) if
            `strict_page_size`.
        window_cap: a window lists at most this many conversations in all (after sorting), paged
            within them.
        inclusive_end: `unixEndTime` is inclusive (the whole end second), else half-open.
        unpageable: `pageNumber` and `status` are ignored: always the first page, every status.
        ignore_sort: `order` and `sort` are ignored: always listed by id.
        ignore_time_filter: `timeFilter` is ignored: the window is on `createdTime`.
        time_filter_values: the only `timeFilter` spellings accepted (400 otherwise); None accepts
            any spelling of updated/created.
        refuse_order: any `order` or `sort` parameter is refused (400).
    """

    page_base: int = 1
    lenient: bool = False
    overlap: int = 0
    max_page_size: int = 100
    strict_page_size: bool = False
    window_cap: int | None = None
    inclusive_end: bool = False
    unpageable: bool = False
    ignore_sort: bool = False
    ignore_time_filter: bool = False
    time_filter_values: tuple[str, ...] | None = None
    refuse_order: bool = False
    server_now: datetime | None = None
    conversations: dict[int, Conversation] = field(default_factory=dict)
    requests: int = 0
    asked: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add(self, stream: int, second: int, count: int = 1, *, statuses: tuple[int, ...] = (1,)) -> list[int]:
        """`count` new conversations created and updated within `second` (spread over it, as a bulk
        change is), their statuses taken in turn from `statuses`; returns their ids."""
        ids = []
        for n in range(count):
            at = second * MICROS + n * (MICROS // max(count, 1))
            conversation = Conversation(next(self._ids), stream, at, at, statuses[n % len(statuses)])
            self.conversations[conversation.id] = conversation
            ids.append(conversation.id)
        return ids

    def touch(self, ids: list[int], second: int) -> None:
        """Update the conversations `ids` within `second` (spread over it)."""
        for n, key in enumerate(ids):
            self.conversations[key].updated = second * MICROS + n * (MICROS // max(len(ids), 1))

    def truth(self, stream: int, start: int, end: int, mode: str = "updated") -> set[int]:
        """The ids of the stream whose `mode` time lies in the seconds [start, end)."""
        return {
            c.id
            for c in self.conversations.values()
            if c.stream == stream and start * MICROS <= getattr(c, mode) < end * MICROS
        }

    def now(self) -> datetime | None:
        """The server's clock, as `CommBoxClient.now` asks for it."""
        self.requests += 1
        return self.server_now

    def get(self, path: str, params: dict[str, Any]) -> Envelope:
        """The envelope the list endpoint answers for `params`; `BadRequest` for what it refuses."""
        self.requests += 1
        self.asked.append(dict(params))
        stream = int(path.split("/")[2])
        time_filter = params.get("timeFilter")
        if self.time_filter_values is not None and time_filter not in (None, *self.time_filter_values):
            raise BadRequest(f"timeFilter must be one of {self.time_filter_values}")
        if self.refuse_order and ("order" in params or "sort" in params):
            raise BadRequest("unknown parameter order")
        size = int(params.get("pageSize", 100))
        if self.strict_page_size and size > self.max_page_size:
            raise BadRequest(f"pageSize must be at most {self.max_page_size}")
        size = min(size, self.max_page_size)
        page = int(params.get("pageNumber", self.page_base))
        if page < self.page_base:
            if not self.lenient:
                raise BadRequest(f"pageNumber starts at {self.page_base}")
            page = self.page_base
        if self.unpageable:
            page = self.page_base
        on = "updated" if str(time_filter).lower().startswith("updated") else "created"
        if self.ignore_time_filter:
            on = "created"
        low = int(params["unixStartTime"]) * MICROS
        high = (int(params["unixEndTime"]) + (1 if self.inclusive_end else 0)) * MICROS
        statuses = None
        if params.get("status") and not self.unpageable:
            statuses = {int(s) for s in str(params["status"]).split(",")}
        chosen = [
            c
            for c in self.conversations.values()
            if c.stream == stream
            and low <= getattr(c, on) < high
            and (statuses is None or c.status in statuses)
        ]
        if self.ignore_sort:
            chosen.sort(key=lambda c: c.id)
        else:
            order = str(params.get("order", DEFAULT_ORDER)).lower()
            descending = str(params.get("sort", DEFAULT_SORT)).lower() == "desc"
            chosen.sort(key=lambda c: c.sort_key(order), reverse=descending)
        if self.window_cap is not None:
            chosen = chosen[: self.window_cap]
        offset = (page - self.page_base) * max(1, size - self.overlap)
        items = [c.as_item() for c in chosen[offset : offset + size]]
        return Envelope(items, self.server_now, "Success")


class FakeClock:
    """A monotonic clock that a sleep moves forward at once, shared safely by threads (budgets and
    the client read it instead of `time`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)
