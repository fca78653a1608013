"""Operations: `commbox-etl status` (what the destination holds, how far behind it is) and
`commbox-etl doctor` (configuration, API, key and destination, one line each with the fix).

Status reads the destination, not the local working folder: the state of every pipeline that wrote
to the dataset (dlt's `_dlt_pipeline_state`, committed with each load), the row counts and dlt's
`_dlt_loads`. That covers cron runs, Airflow's per-stream pipelines and backfills alike. Only the
last run's failure, which leaves nothing in the destination, comes from the local dlt trace.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dlt
import requests
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.versioned_state import decompress_state

from .client import ApiError, AuthError, CommBoxClient
from .config import ConfigError, config_error_from_dlt
from .report import RECONCILIATION_NOT_BUILT, Reconciliation, read_reconciliation
from .settings import MANAGERS, STATS_STREAMS, SYSTEM_STATUS
from .tables import TABLE_COLUMNS

STATE_TABLE = "_dlt_pipeline_state"
LOADS_TABLE = "_dlt_loads"
DOCTOR_TABLE = "_commbox_doctor"


# ---------------------------------------------------------------------------------------- status


@dataclass
class StreamStatus:
    stream_id: int
    last_window_at: datetime | None = None  # windows are closed up to here
    last_window_source: str = ""  # "state" (the stored cursor) or "data" (the newest updated_at)
    pipeline: str | None = None
    mode: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    def lag_seconds(self, now: datetime) -> float | None:
        if self.last_window_at is None:
            return None
        return max(0.0, (now - self.last_window_at).total_seconds())


@dataclass
class LastRun:
    finished_at: datetime | None
    ok: bool
    detail: str


@dataclass
class Status:
    pipeline_name: str
    destination: str
    dataset: str
    now: datetime
    has_dataset: bool
    streams: list[StreamStatus] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    last_load_at: datetime | None = None
    last_load_id: str | None = None
    last_load_schema: str | None = None
    last_run: LastRun | None = None
    # first/last agent replies vs CommBox's own figures; None = the views were never built
    reconciliation: Reconciliation | None = None
    # Seconds the API could not list whole and no run has read whole since: (stream id, start, tries)
    open_holes: list[tuple[int, datetime, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for monitoring (`commbox-etl status --json`)."""
        return {
            "pipeline": self.pipeline_name,
            "destination": self.destination,
            "dataset": self.dataset,
            "now": _iso(self.now),
            "streams": [
                {
                    "stream_id": s.stream_id,
                    "last_window_at": _iso(s.last_window_at),
                    "last_window_source": s.last_window_source,
                    "lag_seconds": s.lag_seconds(self.now),
                    "pipeline": s.pipeline,
                    "mode": s.mode,
                    "rows": s.rows,
                }
                for s in self.streams
            ],
            "tables": self.tables,
            "last_load": {"at": _iso(self.last_load_at), "load_id": self.last_load_id},
            "reconciliation": None if self.reconciliation is None else self.reconciliation.as_dict(),
            "open_holes": [
                {"stream_id": stream_id, "start_at": _iso(start_at), "tries": tries}
                for stream_id, start_at, tries in self.open_holes
            ],
            "last_run": None
            if self.last_run is None
            else {
                "finished_at": _iso(self.last_run.finished_at),
                "result": "ok" if self.last_run.ok else "failed",
                "detail": self.last_run.detail,
            },
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None


def format_lag(seconds: float | None) -> str:
    """`3d 4h`, `5h 10m`, `12m`, `40s`: precise enough to tell a stuck schedule from a slow one."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _stored_states(client: Any) -> dict[str, dict[str, Any]]:
    """The newest committed state of each pipeline that loaded into the dataset."""
    states = client.make_qualified_table_name(STATE_TABLE)
    loads = client.make_qualified_table_name(LOADS_TABLE)
    rows = client.execute_sql(
        f"select s.pipeline_name, s.state from {states} as s "
        f"inner join {loads} as l on l.load_id = s._dlt_load_id "
        "where l.status = 0 order by s._dlt_load_id desc"
    )
    found: dict[str, dict[str, Any]] = {}
    for pipeline_name, compressed in rows:
        if pipeline_name not in found:
            try:
                found[pipeline_name] = decompress_state(compressed)
            except Exception:  # a state written by another tool: not ours to read
                continue
    return found


def _stream_states(states: dict[str, dict[str, Any]], preferred: str) -> dict[int, StreamStatus]:
    """Each stream's furthest stored cursor, from whichever pipeline holds it (the named one wins
    a tie: a cron schedule, or Airflow's per-stream pipelines)."""
    streams: dict[int, StreamStatus] = {}
    ordered = sorted(states.items(), key=lambda item: item[0] != preferred)
    for pipeline_name, state in ordered:
        resources = state.get("sources", {}).get("commbox", {}).get("resources", {})
        for key, stream in resources.get("conversations", {}).get("streams", {}).items():
            cursor_at = _utc(stream.get("cursor_at"))
            if cursor_at is None and stream.get("cursor") is not None:
                cursor_at = datetime.fromtimestamp(int(stream["cursor"]), tz=UTC)
            stream_id = int(key)
            current = streams.get(stream_id)
            if current is None or (
                cursor_at is not None
                and (current.last_window_at is None or cursor_at > current.last_window_at)
            ):
                streams[stream_id] = StreamStatus(
                    stream_id, cursor_at, "state", pipeline_name, stream.get("mode")
                )
    return streams


def _existing_tables(pipeline: dlt.Pipeline) -> dict[str, set[str]]:
    with pipeline.destination_client() as job_client:
        return {
            table: set(columns)
            for table, columns in job_client.get_storage_tables(sorted(TABLE_COLUMNS))  # type: ignore[attr-defined]
            if columns
        }


def _count_rows(client: Any, tables: dict[str, set[str]]) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """Rows per table, and per stream where a row belongs to one (directly or by its conversation)."""
    totals: dict[str, int] = {}
    per_stream: dict[int, dict[str, int]] = {}
    objects = client.make_qualified_table_name("objects")
    for table, columns in sorted(tables.items()):
        name = client.make_qualified_table_name(table)
        totals[table] = int(client.execute_sql(f"select count(*) from {name}")[0][0])
        if "stream_id" in columns:
            sql = f"select stream_id, count(*) from {name} group by stream_id"
        elif "object_id" in columns and "objects" in tables:
            sql = (
                f"select o.stream_id, count(*) from {name} as t "
                f"inner join {objects} as o on o.object_id = t.object_id group by o.stream_id"
            )
        else:
            continue
        for stream_id, count in client.execute_sql(sql):
            if stream_id is not None:
                per_stream.setdefault(int(stream_id), {})[table] = int(count)
    return totals, per_stream


def _last_run(pipeline: dlt.Pipeline) -> LastRun | None:
    """The last dlt operation of this pipeline on this machine, from its local trace."""
    try:
        trace = pipeline.last_trace
    except Exception:
        return None
    if trace is None:
        return None
    for step in trace.steps:
        if step.step_exception:
            message = " ".join(str(step.step_exception).split())[:300]
            return LastRun(_utc(trace.finished_at), False, f"failed in {step.step}: {message}")
    return LastRun(_utc(trace.finished_at), True, "ok")


def read_status(pipeline: dlt.Pipeline, now: datetime | None = None) -> Status:
    """What the destination holds for this dataset: streams, rows, the last load and run, and how
    many conversations' first/last agent replies agree with CommBox's own figures (None until the
    views are built).

    Args:
        pipeline: a pipeline on the destination and dataset to inspect (`runner.make_pipeline`);
            its name selects the local trace for the last run's result.
        now: the moment lags are measured to (default: the current UTC time).
    """
    status = Status(
        pipeline.pipeline_name,
        pipeline.destination.destination_name,
        pipeline.dataset_name,
        now or datetime.now(UTC),
        has_dataset=False,
    )
    status.last_run = _last_run(pipeline)
    with pipeline.sql_client() as client:
        status.has_dataset = client.has_dataset()
        if not status.has_dataset:
            return status
        tables = _existing_tables(pipeline)
        status.tables, per_stream = _count_rows(client, tables)
        streams: dict[int, StreamStatus] = {}
        with contextlib.suppress(Exception):  # no state table yet: nothing was committed
            streams = _stream_states(_stored_states(client), pipeline.pipeline_name)
        if "objects" in tables:
            objects = client.make_qualified_table_name("objects")
            for stream_id, newest in client.execute_sql(
                f"select stream_id, max(updated_at) from {objects} group by stream_id"
            ):
                if stream_id is None:
                    continue
                stream = streams.setdefault(int(stream_id), StreamStatus(int(stream_id)))
                if stream.last_window_at is None:
                    # no stored cursor (Airflow interval runs, backfills): the newest change loaded
                    stream.last_window_at, stream.last_window_source = _utc(newest), "data"
        for stream_id, rows in per_stream.items():
            streams.setdefault(stream_id, StreamStatus(stream_id)).rows = rows
        status.streams = [streams[key] for key in sorted(streams)]
        with contextlib.suppress(Exception):
            loads = client.make_qualified_table_name(LOADS_TABLE)
            rows = client.execute_sql(
                f"select load_id, schema_name, inserted_at from {loads} where status = 0 "
                "order by inserted_at desc limit 1"
            )
            if rows:
                status.last_load_id, status.last_load_schema = rows[0][0], rows[0][1]
                status.last_load_at = _utc(rows[0][2])
        status.reconciliation = read_reconciliation(client)
        if "holes" in tables:
            holes = client.make_qualified_table_name("holes")
            status.open_holes = [
                (int(stream_id), _utc(start_at), int(tries or 0))
                for stream_id, start_at, tries in client.execute_sql(
                    f"select stream_id, start_at, tries from {holes} where is_open order by stream_id, start_at"
                )
            ]
    return status


STREAM_TABLES = ("objects", "childs", "activities", "transcripts", "bad_records")


def render_status(status: Status) -> str:
    """The status as a few aligned lines for a terminal or a log."""
    lines = [
        f"pipeline {status.pipeline_name}: {status.destination}, dataset {status.dataset}, "
        f"now {_iso(status.now)}"
    ]
    if not status.has_dataset:
        lines.append(f"nothing loaded yet: dataset {status.dataset} does not exist (run `commbox-etl run`)")
        lines.append(_last_run_line(status))
        return "\n".join(lines)
    header = ["stream", "last window to", "lag", "from", *STREAM_TABLES]
    table = [header]
    for stream in status.streams:
        origin = stream.last_window_source
        if stream.pipeline:
            origin = f"state of {stream.pipeline}" + (f" ({stream.mode})" if stream.mode else "")
        elif origin == "data":
            origin = "newest updated_at"
        table.append(
            [
                str(stream.stream_id),
                _iso(stream.last_window_at) or "-",
                format_lag(stream.lag_seconds(status.now)),
                origin or "-",
                *(str(stream.rows.get(name, 0)) for name in STREAM_TABLES),
            ]
        )
    if len(table) == 1:
        table.append(["(none)", "-", "-", "-", *("0" for _ in STREAM_TABLES)])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("")
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )
    lines.append("")
    lines.append(
        "rows: " + (" ".join(f"{name}={count}" for name, count in sorted(status.tables.items())) or "none")
    )
    if status.last_load_at is not None:
        lines.append(
            f"last load: {_iso(status.last_load_at)} (load {status.last_load_id}, schema {status.last_load_schema})"
        )
    else:
        lines.append("last load: none")
    lines.extend(status.reconciliation.lines() if status.reconciliation else [RECONCILIATION_NOT_BUILT])
    if status.open_holes:
        named = ", ".join(
            f"stream {stream_id} second {_iso(start_at)} ({tries} tries)"
            for stream_id, start_at, tries in status.open_holes
        )
        lines.append(f"open holes (seconds not yet read whole, re-read every run): {named}")
    else:
        lines.append("open holes: none")
    lines.append(_last_run_line(status))
    return "\n".join(lines)


