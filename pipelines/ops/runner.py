"""Run the CommBox source into a destination: one lock per pipeline, pending loads first, a summary.

The command line (`pipelines/cli.py`) stays thin; everything a scheduler needs lives here so that
Airflow or a script can call `run_pipeline` directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import dlt
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from ..commbox import RunContext, load_source_config, source_for
from ..commbox.client import ApiError, recalled_pace
from ..commbox.config import (
    ConfigError,
    SourceConfig,
    config_error_from_dlt,
    parse_moment,
    parse_stream_ids,
    sla_section,
    validate_dataset_name,
)
from ..commbox.redact import redact, scrub_trace
from ..commbox.settings import (
    DEFAULT_DUCKDB_FILE,
    DEFAULT_PIPELINE_NAME,
    DEFAULT_RAW_DATASET,
    DUCKDB_MEMORY_LIMIT,
)
from .versions import keep_newest

logger = logging.getLogger("commbox.runner")

DESTINATIONS = ("duckdb", "postgres", "bigquery")
PROGRESS_EVERY_SECONDS = 15.0
# How long a step waits for another process to release the destination (DuckDB's file lock).
DESTINATION_LOCK_WAIT_SECONDS = 600.0
T = TypeVar("T")


class RunLocked(RuntimeError):
    """Another run of the same pipeline holds the lock."""


@dataclass
class RunSummary:
    pipeline_name: str
    destination: str
    dataset: str
    rows: dict[str, int] = field(default_factory=dict)
    windows: int = 0
    conversations: int = 0
    requests: int = 0
    throttled: int = 0
    warnings: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    views: list[str] = field(default_factory=list)
    # Seconds the API could not list whole, as (stream id, unix start, unix end): everything else
    # loaded, these are recorded in the state and the `holes` table and re-read on every run.
    holes: list[tuple[int, int, int]] = field(default_factory=list)
    # Loads committed before the last one: a long run commits one every `checkpoint_conversations`.
    checkpoints: int = 0
    # The pace the extraction achieved (answered requests a second) against the limit its budget
    # held at the end (configured, or learnt from 429s with every process sharing the account; 0:
    # nothing limited it). Issue 16.
    achieved_rps: float = 0.0
    limit_rps: float = 0.0
    extract_seconds: float = 0.0
    ok: bool = True

    def holes_line(self) -> str:
        """One line naming every hole, for stderr and monitoring ("" when there is none)."""
        if not self.holes:
            return ""
        named = ", ".join(
            f"stream {stream_id} second {datetime.fromtimestamp(start, tz=UTC).isoformat()} ({start})"
            for stream_id, start, _ in self.holes
        )
        return (
            f"{len(self.holes)} second(s) could not be read whole: {named}; everything else was loaded "
            "and these are re-read on every run until they read whole"
        )

    def line(self) -> str:
        """One line for log monitoring: `key=value` pairs after a fixed prefix."""
        rows = " ".join(f"rows.{table}={count}" for table, count in sorted(self.rows.items()))
        return (
            f"commbox-etl summary pipeline={self.pipeline_name} result={'ok' if self.ok else 'failed'} "
            f"destination={self.destination} dataset={self.dataset} {rows} windows={self.windows} "
            f"conversations={self.conversations} requests={self.requests} throttled={self.throttled} "
            f"warnings={sum(self.warnings.values())} holes={len(self.holes)} checkpoints={self.checkpoints} "
            f"achieved_rps={self.achieved_rps:.1f} limit_rps={self.limit_rps:.1f} duration_s={self.seconds:.1f}"
        ).replace("  ", " ")


def resolve_destination(destination: str | None) -> str:
    name = (destination or dlt.config.get("destination_type") or "duckdb").strip().lower()
    if name not in DESTINATIONS:
        raise ConfigError(f"destination: {name!r} is not one of {', '.join(DESTINATIONS)}")
    return name


# DuckDB's settings on every connection the pipeline opens (load, newest wins, views), under any
# `global_config` the user sets. Left alone DuckDB takes up to 80% of the machine, keeps the blocks
# of every table a merge scanned cached up to that limit, and a run's peak grew with the warehouse
# (bench/README.md, "Memory"): a small limit makes it spill to `<file>.tmp` instead, which costs
# little for the merges and deletes a load runs.
DUCKDB_GLOBAL_CONFIG: dict[str, Any] = {"memory_limit": DUCKDB_MEMORY_LIMIT}


def duckdb_global_config(configured: Any = None) -> dict[str, Any]:
    """The DuckDB settings the pipeline connects with: `DUCKDB_GLOBAL_CONFIG` under the user's
    `[destination.duckdb.credentials] global_config` (or `DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG`
    as JSON), the user's keys winning.

    Args:
        configured: `destination.duckdb.credentials` as read (a path, a table, or None).

    Raises:
        ConfigError: `global_config` is not a table of settings (one line naming the key).
    """
    if isinstance(configured, Mapping):
        extra: Any = configured.get("global_config")
    else:
        extra = dlt.config.get("destination.duckdb.credentials.global_config")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = None
            raise ConfigError(
                "destination.duckdb.credentials.global_config: not a table of DuckDB settings "
                '(TOML {memory_limit = "1GB"} or JSON {"memory_limit": "1GB"})'
            ) from None
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigError(
            "destination.duckdb.credentials.global_config: not a table of DuckDB settings "
            '(TOML {memory_limit = "1GB"} or JSON {"memory_limit": "1GB"})'
        )
    return {**DUCKDB_GLOBAL_CONFIG, **dict(extra or {})}


def duckdb_credentials(path: str, global_config: dict[str, Any] | None = None) -> DuckDbCredentials:
    """DuckDB on `path` with the pipeline's settings (`duckdb_global_config`) applied to every
    connection dlt opens on it."""
    return DuckDbCredentials(path, global_config=global_config or dict(DUCKDB_GLOBAL_CONFIG))


def default_duckdb_file() -> Path | None:
    """The DuckDB file `make_pipeline` writes to: `destination.duckdb.credentials` when it is a path
    (or a table naming its `database`), else `commbox.duckdb` in the working directory; None when
    the credentials name no file."""
    configured = dlt.config.get("destination.duckdb.credentials")
    path = _duckdb_path(configured)
    if configured and path is None:
        return None
    database = duckdb_credentials(path or str(Path(DEFAULT_DUCKDB_FILE).resolve())).database
    return None if not database or database == ":memory:" else Path(database)


def _duckdb_path(configured: Any) -> str | None:
    """The file `destination.duckdb.credentials` names: the value itself when it is a string, its
    `database` when it is a table holding nothing but `database` and `global_config` (anything
    else there is dlt's to resolve)."""
    if isinstance(configured, str):
        return configured
    if isinstance(configured, Mapping) and set(configured) <= {"database", "global_config"}:
        database = configured.get("database")
        return database if isinstance(database, str) else None
    return None


def make_pipeline(
    *,
    destination: str | None = None,
    dataset: str | None = None,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    pipelines_dir: str | None = None,
) -> dlt.Pipeline:
    """A dlt pipeline on the chosen destination; DuckDB writes `commbox.duckdb` in the working
    directory unless `destination.duckdb.credentials` says otherwise, with `duckdb_global_config`'s
    settings (a memory ceiling) on every connection.

    Raises:
        ConfigError: an unknown destination, a bad dataset name or DuckDB `global_config`.
    """
    name = resolve_destination(destination)
    dataset_name = validate_dataset_name(dataset or dlt.config.get("dataset_name") or DEFAULT_RAW_DATASET)
    target: Any = name
    configured = dlt.config.get("destination.duckdb.credentials") if name == "duckdb" else None
    path = _duckdb_path(configured)
    if name == "duckdb" and (not configured or path is not None):
        target = dlt.destinations.duckdb(
            duckdb_credentials(
                path or str(Path(DEFAULT_DUCKDB_FILE).resolve()), duckdb_global_config(configured)
            )
        )
    elif name == "bigquery":
        try:
            import google.cloud.bigquery  # noqa: F401
        except ImportError:
            raise ConfigError("destination: bigquery needs the extra: pip install -e '.[bigquery]'") from None
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=target,
        dataset_name=dataset_name,
        pipelines_dir=pipelines_dir,
    )


