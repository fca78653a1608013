"""Walk one stream's time range window by window, yield what changed, and keep its state honest."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from .coerce import Warnings
from .config import SourceSettings
from .normalise import BadRecord, bad_record, object_bundle, updated_marker
from .settings import MODE_AUTO, MODE_CREATED, MODE_UPDATED
from .windows import WindowReader, created_epoch, updated_epoch

logger = logging.getLogger("commbox.walker")

MIN_ADAPTIVE_WINDOW_SECONDS = 60
# A window that has to be split is handed over once its first parts hold this many conversations
# (`WindowReader.read_prefix`): a burst inside one window is read a part at a time, so memory does
# not grow with the busiest window (a 31-day window reaching a busy week held 2,864 at once). Two
# pages: each checkpoint slice's first window is a day wide and splits, and at 1,000 the decoded
# objects it held (about 45 KB a conversation) left Python's arenas at 126 MB by the end of 100,000
# conversations, against 78 MB now; peak RSS 345 -> 315 MB (bench/README.md, "Session 6").
MAX_WINDOW_ITEMS = 200
# An estimated server clock this close behind the server's own closes the walk a little early, which
# the next run's look-back covers: not worth another list call.
CLOCK_TOLERANCE_SECONDS = 5
TARGET_PAGE_FILL = 0.75


class _TimeFilterIgnored(Exception):
    pass


class StreamWalker:
    """Yields, window by window, lists of row bundles for the new or changed conversations of one stream.

    The state (a dict dlt persists with the load, `None` for a backfill) holds:
    `cursor` — unix seconds up to which windows are closed; `mode` — `updated` or `created`, which
    datetime windows filter on; `seen` — object id → [`updatedTime` marker, epoch used for pruning]
    for conversations inside the re-read horizon, so re-reading the lookback loads nothing twice;
    `largest_listed` — the most objects one list call has returned on this account (`CapTracker`).
    """

    def __init__(
        self,
        reader: WindowReader,
        settings: SourceSettings,
        state: MutableMapping[str, Any] | None,
        now: datetime,
        warnings: Warnings,
        progress: dict[str, Any],
        scrub: Callable[[Any], Any] | None = None,
        checkpoint_due: Callable[[], bool] | None = None,
        now_is_estimate: bool = False,
    ) -> None:
        self.reader = reader
        self.scrub = scrub
        self.settings = settings
        self.state = state
        self.now_epoch = int(now.timestamp())
        self.warnings = warnings
        self.progress = progress
        self.stream_id = reader.stream_id
        self.seen: dict[str, list[Any]] = dict(state.get("seen", {})) if state else {}
        self.holes: dict[str, dict[str, Any]] = (
            {str(start): dict(hole) for start, hole in (state.get("holes") or {}).items()} if state else {}
        )
        self.open_holes: list[tuple[int, int]] = []
        # Asked after every window: True ends the walk there, the state closed up to that window,
        # so the run can commit a checkpoint and the next slice go on from it.
        self.checkpoint_due = checkpoint_due
        self.stopped_at: int | None = None
        # `now` came from this machine's clock and the skew a previous run measured, not from the
        # server: the walk checks it against the server's first answer (`_settle_clock`).
        self.now_is_estimate = now_is_estimate
        # A count the account has returned is no cap (`CapTracker`): without this, every run's first
        # look-back window holding MIN_SUSPECT_COUNT or more would be split again to show it whole,
        # two list calls more for a run that finds no change (measured: 8 list calls for 4 streams).
        remembered = int((state or {}).get("largest_listed") or 0)
        caps = reader.caps
        caps.largest = max(caps.largest, min(remembered, caps.page_size))

    def _initial_mode(self) -> str:
        configured = self.settings.time_filter_mode
        if configured != MODE_AUTO:
            return configured
        return (self.state or {}).get("mode", MODE_UPDATED)

    def _horizon(self, mode: str) -> int:
        """How far before the cursor each run re-reads."""
        if mode == MODE_CREATED:
            return max(self.settings.lookback_seconds, self.settings.created_mode_reread_seconds)
        return self.settings.lookback_seconds

    def _range(self, mode: str) -> tuple[int, int]:
        settings = self.settings
        end = self.now_epoch - settings.safety_margin_seconds
        if settings.backfill:
            assert settings.end_at is not None
            # A backfill's own state holds how far an interrupted backfill of this range got.
            if (self.state or {}).get("done"):
                return end, end
            start = max(int(settings.start_at.timestamp()), int((self.state or {}).get("cursor") or 0))
            return start, min(int(settings.end_at.timestamp()), end)
        cursor = (self.state or {}).get("cursor")
        if cursor is None:
            return int(settings.start_at.timestamp()), end
        return int(cursor) - self._horizon(mode), end

    def walk(self) -> Iterator[list[dict[str, Any]]]:
        mode = self._initial_mode()
        start, end = self._range(mode)
        self.progress.update(mode=mode, start=start, end=end, windows=0, conversations=0)
        yield from self._reread_holes()
        if end <= start and self.now_is_estimate:
            # The estimate says there is nothing to read yet: only the server can tell.
            self._take_server_now(self.reader.client.now())
            start, end = self._range(mode)
        if end <= start:
            logger.info(
                "stream %s: nothing to read (cursor %s is ahead of now minus the safety margin)",
                self.stream_id,
                _iso(start + self._horizon(mode)),
            )
            if self.state is not None:
                self.state["holes"] = self.holes
            self.open_holes = [(int(key), int(hole["end"])) for key, hole in self.holes.items()]
            return
        try:
            yield from self._walk_range(start, end, mode)
        except _TimeFilterIgnored:
            mode = MODE_CREATED
            restart = min(start, self._range(MODE_CREATED)[0])
            logger.warning(
                "stream %s: the API ignores timeFilter (objects updated after the window came back "
                "for it); reading by creation time from now on, re-reading the last %.1f days each run",
                self.stream_id,
                self._horizon(MODE_CREATED) / 86400,
            )
            self.progress["mode"] = mode
            yield from self._walk_range(restart, end, mode)
        if self.now_is_estimate and self.stopped_at is None:
            end = yield from self._settle_clock(end, mode)
        if self.state is not None:
            if self.settings.backfill and self.stopped_at is None:
                # This stream's range is read whole: later slices of the backfill skip it (the
                # source drops the whole backfill entry once every stream is done).
                self.state.clear()
                self.state["done"] = True
            else:
                self._commit(self.stopped_at or end, mode)
        self.open_holes = [(int(start), hole["end"]) for start, hole in self.holes.items()]

    def _reread_holes(self) -> Iterator[list[dict[str, Any]]]:
        """Read each recorded hole again; a hole that now reads whole is closed (and its
        conversations loaded), one that does not stays open with its tries counted."""
        for key, hole in sorted(self.holes.items()):
            start, end, mode = int(key), int(hole["end"]), hole.get("mode", MODE_UPDATED)
            self.reader.holes.clear()
            items = self.reader.read(start, end, mode)
            batch = list(self._changed(items, mode))
            hole["tries"] = int(hole.get("tries", 1)) + 1
            if self.reader.holes:
                hole["last_tried_at"] = _iso(self.now_epoch)
                self.warnings["objects: a hole still cannot be read whole"] += 1
            else:
                logger.info("stream %s: the hole at %s now reads whole; filled", self.stream_id, _iso(start))
                self.holes.pop(key)
                hole["filled_at"] = _iso(self.now_epoch)
            batch.append({"hole": self._hole_row(start, hole, is_open=bool(self.reader.holes))})
            self.reader.holes.clear()
            yield batch

    def _record_holes(self, mode: str) -> list[dict[str, Any]]:
        """Turn the seconds the reader could not read whole into holes: state and table rows."""
        rows = []
        for start, end in self.reader.holes:
            hole = self.holes.setdefault(
                str(start), {"end": end, "mode": mode, "first_seen_at": _iso(self.now_epoch), "tries": 0}
            )
            hole["tries"] = int(hole.get("tries", 0)) + 1
            hole["last_tried_at"] = _iso(self.now_epoch)
            logger.error(
                "stream %s: the second %s (%s) could not be read whole; loading everything else and "
                "re-reading it on every run",
                self.stream_id,
                _iso(start),
                start,
            )
            self.warnings["objects: a second could not be read whole (hole recorded)"] += 1
            rows.append({"hole": self._hole_row(start, hole, is_open=True)})
        self.reader.holes.clear()
        return rows

    def _hole_row(self, start: int, hole: dict[str, Any], *, is_open: bool) -> dict[str, Any]:
        return {
            "hole_id": f"{self.stream_id}:{start}",
            "stream_id": self.stream_id,
            "window_start": start,
            "window_end": int(hole["end"]),
            "start_at": datetime.fromtimestamp(start, tz=UTC),
            "mode": hole.get("mode", MODE_UPDATED),
            "is_open": is_open,
            "is_backfill": self.settings.backfill,
            "first_seen_at": hole.get("first_seen_at"),
            "last_tried_at": hole.get("last_tried_at"),
            "filled_at": hole.get("filled_at"),
            "tries": int(hole.get("tries", 1)),
        }

    def _take_server_now(self, now: datetime) -> None:
        self.now_epoch = int(now.timestamp())
        self.now_is_estimate = False

    def _settle_clock(self, end: int, mode: str) -> Generator[list[dict[str, Any]], None, int]:
        """The walk's true end, once the server's answers have told its now: the windows ran up to
        the estimated now minus the safety margin; if the server is further on (its clock moved
        other than this machine's since the skew was measured), the walk goes on to the server's
        now minus the margin, and if the estimate ran ahead, the cursor stops at the server's now
        minus the margin (the rows read past it are complete conversations, merged as always; the
        next run re-reads from there). Returns the end the cursor may close at."""
        server_now = self.reader.client.server_now
        if server_now is None:  # the API sends no response_time: this machine's clock it is
            return end
        self._take_server_now(server_now)
        _, true_end = self._range(mode)
        if true_end > end + CLOCK_TOLERANCE_SECONDS:
            logger.info(
                "stream %s: the server's clock is %s s ahead of the estimate; reading on to %s",
                self.stream_id,
                true_end - end,
                _iso(true_end),
            )
            yield from self._walk_range(end, true_end, mode)
            return self.stopped_at or true_end
        if true_end < end:
            # Within the safety margin the cursor's correction is routine (a frozen test clock,
            # a server clock stepped back a little); beyond it, a clock someone should look at.
            log = logger.warning if end - true_end > self.settings.safety_margin_seconds else logger.info
            log(
                "stream %s: the estimated server clock ran %s s ahead; the cursor stays at the server's "
                "now minus the safety margin",
                self.stream_id,
                end - true_end,
            )
            return true_end
        return end

    def _walk_range(self, start: int, end: int, mode: str) -> Iterator[list[dict[str, Any]]]:
        window = self.settings.window_seconds
        position = start
        while position < end:
            window_end = min(position + window, end)
            items, window_end = self.reader.read_prefix(position, window_end, mode, MAX_WINDOW_ITEMS)
            if mode == MODE_UPDATED and self._time_filter_ignored(items, position, window_end):
                if self.settings.time_filter_mode == MODE_AUTO:
                    raise _TimeFilterIgnored()
                self.warnings["objects: came back outside the updatedTime window"] += 1
            batch = list(self._changed(items, mode))
            if self.reader.holes:
                batch.extend(self._record_holes(mode))
            if batch:
                # One batch per window: the fan-out runs per batch on a pool, not per conversation.
                yield batch
            self.progress["windows"] += 1
            self.progress["position"] = window_end
            if self.progress["windows"] % 50 == 0:
                logger.info(
                    "stream %s: %s windows, %s conversations, at %s",
                    self.stream_id,
                    self.progress["windows"],
                    self.progress["conversations"],
                    _iso(window_end),
                )
            # Adapt the window to the traffic, aiming at three quarters of a page: few answers a
            # call mean wasted calls, full answers mean splits. The page is what the account answers
            # now: a cap below `pageSize` learnt during the walk makes it smaller.
            cap = self.reader.page_size
            if len(items) > cap:
                # The window had to be split (a burst, or a first window far too wide): what it held
                # tells the traffic, so the next window is sized from it at once. Halving from the
                # window asked for split each of the next windows nearly as deep again, a full page
                # per level (and a burst handed over a part at a time, `read_prefix`, from scratch).
                window = int(TARGET_PAGE_FILL * cap * (window_end - position) / len(items))
            else:
                window = int(window * min(2.0, max(0.5, TARGET_PAGE_FILL * cap / max(len(items), 1))))
            window = min(max(window, MIN_ADAPTIVE_WINDOW_SECONDS), self.settings.max_window_seconds)
            position = window_end
            if position < end and self.checkpoint_due is not None and self.checkpoint_due():
                self.stopped_at = position
                logger.info("stream %s: checkpoint at %s", self.stream_id, _iso(position))
                return

    def _time_filter_ignored(self, items: list[Any], start: int, end: int) -> bool:
        """True if an object came back that was created in the window but updated after it, before
        this run began: an `updatedTime` window could not have listed it."""
        for item in items:
            if not isinstance(item, dict):
                continue
            updated, created = updated_epoch(item), created_epoch(item)
            if updated is None or created is None:
                continue
            if end + 1 < updated < self.now_epoch and start - 1 <= created <= end + 1:
                return True
        return False

    def _changed(self, items: list[Any], mode: str) -> Iterator[dict[str, Any]]:
        for raw in items:
            if self.scrub is not None:
                raw = self.scrub(raw)
            try:
                bundle = object_bundle(raw, self.stream_id, self.warnings)
            except BadRecord as error:
                self.warnings[f"objects: {error}, kept raw in bad_records"] += 1
                yield {"bad": bad_record(raw, self.stream_id, str(error))}
                continue
            row = bundle["object"]
            key = str(row["object_id"])
            marker = updated_marker(row)
            if not self.settings.backfill and self.seen.get(key, [None])[0] == marker:
                continue
            key_time = row.get("created_at") if mode == MODE_CREATED else row.get("updated_at")
            self.seen[key] = [marker, int(key_time.timestamp()) if key_time else self.now_epoch]
            self.progress["conversations"] += 1
            yield bundle

    def _commit(self, end: int, mode: str) -> None:
        """Close the windows read: the cursor never moves back, and `seen` keeps only what the next
        run's re-read can meet again."""
        assert self.state is not None
        cursor = max(int(self.state.get("cursor") or 0), end)
        horizon = cursor - self._horizon(mode) - self.settings.safety_margin_seconds
        self.state["cursor"] = cursor
        self.state["cursor_at"] = _iso(cursor)
        self.state["mode"] = mode
        self.state["largest_listed"] = self.reader.caps.largest
        # Conversations found in an open hole stay known until it is filled: the hole lies before
        # the horizon, and re-reading it must not load them again.
        holes = [(int(start), int(hole["end"])) for start, hole in self.holes.items()]
        self.state["seen"] = {
            key: value
            for key, value in self.seen.items()
            if value[1] >= horizon or any(start - 1 <= value[1] <= end + 1 for start, end in holes)
        }
        self.state["holes"] = self.holes


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()