def _last_run_line(status: Status) -> str:
    prefix = f"last run of {status.pipeline_name} on this machine:"
    if status.last_run is None:
        return f"{prefix} no local trace"
    result = "ok" if status.last_run.ok else status.last_run.detail
    return f"{prefix} {_iso(status.last_run.finished_at)} {result}"


# ---------------------------------------------------------------------------------------- doctor


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    warning: bool = False

    def line(self) -> str:
        """One line per check; secrets are redacted (a message may quote a URL or an error)."""
        from .redact import redact

        mark = "warn" if self.warning else ("ok  " if self.ok else "FAIL")
        return redact(f"{mark} {self.name}: {' '.join(self.message.split())}")


@dataclass
class _Context:
    settings: Any = None
    api_key: str | None = None


def _one_line(error: BaseException) -> str:
    from .redact import redact

    return redact(" ".join(str(error).split()))[:300]


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; whatever it raises becomes a failed check of one line, never a traceback."""
    try:
        return check()
    except Exception as error:
        return Check(name, False, f"{type(error).__name__}: {_one_line(error)}")


def _check_config(context: _Context, overrides: dict[str, Any]) -> Check:
    from . import commbox_source

    try:
        source = commbox_source(**overrides)
    except ConfigFieldMissingException as missing:
        key = missing.fields[0]
        return Check(
            "config",
            False,
            f"{key} is missing: set it in .dlt/secrets.toml [sources.commbox] or as SOURCES__COMMBOX__{key.upper()}",
        )
    except ConfigValueCannotBeCoercedException as error:
        return Check(
            "config", False, f"{config_error_from_dlt(error)}: fix it in .dlt/config.toml or the environment"
        )
    except ConfigError as error:
        return Check("config", False, f"{error}: fix it in .dlt/config.toml or the environment")
    run_context = source.resources["conversations"].run_context
    context.settings = run_context.settings
    # the key as the source resolved it (secrets.toml, environment or override), to check it below
    context.api_key = run_context.client._auth.removeprefix("Bearer ")
    settings = context.settings
    streams = ",".join(map(str, settings.stream_ids)) or "discovered from /stats/streams"
    return Check(
        "config",
        True,
        f"base_url {settings.base_url}, streams {streams}, start_date {settings.start_at.date().isoformat()}",
    )


def _check_sla() -> Check:
    from .runner import read_sla_config

    try:
        read_sla_config()
    except ConfigError as error:
        return Check("sla", False, f"{error}: fix the [sla] section of .dlt/config.toml")
    except Exception as error:
        return Check("sla", False, f"cannot read the [sla] section: {_one_line(error)}")
    return Check("sla", True, "[sla] configuration is valid")


def _check_api(context: _Context, timeout: float) -> Check:
    """Does anything answer at base_url? Any HTTP response counts, even a 401."""
    url = context.settings.base_url.rstrip("/") + SYSTEM_STATUS
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as error:
        return Check(
            "api",
            False,
            f"no answer from {context.settings.base_url} ({type(error).__name__}): check base_url and "
            "that this machine can reach it",
        )
    took = time.monotonic() - started
    if response.status_code >= 500:
        return Check(
            "api", False, f"{url} answered {response.status_code}: the API is failing, try again later"
        )
    return Check("api", True, f"{context.settings.base_url} answered in {took:.2f}s")


def _check_key(context: _Context, timeout: float) -> Check:
    settings = context.settings
    client = CommBoxClient(
        settings.base_url,
        context.api_key or "",
        max_attempts=2,
        connect_timeout_seconds=timeout,
        request_timeout_seconds=timeout,
        max_retry_wait_seconds=min(10.0, settings.max_retry_wait_seconds),
    )
    try:
        envelope = client.get(SYSTEM_STATUS)
        client.get(MANAGERS)
    except AuthError:
        return Check(
            "key",
            False,
            "the API rejected the key (401): set a valid api_key in .dlt/secrets.toml or SOURCES__COMMBOX__API_KEY",
        )
    except ApiError as error:
        return Check("key", False, f"{_one_line(error)}: the key could not be checked")
    detail = f", server time {_iso(envelope.response_time)}" if envelope.response_time else ""
    streams = _check_streams(client, settings.stream_ids)
    return Check("key", True, f"the API accepted the key{detail}{streams}")


def _check_streams(client: CommBoxClient, configured: tuple[int, ...]) -> str:
    try:
        rows = client.get(STATS_STREAMS).data or []
    except ApiError:
        return ""
    seen = set()
    for row in rows if isinstance(rows, list) else [rows]:
        if isinstance(row, dict):
            with contextlib.suppress(TypeError, ValueError):
                seen.add(int(str(row.get("streamId", row.get("streamid"))).strip().rstrip(",")))
    if not configured:
        return f"; {len(seen)} streams visible"
    missing = sorted(set(configured) - seen)
    if missing:
        return f"; streams {missing} have no open conversations in /stats/streams (check stream_ids)"
    return f"; all {len(configured)} configured streams visible"


def _check_destination(make: Callable[[], dlt.Pipeline]) -> Check:
    """Create (if needed) the dataset, create, fill, read and drop a scratch table."""
    try:
        pipeline = make()
    except ConfigError as error:
        return Check("destination", False, f"{error}")
    where = f"{pipeline.destination.destination_name} dataset {pipeline.dataset_name}"
    scratch = f"{DOCTOR_TABLE}_{os.getpid()}"
    try:
        with pipeline.sql_client() as client:
            if not client.has_dataset():
                client.create_dataset()
            name = client.make_qualified_table_name(scratch)
            client.execute_sql(f"create table {name} (checked_at bigint)")
            try:
                client.execute_sql(f"insert into {name} (checked_at) values ({int(time.time())})")
                count = client.execute_sql(f"select count(*) from {name}")[0][0]
            finally:
                client.execute_sql(f"drop table {name}")
    except ConfigFieldMissingException as missing:
        destination = pipeline.destination.destination_name
        return Check(
            "destination",
            False,
            f"{where}: {', '.join(missing.fields)} missing: set [destination.{destination}] credentials "
            f"in .dlt/secrets.toml or DESTINATION__{destination.upper()}__CREDENTIALS",
        )
    except Exception as error:
        return Check(
            "destination",
            False,
            f"{where} is not writable ({_one_line(error)}): check the credentials and that the user may "
            "create schemas and tables",
        )
    if count != 1:
        return Check("destination", False, f"{where}: a scratch row did not read back")
    location = ""
    if pipeline.destination.destination_name == "duckdb":
        with contextlib.suppress(Exception):
            location = f" ({pipeline.destination_client().config.credentials.database})"  # type: ignore[attr-defined]
    return Check("destination", True, f"{where}{location} is writable")


def _check_lock(make: Callable[[], dlt.Pipeline]) -> Check:
    from .runner import RunLocked, pipeline_lock

    try:
        pipeline = make()
        with pipeline_lock(pipeline):
            pass
    except RunLocked as error:
        return Check("lock", True, f"{error}", warning=True)
    except Exception as error:
        return Check("lock", False, f"cannot take the run lock: {_one_line(error)}")
    return Check("lock", True, "no run in progress")


def run_doctor(
    make_pipeline: Callable[[], dlt.Pipeline],
    overrides: dict[str, Any] | None = None,
    timeout: float = 15.0,
) -> list[Check]:
    """Every check, in order; later checks that depend on a failed one are skipped.

    Args:
        make_pipeline: builds the pipeline to check the destination with (`runner.make_pipeline`).
        overrides: source arguments instead of the configuration (tests).
        timeout: seconds to wait for the API.
    """
    context = _Context()
    checks = [
        _guarded("config", lambda: _check_config(context, dict(overrides or {}))),
        _guarded("sla", _check_sla),
    ]
    if context.settings is not None:
        api = _guarded("api", lambda: _check_api(context, timeout))
        checks.append(api)
        if api.ok:
            checks.append(_guarded("key", lambda: _check_key(context, timeout)))
    checks.append(_guarded("destination", lambda: _check_destination(make_pipeline)))
    checks.append(_guarded("lock", lambda: _check_lock(make_pipeline)))
    return checks