def preferred_file_format(pipeline: dlt.Pipeline) -> Any:
    """Parquet where the destination bulk-loads it (DuckDB, BigQuery: several times faster than
    INSERT statements), CSV through COPY on PostgreSQL."""
    return {"duckdb": "parquet", "bigquery": "parquet", "postgres": "csv"}.get(
        pipeline.destination.destination_name
    )


@contextlib.contextmanager
def pipeline_lock(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Hold an exclusive lock per pipeline name, so a second scheduled run refuses to start."""
    lock_dir = Path(pipeline.pipelines_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{pipeline.pipeline_name}.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"another run of pipeline {pipeline.pipeline_name!r} is in progress (lock {path}); "
                "not starting a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def backfill_pipeline_name(start: Any, end: Any, stream_ids: Sequence[int]) -> str:
    """Backfills get their own pipeline (own state and working folder) named after the range, so
    they never touch the scheduled state and can run beside the schedule and each other.

    The name is built from the parsed instants in UTC, never from how they were spelled: a whole
    day is `20240329` (the names date backfills always had), any other instant `20240329T100000Z`,
    so `12:00+02:00` and `10:00Z` are one pipeline and the name is always a valid dlt name.
    """
    streams = (
        hashlib.sha1(",".join(map(str, sorted(stream_ids))).encode()).hexdigest()[:8] if stream_ids else "all"
    )

    def label(value: Any, key: str) -> str:
        moment = parse_moment(value, key).astimezone(UTC)
        if moment == moment.replace(hour=0, minute=0, second=0, microsecond=0):
            return moment.strftime("%Y%m%d")
        return (
            moment.strftime("%Y%m%dT%H%M%S")
            + (f"{moment.microsecond:06d}" if moment.microsecond else "")
            + "Z"
        )

    return f"{DEFAULT_PIPELINE_NAME}_backfill_{label(start, '--start')}_{label(end, '--end')}_{streams}"


def _is_lock_conflict(error: BaseException | None) -> bool:
    while error is not None:
        if "Could not set lock on file" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _waiting_for_destination_lock(step: str, action: Callable[[], T]) -> T:
    """Run a step that opens the destination, waiting while another process holds its file lock.

    DuckDB allows one writing process per file, so two backfills (or a backfill beside the schedule)
    that load at the same moment would fail on the lock. A package whose load could not start stays
    pending in dlt, so trying again loads it exactly once; the wait is bounded.
    """
    deadline = time.monotonic() + DESTINATION_LOCK_WAIT_SECONDS
    delay = 0.2
    while True:
        try:
            return action()
        except Exception as error:
            if not _is_lock_conflict(error) or time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "%s: the destination is locked by another process; trying again in %.1fs", step, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_UNREACHABLE = re.compile(
    r"(could not connect[^\n]*|connection to server[^\n]*|server closed the connection[^\n]*"
    r"|terminating connection[^\n]*|the database system is (?:shutting down|starting up)[^\n]*)"
)


def _load(pipeline: dlt.Pipeline) -> Any:
    """`pipeline.load()`, saying plainly when the destination could not be reached: dlt's own error
    is a job-retry message with a traceback inside."""
    try:
        return _waiting_for_destination_lock("load", pipeline.load)
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            found = _UNREACHABLE.search(str(cause))
            if found:
                logger.error(
                    "load: the destination could not be reached (%s); nothing was committed for this "
                    "package and it stays pending: the next run loads it",
                    found.group(1).strip()[:200],
                )
                break
            cause = cause.__cause__ or cause.__context__
        raise


def _progress_reporter(context: RunContext, stop: threading.Event) -> None:
    while not stop.wait(PROGRESS_EVERY_SECONDS):
        streams = ", ".join(
            f"{stream_id}: {p.get('windows', 0)} windows/{p.get('conversations', 0)} conversations"
            for stream_id, p in sorted(context.progress.items())
        )
        logger.info("progress: requests=%s %s", context.client.stats.get("requests", 0), streams)


def _scrubbing_trace(run: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """Rewrite dlt's trace file without secrets once the run ends, whichever way it ends (see
    `redact.scrub_trace`)."""

    @functools.wraps(run)
    def wrapper(pipeline: dlt.Pipeline, *args: Any, **kwargs: Any) -> RunSummary:
        try:
            return run(pipeline, *args, **kwargs)
        finally:
            scrub_trace(pipeline)

    return wrapper


@_scrubbing_trace
def run_pipeline(
    pipeline: dlt.Pipeline,
    *,
    backfill: tuple[str, str] | None = None,
    stream_ids: Any = None,
    build_views: bool = True,
    source_overrides: dict[str, Any] | None = None,
    refresh: Any = None,
) -> RunSummary:
    """Extract, normalize and load one run; finish a previous run's pending packages first.

    Raises `ConfigError` before any request for a bad configuration, `RunLocked` when another run of
    the pipeline is active, `ApiError` / `PipelineStepFailed` when the run fails. On failure no state
    moves: dlt commits the source state together with the load package.
    """
    started = time.monotonic()
    fix_mmap_threshold()
    sla_config = read_sla_config() if build_views else None
    overrides = dict(source_overrides or {})
    if stream_ids is not None:
        overrides["stream_ids"] = parse_stream_ids(stream_ids)
    if backfill is not None:
        start, end = (
            parse_moment(value, key) for value, key in zip(backfill, ("--start", "--end"), strict=True)
        )
        if end <= start:
            raise ConfigError(f"--end {backfill[1]} is not after --start {backfill[0]}")
        overrides.update(start_date=start, end_date=end, backfill=True)
    config = _source_config(overrides)
    # Whatever would stop the run after the load is found before any request.
    check_destination(pipeline)
    if build_views:
        from ..reporting.views import check_buildable

        check_buildable(pipeline)
    summary = RunSummary(pipeline.pipeline_name, pipeline.destination.destination_name, pipeline.dataset_name)
    holes: dict[int, list[tuple[int, int]]] = {}
    with pipeline_lock(pipeline):
        _waiting_for_destination_lock("sync", pipeline.sync_destination)
        if pipeline.has_pending_data:
            discard_unfinished_packages(pipeline)
        # The rate a recent run of this pipeline learnt (committed with its state): the first
        # slice starts there instead of finding it again; a wrong one is re-learnt at its 429.
        last = pipeline.state.get("sources", {}).get("commbox", {}).get("pace")
        learnt = recalled_pace(
            last.get("learnt") if isinstance(last, dict) else None, config.settings.base_url
        )
        while True:
            # Each slice reads with a context of its own (client, counters, `more`), built here and
            # handed to the source, so the counters are read from it after the extraction.
            context = RunContext(config)
            # Each slice's budget goes on from what the one before it learnt.
            context.client.budget.resume(learnt)
            _run_slice(pipeline, source_for(context), context, summary, refresh)
            learnt = context.client.budget.learnt() or learnt
            holes.update(context.holes)
            summary.holes = [
                (stream_id, a, b) for stream_id, found in sorted(holes.items()) for a, b in found
            ]
            if not context.more:
                break
            # A checkpoint: this slice is loaded with its state; the next one goes on from there.
            summary.checkpoints += 1
            logger.info(
                "checkpoint %s loaded: %s conversations so far; reading on",
                summary.checkpoints,
                summary.conversations,
            )
            refresh = None
    for warning, count in sorted(summary.warnings.items()):
        logger.warning("%s (%s×)", warning, count)
    if build_views:
        try:
            summary.views = _waiting_for_destination_lock(
                "views", lambda: build_reporting_views(pipeline, sla_config=sla_config)
            )
        except Exception as error:
            raise ViewsFailed(
                f"views: {_innermost_line(error)}; this run's raw data is loaded, "
                "`commbox-etl views` rebuilds the views"
            ) from error
    summary.seconds = time.monotonic() - started
    return summary


def check_destination(pipeline: dlt.Pipeline) -> None:
    """Resolve the destination's configuration as the load will, without connecting.

    Raises:
        ConfigError: the credentials are missing (one line naming the key), before any request.
    """
    try:
        pipeline.destination_client()
    except ConfigFieldMissingException:
        name = pipeline.destination.destination_name
        variable = f"DESTINATION__{name.upper()}__CREDENTIALS"
        if name == "bigquery":
            variable += "__PROJECT_ID, __PRIVATE_KEY and __CLIENT_EMAIL"
        raise ConfigError(
            f"destination.{name}.credentials: missing; set [destination.{name}] credentials in "
            f".dlt/secrets.toml or {variable}"
        ) from None


def _source_config(overrides: dict[str, Any]) -> SourceConfig:
    """The source's configuration (`overrides` over `[sources.commbox]`), validated before any
    request; dlt's own configuration errors become one-line `ConfigError`s."""
    try:
        return load_source_config(**overrides)
    except (ConfigFieldMissingException, ConfigValueCannotBeCoercedException) as error:
        raise config_error_from_dlt(error) from None


