"""Read every conversation of a stream in a time range, however the account pages, caps and bounds.

`GET /streams/{id}/objects` answers at most 100 objects a call ("for larger data additional calls are
required") and its paging is loosely documented: accounts differ in the first page number, in whether
`unixEndTime` is inclusive, in the order they list, and some cap a window below `pageSize`. The reader
therefore never relies on paging for completeness: a window that comes back full (or as full as the
largest answer seen so far) is split in two, recursively. Adjacent windows share their boundary second
so that both inclusive and half-open servers are covered; duplicates are dropped by id. Only a single
second that still comes back full is paged through, and if that cannot be shown complete the read
fails loudly rather than truncate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .client import ApiError, BadRequest, CommBoxClient
from .normalise import Warnings, as_list, first, parse_timestamp, to_int
from .settings import (
    MAX_PAGES_PER_SECOND,
    MIN_NEGOTIATED_PAGE_SIZE,
    MIN_SUSPECT_COUNT,
    MODE_CREATED,
    MODE_UPDATED,
    OBJECT_FIELDS,
    STREAM_OBJECTS,
    TIME_FILTER_PARAM,
    TIME_FILTER_SPELLINGS,
    ObjectStatus,
)

logger = logging.getLogger("commbox.windows")

# A list response that looks damaged is read this many times before it is kept or refused.
LIST_READ_ATTEMPTS = 3
# An object updated this far after the server's now is taken for a garbled timestamp.
FUTURE_TOLERANCE_SECONDS = 86400


class IncompleteWindow(ApiError):
    """A window that could not be shown complete: the run stops and the stored state stays put."""


@dataclass
class CapTracker:
    """What the account's list endpoint turned out to accept and return, shared by all streams.

    `largest`: the most objects a single list call has returned. Some accounts cap a window below the
    requested `pageSize`, so a count that reaches the largest seen so far is treated as possibly
    capped and verified by a split; honest windows below it cost nothing extra. Once a split shows
    the cap, `page_size` becomes it.
    `page_size`, `time_filter` and `ordered`: the parameters negotiated after 400 answers (see
    `WindowReader._list`).
    """

    page_size: int
    largest: int = 0
    time_filter: dict[str, int] = field(default_factory=lambda: {MODE_UPDATED: 0, MODE_CREATED: 0})
    ordered: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def negotiate(self, mode: str, error: BadRequest) -> None:
        """Give up one parameter the API may not accept, least useful first; re-raise when none is left."""
        with self._lock:
            if self.ordered:
                self.ordered = False
                change = "without order/sort"
            elif self.time_filter[mode] + 1 < len(TIME_FILTER_SPELLINGS[mode]):
                self.time_filter[mode] += 1
                change = f"timeFilter={TIME_FILTER_SPELLINGS[mode][self.time_filter[mode]]}"
            elif self.page_size > MIN_NEGOTIATED_PAGE_SIZE:
                self.page_size = max(MIN_NEGOTIATED_PAGE_SIZE, self.page_size // 2)
                self.largest = min(self.largest, self.page_size)
                change = f"pageSize={self.page_size}"
            else:
                raise error
        logger.warning("the objects endpoint refused a request (%s); retrying %s", error, change)

    def is_suspect(self, count: int) -> bool:
        """Whether `count` objects may be a truncated answer. The account's cap is at least every count
        it has returned, so only a count reaching the largest so far (or the cap, once shown) can be
        one; a window that merely held that many is verified by one split."""
        with self._lock:
            suspect = count >= self.page_size or (count >= MIN_SUSPECT_COUNT and count >= self.largest)
            self.largest = max(self.largest, min(count, self.page_size))
            return suspect

    def record_split(self, count: int, found: int) -> None:
        """A split showed the window held more than the `count` objects answered: below `pageSize`,
        that is the account's cap. From then on only answers that reach it are split."""
        with self._lock:
            if count < self.page_size and found > count:
                logger.warning(
                    "the objects endpoint returned %s objects for a window that holds %s: the account caps "
                    "answers below pageSize=%s; asking for %s from now on and splitting full windows",
                    count,
                    found,
                    self.page_size,
                    count,
                )
                self.page_size = count


