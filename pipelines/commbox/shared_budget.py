"""One request budget for every process that reads the same account at the same time.

The CommBox rate limit belongs to the account, but each process (a cron run, a backfill beside it,
each stream task of the Airflow DAG) builds its own `RequestBudget`. Alone, each one would pace
itself at the whole limit and learn the limit from its own answers only: N processes send N times
the rate and every one of them fights the others' 429s. A `SharedBudget` joins them through a small
file under an exclusive `fcntl.flock`, kept in a directory every process on the machine can reach
(nothing new to deploy):

- **One schedule.** Every request of every process takes its start from one shared schedule
  (`next_start`, spaced `1 / pace`), so the configured `max_requests_per_second` is the account's
  total however many processes run. The pace is the median of those the live processes' budgets hold
  (a configured ceiling, or the rate each learnt; among learners, those that saw every 429, and
  those that finished in the last `LEFT_SECONDS`: the last process running does not set it alone).
- **One pause.** A 429 seen by any process pauses every process until its `Retry-After` is over.
- **One view of the server.** Every answer and every 429, with the moment its request was sent, goes
  into the file's log; before each request every process feeds the others' new entries to its own
  budget (`record_start`, `record_answer`, `pause`), so each budget brackets the account's rate from
  the answers of all processes, as one process with more workers would, and they all find and hold
  the same limit. A 429 is learnt from once the requests sent before it have their answers (it
  comes back at once, they later), at most `SETTLE_SECONDS` after it; its pause applies at once.

The file lives in `<directory>/commbox-budget-<sha256 of the base URL>.bin` (never the key): by
default a folder in the system's temporary directory, `shared_budget = "<directory>"` names another
(a volume the workers share), `"off"` leaves each process on its own. Times are
`time.monotonic()`, one clock for every process of a machine; across machines (Airflow workers on
several hosts) the tasks do not share a file, see docs/operations.md.

Layout of the file: a 4 KiB header (JSON, space-padded: the schedule, the pause, the members' paces,
the log's sequence numbers), then the log, 24 bytes an entry (`sent_at`, `paused_until` (0 for an
answer), the member that logged it). The log is compacted to its newest `KEEP_ENTRIES` when it
grows past `MAX_ENTRIES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import statistics
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("commbox.shared_budget")

HEADER_BYTES = 4096
ENTRY = struct.Struct("<ddQ")  # sent_at, paused_until (0: an answer), member
MAX_ENTRIES = 65536  # about 1 MiB of log before it is compacted
KEEP_ENTRIES = 8192
# A member that has not asked for a start this long is gone (finished, killed): its pace no longer
# counts.
MEMBER_SECONDS = 5.0
# A member that left (finished) after learning from 429s keeps its pace in the schedule's median
# this long: what it learnt is still true of the account. Without it, the last processes running
# set the pace alone: 8 processes at 100 req/s learnt 29 to 83 req/s; as the faster ones finished,
# the two left picked 29 and the account ran at 29 req/s for the last 30 s (46% of the rate).
LEFT_SECONDS = 60.0
# A start may be booked this far ahead, so a worker sleeps until its start without holding the file;
# a 429 that arrives meanwhile still stops it (the pause is checked again before it sends).
BOOK_AHEAD_SECONDS = 0.1
EARLY_SECONDS = 0.001  # a start due within this goes now
# A process that found itself alone on the account, unpaced and unpaused looks at the file again
# this often, not on every request, unless the file changed meanwhile (another process wrote it:
# one stat, no lock): the file is all it would learn from, and every look holds a lock across
# system calls that let other threads take the interpreter, which on an unlimited account kept 16
# workers at 13 in flight (`make bench` scenario 1: 56 s with the file on every request, 51 s
# without it). Without the stat, processes starting together met half again as many 429s: the
# first one went on unpaced for up to this long after another's 429.
ALONE_SECONDS = 0.02
# ... and only once it has been alone this long: processes started together (a cron run and
# backfills, the tests' three at once) still met more 429s while the first of them skipped the file.
ALONE_AFTER_SECONDS = MEMBER_SECONDS
# A 429 is learnt from once every request sent before it has been answered (its answer says how
# much of the burst the account had spent), or after this long: a 429 comes back at once, the
# answers to the requests sent just before it can take longer, and with several processes many
# are in flight. The pause itself applies at once.
SETTLE_SECONDS = 0.5
SETTLE_POLL_SECONDS = 0.01
DIRECTORY_NAME = "commbox-etl-budgets"
OFF = "off"
AUTO = "auto"


class Learner(Protocol):
    """What a `SharedBudget` needs of a process's `RequestBudget`: its pace, and to be told what the
    other processes' requests met."""

    @property
    def pace(self) -> float: ...

    events: int  # overshoots (429s) it has learnt from

    def record_answer(self, sent_at: float | None = None) -> None: ...

    def pause(self, seconds: float, sent_at: float | None = None) -> None: ...

    def record_start(self, sent_at: float) -> None: ...