@functools.cache
def _libc() -> Any:
    """The C library, for glibc's `malloc_trim` and `mallopt`; None where it cannot be loaded."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library is not glibc (musl, macOS)."""
    return getattr(_libc(), "malloc_trim", None)


# glibc's `mallopt` parameter for the size from which a block is its own mapping, returned to the
# system when freed (malloc.h).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its 128 KiB start, for this process, once.

    glibc raises the threshold to the size of each mapped block freed (up to 32 MB), after which the
    megabyte-sized buffers of the extract, normalize and load steps come from the heap, between
    smaller blocks still in use, and the heap cannot shrink past them: at 100,000 conversations the
    run's peak RSS was 405 MB with the moving threshold and 374 MB with it fixed (bench/README.md,
    "Findings: memory"). Setting it turns the adjustment off. Returns whether glibc took it.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def give_back_memory() -> None:
    """Return memory freed by a step to the system before the next one starts.

    glibc keeps the pages a step freed (the extract's thread pool spreads them over many arenas) and
    arrow's pool keeps its own; either is reused, but a run's peak RSS is the steps' high-water marks
    stacked on what earlier slices left kept (bench/README.md, "Findings: memory"). A few milliseconds
    a step.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    with contextlib.suppress(ImportError):
        import pyarrow

        pyarrow.default_memory_pool().release_unused()


def _run_slice(
    pipeline: dlt.Pipeline, source: Any, context: RunContext, summary: RunSummary, refresh: Any
) -> None:
    """Extract, normalize and load one slice of the run (all of it without checkpoints), adding its
    counters to `summary`. The slice's state is committed with its load package, so a failure loses
    at most this slice."""
    stop = threading.Event()
    reporter = threading.Thread(target=_progress_reporter, args=(context, stop), daemon=True)
    reporter.start()
    try:
        workers = context.settings.max_concurrency
        pipeline.extract(
            source,
            workers=workers,
            max_parallel_items=workers,
            loader_file_format=preferred_file_format(pipeline),
            refresh=refresh,
        )
    finally:
        stop.set()
        context.close()
        summary.requests += context.client.stats.get("requests", 0)
        summary.throttled += context.client.stats.get("throttled", 0)
        pace = context.pace()
        summary.extract_seconds += pace["seconds"]
        answered = summary.requests - summary.throttled
        summary.achieved_rps = (
            round(answered / summary.extract_seconds, 3) if summary.extract_seconds else 0.0
        )
        summary.limit_rps = pace["limit_rps"]
        for key, count in context.warnings.items():
            summary.warnings[key] = summary.warnings.get(key, 0) + count
        # Retries and repairs at the HTTP level count as warnings too: a run that survived a storm
        # says so.
        for key, count in context.client.stats.items():
            if key.startswith(("retry: ", "warning: ")):
                summary.warnings[f"http {key}"] = summary.warnings.get(f"http {key}", 0) + count
        summary.windows += sum(p.get("windows", 0) for p in context.progress.values())
        summary.conversations += sum(p.get("conversations", 0) for p in context.progress.values())
    give_back_memory()
    pipeline.normalize()
    give_back_memory()
    load_info = _load(pipeline)
    load_info.raise_on_failed_jobs()
    # Newest wins: drop what this load (or another pipeline's) superseded; see versions.py. A
    # checkpoint slice cleans up its own conversations only (the whole table after every slice grew
    # with the warehouse); the run's last slice cleans up the whole table.
    slice_loads = load_info.loads_ids if context.more else None
    _waiting_for_destination_lock("newest wins", lambda: keep_newest(pipeline, slice_loads))
    for table, count in loaded_row_counts(pipeline).items():
        summary.rows[table] = summary.rows.get(table, 0) + count
    give_back_memory()


class ViewsFailed(RuntimeError):
    """The load completed but the SLA views could not be built; the message is one line."""


def _innermost_line(error: BaseException) -> str:
    """The first line of the deepest cause: dlt wraps a lost connection in step and job errors
    whose own text is a traceback."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact(f"{type(error).__name__}: {lines[0] if lines else ''}")[:300]


