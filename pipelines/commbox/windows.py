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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .client import ApiError, BadRequest, CommBoxClient
from .coerce import Warnings, as_list, first, parse_timestamp, to_int
from .enums import ObjectStatus
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
)

logger = logging.getLogger("commbox.windows")

# A list response that looks damaged is read this many times before it is kept or refused.
LIST_READ_ATTEMPTS = 3
# An object updated this far after the server's now is taken for a garbled timestamp.
FUTURE_TOLERANCE_SECONDS = 86400


@dataclass
class _Paging:
    """What paging through one listing showed: pages read, whether a later page brought
    conversations the first did not (`moved`) and whether the listing ended (`ended`)."""

    pages: int = 0
    moved: bool = False
    ended: bool = False
    # The ids of the first page answered, in the order listed, and every id this listing showed.
    first_page: list[Any] = field(default_factory=list)
    ids: set[Any] = field(default_factory=set)


# The other `order` values the list endpoint documents, per window mode: each lists the second in a
# different sequence, so a capped listing shows different conversations at its two ends.
_OTHER_ORDERS = {
    MODE_UPDATED: ("createdtime", "closedtime", "prioritytime"),
    MODE_CREATED: ("updatedtime", "closedtime", "prioritytime"),
}


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
            if "pagesize" in str(error).lower() and self.page_size > MIN_NEGOTIATED_PAGE_SIZE:
                # The answer names pageSize: halve it first, keeping the order and the timeFilter.
                self.page_size = max(MIN_NEGOTIATED_PAGE_SIZE, self.page_size // 2)
                self.largest = min(self.largest, self.page_size)
                change = f"pageSize={self.page_size}"
            elif self.ordered:
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
        activity_log: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        # Asked before each list call: whether to ask for includeActivityLog (activity_paths.py).
        self.activity_log = activity_log
        self.stream_id = stream_id
        self.caps = caps
        self.warnings = warnings
        self.requests = 0
        # Seconds that could not be read whole, as (start, end): the walker records them as holes.
        self.holes: list[tuple[int, int]] = []

    def read(self, start: int, end: int, mode: str) -> list[Any]:
        """Every object of the stream whose `mode` time lies in [start, end], each id once.

        Items without a usable id are returned as they are (the caller keeps them raw).
        """
        return self.read_prefix(start, end, mode)[0]

    def read_prefix(
        self, start: int, end: int, mode: str, enough: int | None = None
    ) -> tuple[list[Any], int]:
        """The objects of [start, covered], each id once, and `covered`: `end` when the window was
        read whole; earlier when it had to be split and its first parts already held `enough`
        objects. A burst (thousands of conversations inside one window) is then handed over a part
        at a time, so a run's memory does not grow with the busiest window; the caller goes on from
        `covered`.
        """
        seen: dict[Any, Any] = {}
        unkeyed: list[Any] = []
        covered = self._read_into(start, end, mode, seen, unkeyed, enough)
        return [*seen.values(), *unkeyed], covered

    def _read_into(
        self,
        start: int,
        end: int,
        mode: str,
        seen: dict[Any, Any],
        unkeyed: list[Any],
        enough: int | None = None,
    ) -> int:
        items = self._list(start, end, mode)
        if not self.caps.is_suspect(len(items)):
            self._keep(items, seen, unkeyed)
            return end
        if end - start > 1:
            # The halves list these objects again: a full page kept while they are read would stack
            # one page of decoded objects per level of the split (a 30-day window splits ten deep).
            listed = len(items)
            del items
            middle = (start + end) // 2
            before = len(seen)
            covered = self._read_into(start, middle, mode, seen, unkeyed, enough)
            if covered < middle or (enough is not None and len(seen) + len(unkeyed) >= enough):
                return covered
            covered = self._read_into(middle, end, mode, seen, unkeyed, enough)
            if covered == end:
                self.caps.record_split(listed, len(seen) - before)
            return covered
        found: dict[Any, Any] = {}
        self._keep(items, found, unkeyed)
        if not self._read_crowded_second(start, end, mode, found, unkeyed, len(items)):
            self.holes.append((start, end))
        for key, item in found.items():
            self._keep_one(key, item, seen)
        return end

    def _key(self, item: Any) -> Any:
        key = object_id_of(item)
        if key is None or isinstance(key, (dict, list)):
            return None
        return str(key).strip().rstrip(",")

    def _keep(self, items: list[Any], seen: dict[Any, Any], unkeyed: list[Any]) -> int:
        """Add `items` to `seen` by id (the newest version of a conversation listed twice wins); return
        how many ids were new."""
        new = 0
        for item in items:
            key = self._key(item)
            if key is None:
                unkeyed.append(item)
                continue
            new += key not in seen
            self._keep_one(key, item, seen)
        return new

    def _keep_one(self, key: Any, item: Any, seen: dict[Any, Any]) -> None:
        previous = seen.get(key)
        if previous is not None:
            if previous is item:
                return
            if (updated_epoch(item) or 0) < (updated_epoch(previous) or 0):
                return
        seen[key] = item

    def _page_through(
        self,
        start: int,
        end: int,
        mode: str,
        found: dict[Any, Any],
        unkeyed: list[Any],
        *,
        stop_if_first_page_is_known: bool = False,
        **extra: Any,
    ) -> _Paging:
        """Ask page after page of one listing of the second, adding what comes to `found`.

        The docs do not say whether pages start at 0 or 1, and some accounts answer page 0 (or any
        page below the first) as the first page: asking 0 first costs one request (a 400 or a repeat)
        and repeats are dropped by id, so neither reading matters. Paging ends on an empty page or a
        page shorter than the fullest one (the end of the listing), or when pages stop bringing
        anything new (an account that ignores `pageNumber` answers the same page every time). With
        `stop_if_first_page_is_known`, a first page that brings nothing new ends it at once.
        """
        paging = _Paging()
        fullest = 0
        stale = 0
        for page in range(0, MAX_PAGES_PER_SECOND):
            try:
                items = self._list(start, end, mode, pageNumber=page, **extra)
            except BadRequest as error:
                if page == 0:
                    logger.debug("stream %s: pageNumber=0 refused (%s)", self.stream_id, error)
                    continue
                logger.info("stream %s: pageNumber=%s refused (%s)", self.stream_id, page, error)
                return paging
            if page == 0 and not items:
                continue  # a 1-based account may answer page 0 with nothing: not the end
            new = self._keep(items, found, unkeyed)
            keys = [key for key in map(self._key, items) if key is not None]
            paging.ids.update(keys)
            if not paging.pages:
                paging.first_page = keys
            paging.pages += 1
            if not items or len(items) < fullest:
                # An empty or short page: the listing moved past its first page and ended here.
                paging.moved = paging.ended = True
                return paging
            if stop_if_first_page_is_known and paging.pages == 1 and not new:
                return paging
            paging.moved = paging.moved or new > 0
            fullest = max(fullest, len(items))
            stale = 0 if new else stale + 1
            # Pages 0 and 1 may both be the first page (lenient 1-based accounts): only a third
            # page in a row with nothing new shows that pageNumber is ignored.
            if stale >= 3:
                return paging
        return paging

    def _read_crowded_second(
        self,
        start: int,
        end: int,
        mode: str,
        found: dict[Any, Any],
        unkeyed: list[Any],
        first_count: int,
    ) -> bool:
        """Read one second that holds as many conversations as an answer gives, with every lever the
        API documents; return whether it was read whole.

        1. Page through it (`pageNumber`, whatever the first page's number), then ask the reverse
           listing (`sort=desc`). If the reverse end brings nothing new and paging moved and ended,
           the second is whole: an account that caps what one listing pages through would show
           other conversations at its reverse end.
        2. If the reverse end shows conversations paging missed, the listing is capped: the reverse
           listing is paged too, and if the two ends overlap they cover the second between them.
           Otherwise the other orders are listed for what they hold and the second is partitioned
           by `status`: it is whole if every part, paged, came back smaller than the capped listing.
        3. An account that ignores `sort` (or refuses it) cannot show a capped listing's other end,
           so paging alone proves nothing there: only a first answer below `pageSize` that nothing
           adds to, or the status partition, does. A short count on a fresh process is not evidence
           of a cap by itself.
        Otherwise the second is a hole: what was found is kept, and the caller records the hole.
        """
        logger.info(
            "stream %s: the second %s holds %s conversations in one answer; paging through it",
            self.stream_id,
            start,
            first_count,
        )
        self.warnings["objects: crowded second, paged through"] += 1
        first_ids = set(found)
        forward = self._page_through(start, end, mode, found, unkeyed)
        listed = set(found)
        sorted_both_ways = False
        if self.caps.ordered:
            reverse = self._page_through(
                start, end, mode, found, unkeyed, stop_if_first_page_is_known=True, sort="desc"
            )
            if len(found) > len(listed):
                reverse = self._page_through(start, end, mode, found, unkeyed, sort="desc")
                if forward.ids & reverse.ids:
                    return True  # the two ends of one ordered listing overlap: nothing lies between
                logger.warning(
                    "stream %s: the second %s paged forwards gave %s conversations, backwards %s more: "
                    "the account caps what one listing pages through",
                    self.stream_id,
                    start,
                    len(listed),
                    len(found) - len(listed),
                )
                for order in _OTHER_ORDERS[mode]:
                    for sort in ("asc", "desc"):
                        self._page_through(start, end, mode, found, unkeyed, order=order, sort=sort)
                return self._partition_by_status(start, end, mode, found, unkeyed, len(listed))
            sorted_both_ways = not (len(forward.first_page) > 1 and reverse.first_page == forward.first_page)
        if sorted_both_ways and forward.moved and forward.ended:
            return True
        if set(found) == first_ids and first_count < self.page_size:
            return True
        return self._partition_by_status(start, end, mode, found, unkeyed, len(set(found)))

    def _partition_by_status(
        self,
        start: int,
        end: int,
        mode: str,
        found: dict[Any, Any],
        unkeyed: list[Any],
        capped: int,
    ) -> bool:
        """Partition the second by status, each part paged; True if every part is shown whole: its
        listing ended and it held fewer than `capped`, the most one capped listing gave, or its two
        ends (`sort` asc and desc) overlap."""
        whole = True
        for status in ObjectStatus:
            part: dict[Any, Any] = {}
            forward = self._page_through(start, end, mode, part, unkeyed, status=str(int(status)))
            shown = len(part) < capped and (forward.ended or len(part) < self.page_size)
            if not shown and part and self.caps.ordered:
                reverse = self._page_through(
                    start, end, mode, part, unkeyed, status=str(int(status)), sort="desc"
                )
                sorted_both_ways = len(forward.first_page) <= 1 or reverse.first_page != forward.first_page
                shown = sorted_both_ways and bool(forward.ids & reverse.ids)
            for key, item in part.items():
                self._keep_one(key, item, found)
            whole = whole and shown
        return whole

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
        if self.activity_log is not None and self.activity_log():
            params["includeActivityLog"] = "true"
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
