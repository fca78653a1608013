"""The CommBox (Cirrus Digital) dlt source: conversations by incremental windows, and their details.

Tables (dataset `commbox_raw` by default), all with write disposition `merge`:

| table | primary key | notes |
| --- | --- | --- |
| objects | object_id, updated_at | one row per conversation once superseded versions are deleted |
| childs | child_id, object_updated_at | messages, versioned by their conversation's `updated_at` |
| users | user_id | customers, from the conversations' `user` |
| user_identities | identity_id | customer identities, from conversations and messages |
| activities | activity_id, object_updated_at | fetched per configured activity type, versioned |
| transcripts | object_id, object_updated_at | the conversation as text (the API spells it `trasncript`) |
| managers | manager_id | agents, admins and bots |
| streams | stream_id | the channels read, with their open counts, SLA exception counts and availability |
| bad_records | record_id | payload items that could not be keyed, kept raw rather than dropped |
| holes | hole_id | seconds the API could not list whole: open until a later run reads them whole |

Newest wins: after every load `pipelines.ops.versions.keep_newest` deletes the rows of superseded conversation
versions, so any interleaving of runs and backfills ends at each conversation's newest version
(docs/reliability.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import dlt
from dlt.common.configuration import known_sections, with_config
from dlt.common.typing import TDataItem
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from .activity_paths import ActivityPaths
from .client import OPTIONAL_ENDPOINT_ERRORS, CommBoxClient, NotFound, pace_memory
from .coerce import Warnings, as_list, to_int
from .config import SETTINGS_SIGNATURE, SourceConfig, SourceSettings, source_config
from .items import items_of
from .normalise import BadRecord, manager_row, transcript_row
from .pii import Pseudonymiser, no_scrub
from .senders import apply_senders, disagrees_with_first_response, fetch_senders, needs_sender
from .settings import (
    BATCH_CONVERSATIONS,
    FIRST_BATCH_CONVERSATIONS,
    MANAGERS,
    OBJECT_TRANSCRIPT,
    STATS_SLA_EXCEPTIONS,
    STATS_STREAMS,
    STREAM_AVAILABILITY,
)
from .shared_budget import shared_budget_for
from .tables import TABLE_COLUMNS, VERSION_COLUMN, VERSION_FLOOR
from .walker import StreamWalker
from .windows import CapTracker, WindowReader

__all__ = ["RunContext", "commbox_source", "load_source_config", "source_for", "version_of"]

logger = logging.getLogger("commbox")

# Fan-out threads per request slot (see `RunContext.fan_out`).
FAN_OUT_THREADS_PER_SLOT = 2


class RunContext:
    """What the resources of one extraction share: the settings, the client (and through it the
    server's clock), the stream list and the counters that end up in the run summary.

    The runner builds it (`RunContext(load_source_config())`), hands it to `source_for` and reads
    the counters from it after the extraction."""

    def __init__(self, config: SourceConfig) -> None:
        settings = self.settings = config.settings
        self.client = CommBoxClient(
            settings.base_url,
            config.api_key,
            max_concurrency=settings.max_concurrency,
            max_requests_per_second=settings.max_requests_per_second,
            max_retry_wait_seconds=settings.max_retry_wait_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
        )
        # Issue 16: one budget with every other process reading this account at the same time.
        self.client.budget.shared = shared_budget_for(settings.base_url, settings.shared_budget)
        self.started = time.monotonic()
        self.warnings = Warnings()
        self.caps = CapTracker(settings.page_size)
        self.progress: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stream_ids: tuple[int, ...] | None = None
        self._stats_rows: list[dict[str, Any]] | None = None
        self._sla_rows: list[dict[str, Any]] | None = None
        self._snapshot_due: bool | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Seconds that could not be read whole, per stream: the run loads the rest and fails after.
        self.holes: dict[int, list[tuple[int, int]]] = {}
        # Set when this slice stopped at a checkpoint: the runner loads it and runs the next slice.
        self.more = False
        # Customer data is pseudonymised here, on the raw items, when the source is so configured.
        self.scrub: Callable[[Any], Any] = no_scrub
        if settings.pseudonymize:
            self.scrub = Pseudonymiser(str(config.pseudonymize_key)).scrub
        # Which way activities are read: per type until a cheaper path has shown the same rows.
        self.activity_paths = ActivityPaths(
            self.client, settings, self.warnings, scrub=self.scrub, finish=_activity_row
        )

    def fan_out(self, fetch: Any, refs: list[dict[str, Any]]) -> list[Any]:
        """`fetch(ref, self)` for every ref, on one pool shared by all fan-out transformers.

        dlt's parallelized transformers run a batch (a window's conversations) per task; one future
        per conversation would cost dlt more bookkeeping than the requests themselves. The pool has
        more threads than the budget has slots: a thread parsing and normalising its answer holds
        no slot, and another one is already waiting to send (the budget still caps requests in
        flight at `max_concurrency`).
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    FAN_OUT_THREADS_PER_SLOT * self.settings.max_concurrency,
                    thread_name_prefix="commbox-fan-out",
                    initializer=self.client.serve_in_background,
                )
        return list(self._pool.map(lambda ref: fetch(ref, self), refs))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        if self.client.budget.shared is not None:
            self.client.budget.shared.close()

    def pace(self) -> dict[str, Any]:
        """The pace this extraction achieved against the limit it found, for the run summary and
        the source state (`status` shows it): answered requests a second since the context was
        built, and the pace its budget (shared with other processes, when it is) held at the end:
        the configured ceiling, the rate learnt from 429s, or 0 when nothing limited it."""
        seconds = max(1e-6, time.monotonic() - self.started)
        stats = self.client.stats
        answered = stats.get("requests", 0) - stats.get("throttled", 0)
        shared = self.client.budget.shared
        limit = self.client.budget.pace
        if shared is not None and shared.account_pace:
            limit = shared.account_pace
        return {
            "requests": stats.get("requests", 0),
            "throttled": stats.get("throttled", 0),
            "seconds": round(seconds, 3),
            "achieved_rps": round(answered / seconds, 3),
            "limit_rps": round(limit, 3),
            "configured": bool(self.settings.max_requests_per_second),
            "processes": shared.members if shared is not None else 1,
            # The rate this budget bracketed, for the next slice and the next run to start from.
            "learnt": pace_memory(self.client.budget.learnt(), self.settings.base_url),
        }

    def snapshot_due(self) -> bool:
        """Whether this run reads the snapshot endpoints (`/managers`, `/stats/streams`, the SLA
        exception counts, each stream's availability): when no earlier run has, or the last reading
        is `snapshot_max_age_seconds` old (by the server's clock, estimated where no answer has come
        yet). Decided once per run, so the tables agree; the time is kept in the source state, which
        dlt commits with the load. Call it from a resource."""
        with self._lock:
            if self._snapshot_due is None:
                state = dlt.current.source_state()
                snapshot = state.setdefault("snapshot", {})
                now = self.client.estimated_now(state.get("clock_skew_seconds"))[0].timestamp()
                at = snapshot.get("at")
                self._snapshot_due = snapshot_is_due(at, now, self.settings.snapshot_max_age_seconds)
                if self._snapshot_due:
                    snapshot["at"] = now
            return self._snapshot_due

    def stream_stats(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._stats_rows is None:
                try:
                    data = self.client.get(STATS_STREAMS).data
                except OPTIONAL_ENDPOINT_ERRORS as error:
                    self.warnings[f"streams: {STATS_STREAMS} unavailable"] += 1
                    logger.warning("%s", error)
                    data = []
                self._stats_rows = [row for row in as_list(data) if isinstance(row, dict)]
            return self._stats_rows

    def stream_ids(self) -> tuple[int, ...]:
        """The configured streams; else every stream `/stats/streams` and the SLA exceptions have
        named so far. Those are asked when no earlier run found any, and with each snapshot
        (`discover_streams`): a stream found once is read from then on, even when it has no open
        conversation left to show up there. Call it from a resource."""
        if self._stream_ids is None:
            ids = self.settings.stream_ids
            if not ids:
                known = dlt.current.source_state().get("snapshot", {}).get("stream_ids")
                ids = tuple(known) if known else self.discover_streams()
            self._stream_ids = ids
        return self._stream_ids

    def discover_streams(self) -> tuple[int, ...]:
        """The streams `/stats/streams` and the SLA exceptions name, with those found before; kept
        in the source state (nothing when streams are configured)."""
        if self.settings.stream_ids:
            return self.settings.stream_ids
        snapshot = dlt.current.source_state().setdefault("snapshot", {})
        found: set[int] = set(snapshot.get("stream_ids") or ())
        for row in self.stream_stats() + self.sla_exception_rows():
            try:
                stream_id = to_int(row.get("streamId", row.get("streamid")))
            except ValueError:
                continue
            if stream_id:
                found.add(stream_id)
        ids = tuple(sorted(found))
        logger.info("streams found in /stats/streams so far: %s", list(ids))
        if not ids:
            logger.warning("no streams found in /stats/streams; set sources.commbox.stream_ids")
        snapshot["stream_ids"] = list(ids)
        return ids

    def sla_exception_rows(self) -> list[dict[str, Any]]:
        """`_sla_exception_rows`, asked once per run."""
        with self._lock:
            if self._sla_rows is None:
                self._sla_rows = _sla_exception_rows(self.client)
            return self._sla_rows


# How much sooner than `snapshot_max_age_seconds` a snapshot is read again, as a share of it (at
# most SNAPSHOT_EARLY_SECONDS): runs scheduled that far apart start a little more or a little less
# than that apart, and one that came a second early would leave the snapshot for the run after.
SNAPSHOT_EARLY_SHARE = 0.1
SNAPSHOT_EARLY_SECONDS = 300.0


def snapshot_is_due(at: float | None, now: float, max_age: float) -> bool:
    """Whether a snapshot last read at `at` (unix seconds, None: never) is read again at `now`:
    always with `max_age` 0, else once it is `max_age` old less a little slack (see
    SNAPSHOT_EARLY_SHARE), so an hourly schedule reads it hourly, not every other hour."""
    if at is None or max_age == 0:
        return True
    return now - float(at) >= max_age - min(max_age * SNAPSHOT_EARLY_SHARE, SNAPSHOT_EARLY_SECONDS)


def _sla_exception_rows(client: CommBoxClient) -> list[dict[str, Any]]:
    """Rows of `/stats/streamsSLAExceptions`, tagged `breach` (Item1) or `critical` (Item2)."""
    rows: list[dict[str, Any]] = []
    try:
        data = client.get(STATS_SLA_EXCEPTIONS).data
    except OPTIONAL_ENDPOINT_ERRORS as error:
        logger.warning("%s", error)
        return rows
    groups = data if isinstance(data, list) else [data]
    for group in groups:
        if not isinstance(group, dict):
            continue
        for key, kind in (("Item1", "breach"), ("Item2", "critical")):
            for row in as_list(group.get(key)):
                if isinstance(row, dict):
                    rows.append({**row, "_kind": kind})
    return rows


def _conversations(context: RunContext) -> Iterator[TDataItem]:
    """Bundles of normalised rows, one per new or changed conversation, stream by stream.

    Resource state (scheduled runs only): `streams.<id>` holds the closed cursor, the window mode
    and the `updatedTime` of recently loaded conversations. dlt commits it with the load package, so
    a failed run leaves it where it was.
    """
    settings = context.settings
    root, key = dlt.current.resource_state(), _state_key(settings)
    states = root.setdefault(key, {})
    source_state = dlt.current.source_state()
    checkpoint_due = None
    if settings.checkpoint_conversations:

        def checkpoint_due() -> bool:
            done = sum(p.get("conversations", 0) for p in context.progress.values())
            return done >= settings.checkpoint_conversations

    # Windows go to dlt together (see BATCH_CONVERSATIONS), the first ones soon: the fan-out waits for them.
    batch_size = FIRST_BATCH_CONVERSATIONS
    context.activity_paths.selected = "activities" in dlt.current.source().selected_resources
    context.activity_paths.recall(source_state)
    for stream_id in context.stream_ids():
        if context.more:
            break  # the slice is full: the next one starts with this stream
        stream_state = states.setdefault(str(stream_id), {})
        # The server's now without asking for it when a previous run measured the clocks' skew:
        # a run that finds no change then costs its list calls only (the walker checks the estimate
        # against the first answer).
        now, estimated = context.client.estimated_now(source_state.get("clock_skew_seconds"))
        walker = StreamWalker(
            WindowReader(
                context.client,
                stream_id,
                caps=context.caps,
                warnings=context.warnings,
                activity_log=context.activity_paths.list_log_wanted,
            ),
            settings,
            stream_state,
            now,
            context.warnings,
            context.progress.setdefault(stream_id, {}),
            scrub=context.scrub,
            checkpoint_due=checkpoint_due,
            now_is_estimate=estimated,
        )
        batch: list[dict[str, Any]] = []
        for window in walker.walk():
            batch.extend(window)
            if len(batch) >= batch_size:
                _fill_senders(batch, context)
                yield batch
                batch = []
                batch_size = min(batch_size * 2, BATCH_CONVERSATIONS)
        if batch:
            _fill_senders(batch, context)
            yield batch
        context.holes[stream_id] = walker.open_holes
        context.more = walker.stopped_at is not None
    if settings.backfill and not context.more:
        # A backfill that read its range whole leaves nothing behind: scheduled intervals (Airflow)
        # would otherwise pile up one empty entry each.
        root.pop(key, None)
    # The pace this read achieved against the limit it found (issue 16), committed with the load
    # so that `status` can show it for every pipeline that loads into the dataset.
    now = context.client.estimated_now(source_state.get("clock_skew_seconds"))[0]
    source_state["pace"] = {"at": now.isoformat(), **context.pace()}
    skew = context.client.clock_skew()
    if skew is not None:
        source_state["clock_skew_seconds"] = round(skew, 3)


# The tables every conversation read feeds. Their rows and the stream cursors move together, so a
# run that loads only some of them keeps cursors of its own (see `_state_key`).
CONVERSATION_TABLES = frozenset({"objects", "childs", "users", "user_identities"})


def _state_key(settings: SourceSettings) -> str:
    """Where this run's stream cursors live in the resource state.

    A scheduled run of the full source keeps them under `streams`. A run of a subset of the
    conversation tables (`commbox_source().with_resources("objects")`) keeps its own under
    `streams@<tables>`: sharing them would move the cursor past conversations whose messages,
    activities and transcripts were never loaded. A backfill keeps how far it got under
    `backfill@<start>-<end>`, cleared when its range is read whole.
    """
    if settings.backfill:
        # Keyed by the range: an interrupted backfill resumes only a backfill of the same range.
        assert settings.end_at is not None
        return f"backfill@{int(settings.start_at.timestamp())}-{int(settings.end_at.timestamp())}"
    wanted = set(CONVERSATION_TABLES)
    if settings.include_transcripts:
        wanted.add("transcripts")
    if settings.activity_types:
        wanted.add("activities")
    chosen = wanted & set(dlt.current.source().selected_resources)
    if chosen == wanted:
        return "streams"
    return "streams@" + "+".join(sorted(chosen))


def _fill_senders(batch: list[dict[str, Any]], context: RunContext) -> None:
    """Give every message of the batch its side (see `senders.py`): conversations whose listed
    messages carry no sender are looked up with Get Object, on the run's pool."""
    lacking = [bundle for bundle in batch if "object" in bundle and needs_sender(bundle)]
    if lacking:
        refs = [
            {"object_id": bundle["object"]["object_id"], "stream_id": bundle["object"]["stream_id"]}
            for bundle in lacking
        ]
        found = context.fan_out(
            lambda ref, ctx: fetch_senders(ctx.client, ref, ctx.warnings, ctx.scrub), refs
        )
        for bundle, senders in zip(lacking, found, strict=True):
            apply_senders(bundle, senders, context.warnings)
    for bundle in batch:
        if "object" in bundle and disagrees_with_first_response(bundle):
            context.warnings["childs: first agent message differs from firstResponseTime"] += 1


def _compact(row: dict[str, Any], table: str) -> dict[str, Any]:
    """Drop empty values of undeclared columns: a column that was only ever empty has no type, and
    dlt would warn about it on every load. Declared columns keep their NULLs."""
    declared = TABLE_COLUMNS[table]
    return {key: value for key, value in row.items() if value is not None or key in declared}


def version_of(row: dict[str, Any]) -> datetime:
    """The version a conversation was read at: its `updated_at`, which every versioned row carries.

    A primary-key column cannot be empty, so an `updatedTime` that did not parse (kept in
    `updated_at_raw`) falls back to `created_at` (a conversation changes no earlier than it is
    created), then to the epoch: an unreadable version ranks below every readable one and loses to it.
    """
    return row.get("updated_at") or row.get("created_at") or VERSION_FLOOR


def _objects(bundles: TDataItem) -> Iterator[TDataItem]:
    rows = [
        _compact({**bundle["object"], "updated_at": version_of(bundle["object"])}, "objects")
        for bundle in bundles
        if "object" in bundle
    ]
    yield from items_of(rows, "objects")


def _childs(bundles: TDataItem) -> Iterator[TDataItem]:
    rows = [
        _compact({**row, "object_updated_at": version_of(bundle["object"])}, "childs")
        for bundle in bundles
        if "object" in bundle
        for row in bundle.get("childs", ())
    ]
    yield from items_of(rows, "childs")


def _users(bundles: TDataItem) -> Iterator[TDataItem]:
    rows = [_compact(row, "users") for bundle in bundles for row in bundle.get("users", ())]
    yield from items_of(rows, "users")


def _user_identities(bundles: TDataItem) -> Iterator[TDataItem]:
    rows = [_compact(row, "user_identities") for bundle in bundles for row in bundle.get("identities", ())]
    yield from items_of(rows, "user_identities")


def _bad_records(bundles: TDataItem) -> TDataItem:
    return [bundle["bad"] for bundle in bundles if "bad" in bundle]


def _holes(bundles: TDataItem) -> TDataItem:
    return [bundle["hole"] for bundle in bundles if "hole" in bundle]


def _refs(bundles: TDataItem) -> TDataItem:
    """The conversations of one window that were loaded, for the fan-out, each with the version it
    was read at: the transcript and activities fetched for it are rows of that version. The list's
    activity log rides along where the list gave one (activity_paths.py reads it)."""
    return [
        {
            "object_id": bundle["object"]["object_id"],
            "stream_id": bundle["object"]["stream_id"],
            "object_updated_at": version_of(bundle["object"]),
            **({"activity_log": bundle["activity_log"]} if "activity_log" in bundle else {}),
        }
        for bundle in bundles
        if "object" in bundle
    ]


def _transcript_of(ref: TDataItem, context: RunContext) -> Any:
    path = OBJECT_TRANSCRIPT.format(stream_id=ref["stream_id"], object_id=ref["object_id"])
    try:
        data = context.client.get(path).data
    except NotFound:
        context.warnings["transcripts: 404 for a listed conversation, skipped"] += 1
        return None
    items = as_list(data)
    if not items:
        context.warnings["transcripts: empty transcript"] += 1
        return None
    try:
        row = transcript_row(context.scrub(items[0]), ref["object_id"], ref["stream_id"], context.warnings)
        return _compact({**row, "object_updated_at": ref["object_updated_at"]}, "transcripts")
    except BadRecord:
        context.warnings["transcripts: not an object, skipped"] += 1
        return None


def _activity_row(row: dict[str, Any], ref: TDataItem) -> dict[str, Any]:
    """An activity row as loaded: of the version its conversation was read at."""
    row["object_updated_at"] = ref["object_updated_at"]
    return _compact(row, "activities")


def _transcripts(refs: TDataItem, context: RunContext) -> Iterator[TDataItem]:
    """Each conversation's transcript, fetched on the run's pool (one request per conversation)."""
    rows = [row for row in context.fan_out(_transcript_of, refs) if row is not None]
    yield from items_of(rows, "transcripts")


def _activities(refs: TDataItem, context: RunContext) -> Iterator[TDataItem]:
    """Each conversation's activities, fetched on the run's pool: one request per configured type,
    or a cheaper path once this run has shown it gives the same rows (activity_paths.py)."""
    yield from items_of(context.activity_paths.read(refs, context.fan_out), "activities")


def _managers(context: RunContext) -> Iterator[TDataItem]:
    """Agents, admins and bots from `GET /managers`; bots are `permission_id` 5. Nothing when
    this run's snapshot is not due (`RunContext.snapshot_due`)."""
    if not context.snapshot_due():
        return
    rows = []
    for raw in as_list(context.client.get(MANAGERS).data):
        try:
            rows.append(_compact(manager_row(raw, context.warnings), "managers"))
        except BadRecord as error:
            context.warnings[f"managers: {error}"] += 1
    yield rows


def _streams(context: RunContext) -> Iterator[TDataItem]:
    """One row per stream read: open conversations by status (`/stats/streams`), SLA breach and
    critical counts (`/stats/streamsSLAExceptions`) and availability now. Nothing when this run's
    snapshot is not due (`RunContext.snapshot_due`)."""
    if not context.snapshot_due():
        return
    ids = context.discover_streams()
    open_counts: dict[int, int] = {}
    for row in context.stream_stats():
        try:
            stream_id = to_int(row.get("streamId", row.get("streamid")))
            count = to_int(row.get("c")) or 0
        except ValueError:
            continue
        if stream_id is not None:
            open_counts[stream_id] = open_counts.get(stream_id, 0) + count
    exceptions: dict[tuple[int, str], int] = {}
    for row in context.sla_exception_rows():
        try:
            stream_id = to_int(row.get("streamId", row.get("streamid")))
            count = to_int(row.get("c")) or 0
        except ValueError:
            continue
        if stream_id is not None:
            key = (stream_id, row["_kind"])
            exceptions[key] = exceptions.get(key, 0) + count
    rows = []
    for stream_id in ids:
        try:
            availability = context.client.get(
                STREAM_AVAILABILITY.format(stream_id=stream_id, ignore_automation="true")
            ).data
            state = to_int(availability.get("state")) if isinstance(availability, dict) else None
        except (*OPTIONAL_ENDPOINT_ERRORS, ValueError):
            state = None
        rows.append(
            {
                "stream_id": stream_id,
                "open_count": open_counts.get(stream_id, 0),
                "sla_breach_count": exceptions.get((stream_id, "breach"), 0),
                "sla_critical_count": exceptions.get((stream_id, "critical"), 0),
                "availability_state": state,
                "observed_at": context.client.now(),
            }
        )
    yield rows


def _resource(fn: Any, name: str, **hints: Any) -> Any:
    return dlt.resource(fn, name=name, columns=TABLE_COLUMNS.get(name), max_table_nesting=0, **hints)


def _transformer(fn: Any, name: str, parent: DltResource, **hints: Any) -> Any:
    columns = TABLE_COLUMNS.get(name)
    if hints.pop("legacy_merge_key", False):
        columns = {**columns, "object_id": {**columns["object_id"], **NO_MERGE_KEY["object_id"]}}
    return dlt.transformer(fn, name=name, data_from=parent, columns=columns, **hints)


MERGE = "merge"
# The primary key of each table the conversations give (see MERGE below for the versioned ones).
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "objects": ("object_id", "updated_at"),
    "childs": ("child_id", VERSION_COLUMN),
    "users": ("user_id",),
    "user_identities": ("identity_id",),
    "transcripts": ("object_id", VERSION_COLUMN),
    "activities": ("activity_id", VERSION_COLUMN),
}
# Versioned tables merge on (entity, version): loading a version twice replaces its rows, two reads
# of one version keep the union of their rows, and older versions are deleted after the load by
# `pipelines.ops.versions.keep_newest`, never by the merge (a late older read must not replace a newer one).
# Warehouses loaded before versioning carry `merge_key` on `object_id` in their stored schema (the
# old per-conversation delete-insert); hints merge into it, so the key is switched off explicitly.
NO_MERGE_KEY = {"object_id": {"name": "object_id", "merge_key": False}}