def budget_path(base_url: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the budget of the account at `base_url` lives: one file per base URL (its SHA-256, so
    the file name shows neither the host nor, ever, the key)."""
    digest = hashlib.sha256(base_url.rstrip("/").lower().encode()).hexdigest()[:24]
    folder = Path(directory) if directory else Path(tempfile.gettempdir()) / DIRECTORY_NAME
    return folder / f"commbox-budget-{digest}.bin"


def shared_budget_for(base_url: str, setting: str) -> SharedBudget | None:
    """The shared budget a `shared_budget` setting asks for: None for "off", the default folder for
    "auto" (or empty), else the named folder (created when missing)."""
    value = (setting or AUTO).strip()
    if value.lower() == OFF:
        return None
    path = budget_path(base_url, None if value.lower() == AUTO else value)
    if value.lower() == AUTO:
        _forget_old(path.parent)
    return SharedBudget(path)


def _account_pace(members: Iterable[list[Any]]) -> float:
    """The pace of the schedule: the median of those held by the members that learnt from the most
    429s. Every member hears the same answers and 429s, so their paces differ only by when they
    heard them; but one that joined after the first 429 learnt the burst from the middle of the run
    (too large a burst, too low a rate) and would drag the schedule down, so the ones that have
    seen every overshoot decide, and the median keeps one early or late reaction from setting it.

    Members that left count while they are kept (`LEFT_SECONDS`, learners only) and as informed
    as the live ones, so the schedule does not fall to the pace of whichever process finishes last;
    with no live member paced, nothing paces. Of an even count the higher middle is taken: a pace
    too high costs a 429 that every member learns from, one too low costs the run's pace and
    nothing corrects it."""
    paced = [
        (int(member[2]) if len(member) > 2 else 0, float(member[0]), _left(member)) for member in members
    ]
    paced = [(events, pace, left) for events, pace, left in paced if pace > 0]
    live = [events for events, _, left in paced if not left]
    if not live:
        return 0.0
    most = max(live)
    return float(statistics.median_high([pace for events, pace, _ in paced if events == most]))


def _left(member: list[Any]) -> bool:
    """Whether a member entry is one that left (kept for its pace only)."""
    return len(member) > 4 and bool(member[4])


def _settled(members: dict[str, list[Any]], sent_at: float) -> bool:
    """Whether every member has had an answer to each of its requests sent before `sent_at`."""
    return all(len(m) < 4 or m[3] is None or m[3] > sent_at for m in members.values())


def _forget_old(folder: Path, days: float = 2.0) -> None:
    """Remove budgets of the default folder nobody used for `days` (every base URL gets a file;
    test runs and retired accounts would leave them behind for good)."""
    cutoff = time.time() - days * 86400
    with contextlib.suppress(OSError):
        for path in folder.glob("commbox-budget-*.bin"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


class SharedBudget:
    """The shared schedule, pause and log of one account (see the module docstring).

    `RequestBudget` calls `acquire` after its own pacing let a request through, `answered` for every
    answer that took a server token and `throttled` for every 429; `close` flushes what is pending.
    All four are thread-safe. `clock` and `sleep` are injectable for tests on a fake clock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._sleep = sleep
        self._gate = threading.Lock()  # one thread of this process at a time holds the file
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[float, float, int]] = []
        self._inflight: Counter[float] = Counter()  # when this process's unanswered requests went
        self._held: list[tuple[float, float, float]] = []  # others' 429s: sent, paused until, heard
        self._local = threading.local()
        self._id = random.getrandbits(63)
        self._member = f"{os.getpid()}-{self._id:x}"
        self._seen: int | None = None  # the sequence number of the next log entry to read
        # Until when requests skip the file: the last look found this member alone, nobody paced
        # and no pause (see ALONE_SECONDS).
        self._alone_until = 0.0
        self._alone_since: float | None = None  # since when every look found this member alone
        # The file's (mtime, size) after this member's last write: another's write changes them.
        self._written: tuple[int, int] | None = None
        self._fd: int | None = None
        # What this process learnt of the account, for the run summary and `status`.
        self.account_pace = 0.0
        self.members = 1
        self.fed = 0

    def __repr__(self) -> str:
        return f"SharedBudget({str(self.path)!r})"

    # -------------------------------------------------------------------------------- the hooks

    def acquire(self, budget: Learner) -> float:
        """Wait for this request's start on the shared schedule; the moment it may be sent.

        Before deciding, the other processes' new answers and 429s are fed to `budget`, and this
        process's pace is published; the schedule runs at the pace `_account_pace` picks.
        """
        if budget.pace <= 0 and self._skipping_file():
            return self._sending(self._clock())
        while True:
            booked = None
            with self._state(budget) as state:
                now = self._clock()
                pace = state["pace"]
                # Unpaced (no member has a pace yet) ignores a schedule left from an earlier pace.
                due = state["next_start"] if pace > 0 else 0.0
                start = max(now, due, state["paused_until"])
                if start <= now + EARLY_SECONDS:
                    if pace > 0:
                        # From the later of the due start and now: a late start grants no burst.
                        state["next_start"] = max(now, state["next_start"]) + 1.0 / pace
                    return self._sending(now)
                if pace > 0 and state["paused_until"] <= now and start - now <= BOOK_AHEAD_SECONDS:
                    state["next_start"] = start + 1.0 / pace
                    booked = start
                    wait = start - now
                else:
                    # Too far ahead to book: look again shortly before it is due (spread a little,
                    # so the waiting workers of several processes do not all wake at once).
                    wait = max(start - now - BOOK_AHEAD_SECONDS, EARLY_SECONDS)
                    wait += random.uniform(0, min(0.02, BOOK_AHEAD_SECONDS / 2))
            self._sleep(min(wait, 1.0))
            if booked is not None:
                with self._state(budget) as state:
                    # A 429 anywhere since the booking pauses this start too.
                    if state["paused_until"] <= booked + EARLY_SECONDS:
                        return self._sending(max(booked, self._clock()))

    def answered(self, budget: Learner, sent_at: float) -> None:
        """An answer (not a 429) to a request of this process sent at `sent_at`, logged at once:
        a budget that meets a 429 brackets the rate from the answers it knows of, so the others'
        must be there already (batching them until the next request made every budget's idea of
        the server's burst too small, and its pace too high)."""
        if getattr(self._local, "feeding", False):
            return
        with self._pending_lock:
            self._answered(sent_at)
            self._pending.append((sent_at, 0.0, self._id))
        if self._skipping_file():
            return  # nobody to tell yet: written with the next look at the file
        with self._state(budget):
            pass

    def throttled(self, budget: Learner, seconds: float, sent_at: float) -> None:
        """A 429 to a request of this process sent at `sent_at`: every process pauses `seconds`
        from now, written at once; `budget` hears the others' news first, so it learns from this
        429 knowing every answer the account had."""
        if getattr(self._local, "feeding", False):
            return
        with self._pending_lock:
            self._answered(sent_at)
            self._pending.append((sent_at, self._clock() + max(0.0, seconds), self._id))
        heard = self._clock()
        while True:
            with self._state(budget) as state:
                settled = _settled(state["members"], sent_at)
            if settled or self._clock() - heard >= SETTLE_SECONDS:
                return
            self._sleep(SETTLE_POLL_SECONDS)

    def _skipping_file(self) -> bool:
        """Whether this request may skip the file: the last look found this member settled alone
        (see ALONE_SECONDS), not long ago, and nobody wrote the file since."""
        return self._clock() < self._alone_until and self._unchanged()

    def _unchanged(self) -> bool:
        """Whether nobody wrote the file since this member last did (its time and size)."""
        fd = self._fd
        if fd is None or self._written is None:
            return False
        try:
            now = os.fstat(fd)
        except OSError:
            return False
        return (now.st_mtime_ns, now.st_size) == self._written

    def _sending(self, start: float) -> float:
        with self._pending_lock:
            self._inflight[start] += 1
        return start

    def _answered(self, sent_at: float) -> None:
        """(pending lock held)"""
        if self._inflight.get(sent_at):
            self._inflight[sent_at] -= 1
            if not self._inflight[sent_at]:
                del self._inflight[sent_at]

    def close(self) -> None:
        """Write what is pending and leave the account (this member's pace stops counting)."""
        with contextlib.suppress(OSError), self._state(None, leaving=True):
            pass
        with self._gate:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ------------------------------------------------------------------------------ the file

    @contextlib.contextmanager
    def _state(self, budget: Learner | None, *, leaving: bool = False) -> Iterator[dict[str, Any]]:
        """The header under the file lock, with the other members' new log entries fed to `budget`,
        this member's pace published and the account's pace (`state["pace"]`) worked out; written
        back, with this process's pending entries appended, on leaving the block."""
        with self._gate:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                header = self._read_header(fd)
                now = self._clock()
                if self._seen is None:
                    # Joining: what came before is history; the pause and the members' paces carry
                    # what matters of it.
                    self._seen = header["next"]
                elif self._seen < header["base"]:
                    self._seen = header["base"]  # fallen behind a compaction: read what is kept
                if budget is not None:
                    self._feed(fd, header, budget, now)
                members = {
                    key: value
                    for key, value in header["members"].items()
                    if now - value[1] <= (LEFT_SECONDS if _left(value) else MEMBER_SECONDS)
                    or key == self._member
                }
                if leaving:
                    gone = members.pop(self._member, None)
                    if gone is not None and len(gone) > 2 and int(gone[2]) > 0:
                        # A learner's pace stays in the median a while (its starts are all answered).
                        members[self._member] = [gone[0], now, gone[2], None, 1]
                else:
                    known = members.get(self._member) or [0.0, now, 0, None]
                    if budget is not None:
                        known = [budget.pace, now, getattr(budget, "events", 0)]
                    members[self._member] = [*known[:3], self._oldest_inflight(now)]
                header["members"] = members
                if budget is not None:
                    self._deliver_held(members, budget, now)
                header["pace"] = _account_pace(members.values())
                self.account_pace = header["pace"]
                alone = (
                    not leaving
                    and budget is not None
                    and budget.pace <= 0
                    and header["pace"] <= 0
                    and header["paused_until"] <= now
                    and members.keys() == {self._member}
                )
                if not alone:
                    self._alone_since = None
                elif self._alone_since is None:
                    self._alone_since = now
                settled = alone and now - (self._alone_since or now) >= ALONE_AFTER_SECONDS
                self._alone_until = now + ALONE_SECONDS if settled else 0.0
                self.members = max(self.members, sum(1 for value in members.values() if not _left(value)))
                yield header
                if not leaving and self._member in header["members"]:
                    # A start granted in the block is in flight from now on: the others must know.
                    header["members"][self._member][3] = self._oldest_inflight(now)
                self._append(fd, header)
                del header["pace"]
                self._write_header(fd, header)
                written = os.fstat(fd)
                self._written = (written.st_mtime_ns, written.st_size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _oldest_inflight(self, now: float) -> float | None:
        """When this process's oldest unanswered request went (one that failed without an answer
        is forgotten after `SETTLE_SECONDS`)."""
        with self._pending_lock:
            for sent in [sent for sent in self._inflight if sent < now - 4 * SETTLE_SECONDS]:
                del self._inflight[sent]
            return min((sent for sent in self._inflight if sent >= now - SETTLE_SECONDS), default=None)

    def _deliver_held(self, members: dict[str, list[Any]], budget: Learner, now: float) -> None:
        """Tell `budget` of the others' 429s once what was sent before them has been answered."""
        keep = []
        self._local.feeding = True
        try:
            for sent_at, paused_until, heard in self._held:
                if _settled(members, sent_at) or now - heard >= SETTLE_SECONDS:
                    budget.pause(max(0.0, paused_until - now), sent_at)
                else:
                    keep.append((sent_at, paused_until, heard))
        finally:
            self._local.feeding = False
        self._held = keep

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def _read_header(self, fd: int) -> dict[str, Any]:
        raw = os.pread(fd, HEADER_BYTES, 0)
        try:
            header = json.loads(raw.decode()) if raw.strip() else {}
        except ValueError:
            logger.warning("%s: unreadable shared budget, starting it afresh", self.path)
            header = {}
        if not isinstance(header, dict) or header.get("v") != 1:
            header = {}
        fresh = {"v": 1, "base": 0, "next": 0, "next_start": 0.0, "paused_until": 0.0, "members": {}}
        if not header:
            os.ftruncate(fd, HEADER_BYTES)
        return {**fresh, **header}

    def _write_header(self, fd: int, header: dict[str, Any]) -> None:
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > HEADER_BYTES:
            # Members are the only part that grows: keep the freshest ones.
            newest = sorted(header["members"].items(), key=lambda item: item[1][1])[-32:]
            raw = json.dumps({**header, "members": dict(newest)}, separators=(",", ":")).encode()
        os.pwrite(fd, raw.ljust(HEADER_BYTES), 0)

    def _feed(self, fd: int, header: dict[str, Any], budget: Learner, now: float) -> None:
        """Tell `budget` what the other members' requests met since it last looked."""
        assert self._seen is not None
        count = header["next"] - self._seen
        if count <= 0:
            return
        offset = HEADER_BYTES + (self._seen - header["base"]) * ENTRY.size
        raw = os.pread(fd, count * ENTRY.size, offset)
        self._seen = header["next"]
        self._local.feeding = True
        try:
            for sent_at, paused_until, member in ENTRY.iter_unpack(
                raw[: len(raw) // ENTRY.size * ENTRY.size]
            ):
                if member == self._id:
                    continue
                self.fed += 1
                # Every answer and every 429 was a start: the account used the pace.
                budget.record_start(sent_at)
                if paused_until:
                    self._held.append((sent_at, paused_until, now))
                else:
                    budget.record_answer(sent_at)
        finally:
            self._local.feeding = False

    def _append(self, fd: int, header: dict[str, Any]) -> None:
        """Append this process's pending entries to the log (compacting it when it is long) and
        apply their pauses (`_feed` skips this member's own entries when it reads past them)."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        if header["next"] - header["base"] + len(pending) > MAX_ENTRIES:
            self._compact(fd, header)
        offset = HEADER_BYTES + (header["next"] - header["base"]) * ENTRY.size
        os.pwrite(fd, b"".join(ENTRY.pack(*entry) for entry in pending), offset)
        header["next"] += len(pending)
        for _, paused_until, _ in pending:
            header["paused_until"] = max(header["paused_until"], paused_until)

    def _compact(self, fd: int, header: dict[str, Any]) -> None:
        keep = min(KEEP_ENTRIES, header["next"] - header["base"])
        start = HEADER_BYTES + (header["next"] - header["base"] - keep) * ENTRY.size
        tail = os.pread(fd, keep * ENTRY.size, start)
        os.pwrite(fd, tail, HEADER_BYTES)
        os.ftruncate(fd, HEADER_BYTES + len(tail))
        header["base"] = header["next"] - keep