def object_id_of(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return first(raw, OBJECT_FIELDS["object_id"])
    return None


def _epoch_of(raw: Mapping[str, Any], names: tuple[str, ...]) -> float | None:
    try:
        value = parse_timestamp(first(raw, names))
    except ValueError:
        return None
    return value.timestamp() if value is not None else None


def updated_epoch(raw: Mapping[str, Any]) -> float | None:
    return _epoch_of(raw, OBJECT_FIELDS["updated_at"])


def created_epoch(raw: Mapping[str, Any]) -> float | None:
    return _epoch_of(raw, OBJECT_FIELDS["created_at"])


class WindowReader:
    """Lists the conversations of one stream window by window, completely."""

    def __init__(
        self,
        client: CommBoxClient,
        stream_id: int,
        *,
        caps: CapTracker,
        warnings: Warnings,
    ) -> None:
        self.client = client
        self.stream_id = stream_id
        self.caps = caps
        self.warnings = warnings
        self.requests = 0

    def read(self, start: int, end: int, mode: str) -> list[Any]:
        """Every object of the stream whose `mode` time lies in [start, end], each id once.

        Items without a usable id are returned as they are (the caller keeps them raw).
        """
        seen: dict[Any, Any] = {}
        unkeyed: list[Any] = []
        self._read_into(start, end, mode, seen, unkeyed)
        return [*seen.values(), *unkeyed]

    def _read_into(self, start: int, end: int, mode: str, seen: dict[Any, Any], unkeyed: list[Any]) -> None:
        items = self._list(start, end, mode)
        if not self.caps.is_suspect(len(items)):
            self._keep(items, seen, unkeyed)
            return
        if end - start > 1:
            middle = (start + end) // 2
            before = len(seen)
            self._read_into(start, middle, mode, seen, unkeyed)
            self._read_into(middle, end, mode, seen, unkeyed)
            self.caps.record_split(len(items), len(seen) - before)
            return
        self._keep(items, seen, unkeyed)
        self._read_full_second(start, end, mode, seen, unkeyed, len(items))

    def _keep(self, items: list[Any], seen: dict[Any, Any], unkeyed: list[Any]) -> None:
        for item in items:
            key = object_id_of(item)
            if key is None or isinstance(key, (dict, list)):
                unkeyed.append(item)
                continue
            key = str(key).strip().rstrip(",")
            previous = seen.get(key)
            if previous is not None:
                self.warnings["objects: same conversation listed twice, kept the newest"] += 1
                if (updated_epoch(item) or 0) < (updated_epoch(previous) or 0):
                    continue
            seen[key] = item

    def _read_full_second(
        self,
        start: int,
        end: int,
        mode: str,
        seen: dict[Any, Any],
        unkeyed: list[Any],
        first_count: int,
    ) -> None:
        """Page through one second that holds a full page; then partition it by status to check."""
        logger.warning(
            "stream %s: the second %s alone holds a full page (%s objects); paging through it",
            self.stream_id,
            start,
            first_count,
        )
        self.warnings["objects: single second held a full page, paged through"] += 1
        before = len(seen)
        stale = 0
        complete = False
        # A short page proves the end only once paging has shown it works here (a later page brought
        # new conversations): an account that caps a window answers later pages with nothing too.
        paging_works = False
        # The first page is 0 on some accounts and 1 on others; asking both costs one request and
        # duplicates are dropped by id, so it does not matter which.
        for page in range(0, MAX_PAGES_PER_SECOND):
            try:
                items = self._list(start, end, mode, pageNumber=page)
            except ApiError as error:
                if page == 0:
                    logger.debug("stream %s: pageNumber=0 refused (%s)", self.stream_id, error)
                    continue
                raise
            new = sum(1 for item in items if str(object_id_of(item)).strip().rstrip(",") not in seen)
            self._keep(items, seen, unkeyed)
            paging_works = paging_works or new > 0
            if len(items) < min(first_count, self.page_size) and page >= 1:
                complete = paging_works
                break
            stale = 0 if new else stale + 1
            if stale >= 2:
                break
        after_paging = len(seen)
        by_status = self._read_by_status(start, end, mode, seen, unkeyed)
        if len(seen) > after_paging:
            # The status partition found conversations the pages did not show: paging is not to be
            # trusted here, only a partition whose every part came back below the cap is.
            complete = by_status
        if not (complete or by_status):
            raise IncompleteWindow(
                f"stream {self.stream_id}: more than {first_count} conversations in the second "
                f"{start} and the API neither pages nor filters them further; refusing to truncate"
            )
        logger.info(
            "stream %s: second %s read completely: %s objects", self.stream_id, start, len(seen) - before
        )

    def _read_by_status(
        self, start: int, end: int, mode: str, seen: dict[Any, Any], unkeyed: list[Any]
    ) -> bool:
        """Partition the second by status; True if every part came back below the cap."""
        all_below = True
        for status in ObjectStatus:
            items = self._list(start, end, mode, status=str(int(status)))
            self._keep(items, seen, unkeyed)
            if len(items) >= min(self.page_size, max(self.caps.largest, MIN_SUSPECT_COUNT)):
                all_below = False
        return all_below

    @property
    def page_size(self) -> int:
        return self.caps.page_size

    def _params(self, start: int, end: int, mode: str, extra: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"unixStartTime": start, "unixEndTime": end}
        time_filter = TIME_FILTER_SPELLINGS[mode][self.caps.time_filter[mode]]
        if time_filter is not None:
            params["timeFilter"] = time_filter
        if self.caps.ordered:
            params.update(order=TIME_FILTER_PARAM[mode], sort="asc")
        params.update(pageSize=self.caps.page_size, includeChilds="true", **extra)
        return params

    def _list(self, start: int, end: int, mode: str, **extra: Any) -> list[Any]:
        """The items of one list call. A response that looks damaged (no list, items without a
        usable id or time, more items than asked for) is read again: proxies and overloaded
        backends garble single responses, and a re-read is cheaper than a gap. If it stays damaged,
        a response with nothing usable fails the run (the state stays put); a few bad items are
        passed on and end up in `bad_records` or `*_raw` columns, counted in the warnings."""
        path = STREAM_OBJECTS.format(stream_id=self.stream_id)
        problem = ""
        for attempt in range(1, LIST_READ_ATTEMPTS + 1):
            while True:
                self.requests += 1
                try:
                    envelope = self.client.get(path, self._params(start, end, mode, extra))
                    break
                except BadRequest as error:
                    if "pageNumber" in extra:
                        raise
                    self.caps.negotiate(mode, error)
            items, problem, fatal = self._inspect(envelope.data, start, end)
            if not problem:
                return items
            self.warnings[f"objects: damaged list response re-read ({problem})"] += 1
            logger.warning(
                "stream %s window %s..%s: %s (read %s of %s)",
                self.stream_id,
                start,
                end,
                problem,
                attempt,
                LIST_READ_ATTEMPTS,
            )
        if fatal:
            raise IncompleteWindow(
                f"GET {path} window {start}..{end}: {problem} in {LIST_READ_ATTEMPTS} reads; "
                "refusing to treat it as an empty window"
            )
        self.warnings[f"objects: kept a list response that stayed damaged ({problem})"] += 1
        if len(items) > self.page_size:
            self.warnings["objects: a page held more items than pageSize"] += 1
        return items

    def _inspect(self, data: Any, start: int, end: int) -> tuple[list[Any], str, bool]:
        """The items, what looks damaged about them ("" if nothing) and whether nothing is usable."""
        if data is None:
            return [], "the response has no data (null)", True
        try:
            items = as_list(data)
        except ValueError:
            return [], f"data is a {type(data).__name__}, not a list", True
        unkeyed = sum(1 for item in items if _usable_id(item) is None)
        if items and unkeyed == len(items):
            return items, "no item has a usable id", True
        if unkeyed:
            return items, f"{unkeyed} items without a usable id", False
        if len(items) > self.page_size:
            return items, f"{len(items)} items for pageSize {self.page_size}", False
        now = self.client.server_now.timestamp() if self.client.server_now else None
        for item in items:
            updated, created = updated_epoch(item), created_epoch(item)
            if updated is None or created is None:
                return items, "an item without a readable createdTime/updatedTime", False
            if now is not None and max(updated, created) > now + FUTURE_TOLERANCE_SECONDS:
                return items, "an item updated after the server's now", False
            # A window filters on updatedTime or, on accounts that ignore timeFilter, on createdTime:
            # an item with neither inside it carries garbled times.
            if not (start - 1 <= updated <= end + 1 or start - 1 <= created <= end + 1):
                return items, "an item whose times lie outside the window asked for", False
        return items, "", False


def _usable_id(item: Any) -> int | None:
    try:
        value = to_int(object_id_of(item))
    except (ValueError, TypeError):
        return None
    return value if value is not None and value > 0 else None
