"""A terminal SLA report: per channel, the last N local days up to the build's as_of_at.

Reads the reporting views (`build_views()` must have run): `agg_channel_sla_daily` for clocks, met,
breached, undetermined and compliance; `fct_sla_events` for the median first response over the whole
period (a median of daily medians would be wrong); `fct_backlog_daily` for the open backlog on the
last day; `fct_first_response_reconciliation` for the lines comparing the first and last agent
replies with CommBox's own firstResponseTime / lastResponseTime (also shown by `commbox-etl status`
and the HTML report). Every figure is defined in `report_data.py`, which the HTML report shares.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from .report_data import (
    FIRST_RESPONSE_CLOCKS,
    RECONCILIATION_NOT_BUILT,
    REPORTING_SCHEMA,
    UNDETERMINED_NOTE,
    as_date,
    clock_duration,
    compliance,
    median,
    period,
    read_reconciliation,
    rows,
)

EVENT_COUNTS = ("events", "met_events", "breached_events", "undetermined_events", "running_events")

COLUMNS = (
    ("stream", "stream_id", "{}"),
    ("clocks", "events", "{:,}"),
    ("met", "met_events", "{:,}"),
    ("breached", "breached_events", "{:,}"),
    ("undetermined", "undetermined_events", "{:,}"),
    ("compliance", "compliance", "{:.1%}"),
    ("running", "running_events", "{:,}"),
    ("median 1st resp", "median_first_response", None),
    ("open now", "open_conversations", "{:,}"),
    ("breaching now", "breached_conversations", "{:,}"),
)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_report(pipeline: Any, days: int = 7, schema: str = REPORTING_SCHEMA) -> str:
    """Per-channel SLA compliance, breaches, median first response and backlog, as aligned text.

    Args:
        pipeline: the dlt pipeline whose destination holds the views.
        days: how many local days, ending with the day of the build's as_of_at, to cover.
        schema: where the views live.

    Returns:
        The report (a title line and a table); a single line when there is no data.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    with pipeline.sql_client() as client:
        backlog_days = rows(
            client,
            f"select stream_id, local_date, open_conversations, breached_conversations, snapshot_at "
            f"from {schema}.fct_backlog_daily",
        )
        if not backlog_days:
            return "No conversations in the warehouse yet."
        last_day: dict[Any, dict[str, Any]] = {}
        for row in backlog_days:
            if (
                row["stream_id"] not in last_day
                or row["local_date"] > last_day[row["stream_id"]]["local_date"]
            ):
                last_day[row["stream_id"]] = row
        # The last day is the backlog's: the day of the build's as_of_at.
        start, end = period(max(r["local_date"] for r in last_day.values()), days)
        daily = rows(
            client,
            f"select stream_id, local_date, {', '.join(EVENT_COUNTS)} from {schema}.agg_channel_sla_daily",
        )
        first_responses = rows(
            client,
            f"select stream_id, started_local_date, calendar_seconds from {schema}.fct_sla_events "
            f"where {FIRST_RESPONSE_CLOCKS}",
        )
        reconciliation = read_reconciliation(client, schema)

    def in_period(day: date) -> bool:
        return start <= as_date(day) <= end

    totals: dict[Any, dict[str, Any]] = {}
    for row in daily:
        if row["local_date"] is None or not in_period(row["local_date"]):
            continue
        t = totals.setdefault(row["stream_id"], dict.fromkeys(EVENT_COUNTS, 0))
        for key in t:
            t[key] += int(row[key] or 0)
    medians: dict[Any, list[float]] = {}
    for row in first_responses:
        if row["started_local_date"] is not None and in_period(row["started_local_date"]):
            medians.setdefault(row["stream_id"], []).append(float(row["calendar_seconds"]))

    table_rows = []
    for stream_id in sorted(set(totals) | set(last_day), key=lambda s: (s is None, s)):
        t = totals.get(stream_id, dict.fromkeys(EVENT_COUNTS, 0))
        values = {
            **t,
            "stream_id": stream_id,
            "compliance": compliance(t["met_events"], t["breached_events"]),
            "median_first_response": median(medians.get(stream_id, ())),
            "open_conversations": int(last_day.get(stream_id, {}).get("open_conversations") or 0),
            "breached_conversations": int(last_day.get(stream_id, {}).get("breached_conversations") or 0),
        }
        cells = []
        for _, key, fmt in COLUMNS:
            value = values[key]
            if key == "median_first_response":
                cells.append(clock_duration(value))
            elif value is None:
                cells.append("-")
            else:
                cells.append(fmt.format(value))
        table_rows.append(cells)
    title = f"SLA by channel, {start.isoformat()} to {end.isoformat()} ({days} day{'s' if days != 1 else ''})"
    notes = [
        "",
        UNDETERMINED_NOTE,
        *(reconciliation.lines() if reconciliation else [RECONCILIATION_NOT_BUILT]),
    ]
    return title + "\n\n" + format_table([c[0] for c in COLUMNS], table_rows) + "\n" + "\n".join(notes)