def loaded_row_counts(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows this run loaded, per table (dlt's bookkeeping tables left out).

    The normalize step's counts are right for Parquet, but its CSV writer (PostgreSQL) adds up the
    number of fields of every row (`rows.streams=32` for 4 streams), so for CSV the counts of the
    extract step are taken: normalisation neither adds nor drops rows here (no nested tables).
    """
    trace = pipeline.last_trace
    if trace is None:
        return {}
    counts: dict[str, int] = {}
    if preferred_file_format(pipeline) == "csv" and trace.last_extract_info is not None:
        for metrics in trace.last_extract_info.metrics.values():
            for step in metrics:
                for table, metric in step["table_metrics"].items():
                    counts[table] = counts.get(table, 0) + metric.items_count
    elif trace.last_normalize_info is not None:
        counts = dict(trace.last_normalize_info.row_counts)
    return {table: count for table, count in counts.items() if not table.startswith("_dlt")}


def read_sla_config() -> Any:
    """The validated `[sla]` configuration; a bad one is a `ConfigError` before any request."""
    from ..reporting.sla import load_sla_config

    try:
        return load_sla_config(sla_section())
    except ValueError as error:
        raise ConfigError(str(error)) from None


def load_sla_tables(pipeline: dlt.Pipeline, sla_config: Any) -> None:
    """(Re)load the SLA policies, business windows and statuses for every stream and the whole span
    of the loaded data, so the views need no time-zone arithmetic."""
    from ..reporting.sla import sla_resources
    from ..reporting.views import load_inputs

    # Views read one version per conversation: loads that did not clean up after themselves (the
    # Airflow DAG's extract task loads with dlt's own task group) are cleaned up here.
    keep_newest(pipeline)
    with pipeline.sql_client() as client:
        objects = client.make_qualified_table_name("objects")
        rows = list(
            client.execute_sql(
                f"select stream_id, min(created_at), max(updated_at) from {objects} group by stream_id"
            )
        )
    if not rows:
        return
    stream_ids = sorted(int(row[0]) for row in rows if row[0] is not None)
    span_start = min(row[1] for row in rows if row[1] is not None)
    span_end = max(row[2] for row in rows if row[2] is not None)
    # Under a pipeline of their own: the data pipeline's trace and state stay the data run's.
    load_inputs(pipeline, sla_resources(sla_config, stream_ids, span_start, span_end))


def has_loaded_objects(pipeline: dlt.Pipeline) -> bool:
    schema = pipeline.default_schema
    return "objects" in schema.tables and bool(schema.get_table_columns("objects"))


def discard_unfinished_packages(pipeline: dlt.Pipeline) -> None:
    """Drop what a run that died left behind and fall back to the state the destination committed.

    Resuming a half-loaded package is not safe with merge tables: dlt truncates the staging tables
    when it resumes the package, which throws away the rows of the jobs that had already completed
    (a table written in two files loses one of them), while the state in the package says they
    loaded. So the package is discarded, the local state with it, and the next extract reads those
    windows again from the cursor of the last load that completed: every table merges, so re-reading
    costs requests, never rows.
    """
    packages = [*pipeline.list_extracted_load_packages(), *pipeline.list_normalized_load_packages()]
    logger.warning(
        "discarding %s load package(s) a previous run left unfinished (%s); their windows are read again",
        len(packages),
        ", ".join(packages),
    )
    pipeline.drop_pending_packages()
    pipeline.drop()
    _waiting_for_destination_lock("sync", pipeline.sync_destination)


def build_reporting_views(pipeline: dlt.Pipeline, as_of: Any = None, sla_config: Any = None) -> list[str]:
    """Load the SLA inputs and create the SLA views, once the raw tables exist."""
    from ..reporting.views import build_views

    if not has_loaded_objects(pipeline):
        return []
    load_sla_tables(pipeline, sla_config if sla_config is not None else read_sla_config())
    return build_views(pipeline, as_of=as_of)


__all__ = [
    "DESTINATIONS",
    "ApiError",
    "ConfigError",
    "PipelineStepFailed",
    "RunLocked",
    "RunSummary",
    "backfill_pipeline_name",
    "make_pipeline",
    "run_pipeline",
]
