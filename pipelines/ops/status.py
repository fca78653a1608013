"""`commbox-etl status`: what the destination holds and how far behind it is.

Status reads the destination, not the local working folder: the state of every pipeline that wrote
to the dataset (dlt's `_dlt_pipeline_state`, committed with each load), the row counts and dlt's
`_dlt_loads`. That covers cron runs, Airflow's per-stream pipelines and backfills alike. Only the
last run's failure, which leaves nothing in the destination, comes from the local dlt trace.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dlt
from dlt.common.versioned_state import decompress_state

from ..commbox.tables import TABLE_COLUMNS
from ..reporting.report_data import RECONCILIATION_NOT_BUILT, Reconciliation, read_reconciliation
from ..reporting.views import INPUTS_SCHEMA

STATE_TABLE = "_dlt_pipeline_state"
LOADS_TABLE = "_dlt_loads"


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
    # The pace of each pipeline's last committed run against the limit it found (issue 16), from
    # the `pace` entry of its source state: pipeline name -> that entry.
    paces: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            "paces": self.paces,
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


def last_run(pipeline: dlt.Pipeline) -> LastRun | None:
    """The last dlt operation of this pipeline on this machine, from its local trace."""
    try:
        trace = pipeline.last_trace
    except Exception:
        return None
    if trace is None:
        return None
    for step in trace.steps:
        if step.step_exception:
            message = " ".join(str(step.step_exception).split())
            # dlt wraps the cause in step and resource errors; the cause is what one can act on.
            message = message.rsplit("caused an exception: ", 1)[-1][:300]
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
    status.last_run = last_run(pipeline)
    with pipeline.sql_client() as client:
        status.has_dataset = client.has_dataset()
        if not status.has_dataset:
            return status
        tables = _existing_tables(pipeline)
        status.tables, per_stream = _count_rows(client, tables)
        streams: dict[int, StreamStatus] = {}
        with contextlib.suppress(Exception):  # no state table yet: nothing was committed
            stored = _stored_states(client)
            streams = _stream_states(stored, pipeline.pipeline_name)
            status.paces = _paces(stored)
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
            # The SLA inputs' own loads (views.INPUTS_SCHEMA) say nothing about how fresh the data is.
            rows = client.execute_sql(
                f"select load_id, schema_name, inserted_at from {loads} where status = 0 "
                "and schema_name <> %s order by inserted_at desc limit 1",
                INPUTS_SCHEMA,
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


def _paces(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each pipeline's last committed `pace` entry (written by the source at the end of its read)."""
    found = {}
    for pipeline_name, state in sorted(states.items()):
        pace = state.get("sources", {}).get("commbox", {}).get("pace")
        if isinstance(pace, dict):
            found[pipeline_name] = pace
    return found


def pace_lines(paces: dict[str, dict[str, Any]]) -> list[str]:
    """One line per pipeline: the pace its last run achieved against the limit it found."""
    lines = []
    for pipeline_name, pace in paces.items():
        achieved, limit = float(pace.get("achieved_rps") or 0), float(pace.get("limit_rps") or 0)
        if limit:
            found = "configured" if pace.get("configured") else "found"
            against = f"of a {limit:.1f} req/s limit {found} ({100 * achieved / limit:.0f}%)"
        else:
            against = "(no limit met: never throttled)"
        processes = int(pace.get("processes") or 1)
        shared = f", {processes} processes sharing the account" if processes > 1 else ""
        lines.append(
            f"pace of {pipeline_name}: {achieved:.1f} req/s {against}, {pace.get('requests', 0)} requests, "
            f"{pace.get('throttled', 0)} answered 429{shared} (run at {str(pace.get('at', '-'))[:19]})"
        )
    return lines


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
        "stored rows: "
        + (" ".join(f"{name}={count}" for name, count in sorted(status.tables.items())) or "none")
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
    lines.extend(pace_lines(status.paces))
    lines.append(_last_run_line(status))
    return "\n".join(lines)


def _last_run_line(status: Status) -> str:
    prefix = f"last run of {status.pipeline_name} on this machine:"
    if status.last_run is None:
        return f"{prefix} no local trace"
    result = "ok" if status.last_run.ok else status.last_run.detail
    return f"{prefix} {_iso(status.last_run.finished_at)} {result}"