def _with_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with one keyword parameter per setting (`config.SETTINGS_SIGNATURE`): dlt reads the
    signature to know which keys to inject, so every setting is injectable and none is spelled twice."""
    fn.__signature__ = SETTINGS_SIGNATURE  # type: ignore[attr-defined]
    return fn


@with_config(sections=(known_sections.SOURCES, "commbox"))
@_with_settings
def load_source_config(**settings: Any) -> SourceConfig:
    """The run's configuration: every setting as given, else injected by dlt from `[sources.commbox]`
    or SOURCES__COMMBOX__* variables, else its default; validated before any request.

    Raises:
        ConfigError: a setting is wrong (one line naming the key).
        dlt's ConfigFieldMissingException / ConfigValueCannotBeCoercedException: `api_key` is
            configured nowhere, or a value does not coerce to the setting's type.
    """
    return source_config(**settings)


@_with_settings
def commbox_source(**settings: Any) -> DltSource:
    """All CommBox conversations of the configured streams, with their messages, customers,
    activities and transcripts, plus managers and streams.

    Every argument is a setting of `config.SETTINGS` (its default, type and range are there) and is
    injected by dlt from `[sources.commbox]` (`.dlt/config.toml`; `api_key` from `.dlt/secrets.toml`)
    or the environment (`SOURCES__COMMBOX__API_KEY`, ...) unless given here. The configuration is
    validated here, before any request: `ConfigError` names the key at fault.

    Conversations are read per stream in windows of `updatedTime` closed at the server's now minus
    `safety_margin_seconds`; each scheduled run re-reads `lookback_seconds` before the stored cursor
    and loads only conversations that are new or whose `updatedTime` moved. Accounts that ignore
    `timeFilter` (it is "relevant only for ElasticSearch") are detected and read by creation time,
    re-reading the last `created_mode_reread_days`. With `backfill=True` the range
    [`start_date`, `end_date`] is read whole and no state is read or written.

    A run commits a checkpoint every `checkpoint_conversations` conversations (0: never): its slice
    stops after the window where the count was reached, its stream cursors close there, and the
    runner loads it before asking for the next slice (see `pipelines.ops.runner.run_pipeline`). A
    library user who runs the source with `pipeline.run` gets one slice per call, each a complete
    load with its state: to know whether more is left, build the context and the source apart
    (`context = RunContext(load_source_config())`, `source_for(context)`) and call again while
    `context.more` is true; or set `checkpoint_conversations=0` for one load of everything.

    With `pseudonymize=True` every customer phone number, e-mail address, name, channel address and
    message text is replaced, in the raw items before anything is written, by its HMAC-SHA256 under
    the secret `pseudonymize_key` (see `pii.py`); on without a key is a `ConfigError`.

    Transcripts (when `include_transcripts`) and activities (per type in `activity_types`) are
    fetched for those conversations only, in parallel, under one request budget
    (`max_concurrency` in flight, at most `max_requests_per_second`, and every worker pausing on a
    429's `Retry-After`).
    """
    return source_for(RunContext(load_source_config(**settings)))


@dlt.source(name="commbox", max_table_nesting=0)
def source_for(context: RunContext) -> Any:
    """The resources of one extraction, all sharing `context` (see `commbox_source` for what they
    load); the caller keeps `context` to read its counters, holes and `more` afterwards."""
    settings = context.settings
    conversations = dlt.resource(_conversations, name="conversations", selected=False)(context)
    refs = _transformer(_refs, "conversation_refs", conversations, selected=False)
    resources = [
        conversations,
        _transformer(
            _objects,
            "objects",
            conversations,
            primary_key=PRIMARY_KEYS["objects"],
            write_disposition=MERGE,
        ),
        _transformer(
            _childs,
            "childs",
            conversations,
            primary_key=PRIMARY_KEYS["childs"],
            write_disposition=MERGE,
            legacy_merge_key=True,
        ),
        _transformer(
            _users, "users", conversations, primary_key=PRIMARY_KEYS["users"], write_disposition=MERGE
        ),
        _transformer(
            _user_identities,
            "user_identities",
            conversations,
            primary_key=PRIMARY_KEYS["user_identities"],
            write_disposition=MERGE,
        ),
        _transformer(
            _bad_records, "bad_records", conversations, primary_key="record_id", write_disposition=MERGE
        ),
        _transformer(_holes, "holes", conversations, primary_key="hole_id", write_disposition=MERGE),
        refs,
        _resource(_managers, "managers", primary_key="manager_id", write_disposition=MERGE)(context),
        _resource(_streams, "streams", primary_key="stream_id", write_disposition=MERGE)(context),
    ]
    if settings.include_transcripts:
        resources.append(
            _transformer(
                _transcripts,
                "transcripts",
                refs,
                primary_key=PRIMARY_KEYS["transcripts"],
                write_disposition=MERGE,
                parallelized=True,
            )(context=context)
        )
    if settings.activity_types:
        resources.append(
            _transformer(
                _activities,
                "activities",
                refs,
                primary_key=PRIMARY_KEYS["activities"],
                write_disposition=MERGE,
                parallelized=True,
                legacy_merge_key=True,
            )(context=context)
        )
    return resources
