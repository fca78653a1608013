"""A terminal SLA report: per channel, the last N local days up to the build's as_of_at.

Reads the reporting views (`build_views()` must have run): `agg_channel_sla_daily` for clocks, met,
breached, undetermined and compliance; `fct_sla_events` for the median first response over the whole
period (a median of daily medians would be wrong); `fct_backlog_daily` for the open backlog on the
last day; `fct_first_response_reconciliation` for the lines comparing the first and last agent
replies with CommBox's own firstResponseTime / lastResponseTime (also shown by `commbox-etl status`
and the HTML report: `read_reconciliation` is their one definition).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

REPORTING_SCHEMA = "commbox_reporting"
RECONCILIATION_VIEW = "fct_first_response_reconciliation"
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _rows(client: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with client.execute_query(sql, *args) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass(frozen=True)
class Agreement:
    """How many conversations agree with one of CommBox's figures, disagree, or cannot be told."""

    agree: int = 0
    disagree: int = 0
    unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"agree": self.agree, "disagree": self.disagree, "unknown": self.unknown}


@dataclass(frozen=True)
class Reconciliation:
    """The views' first and last agent replies against CommBox's firstResponseTime/lastResponseTime."""

    first_response: Agreement
    last_response: Agreement

    def lines(self) -> list[str]:
        """`first replies vs CommBox firstResponseTime: N agree, K disagree (M unknown)`, then last."""
        return [
            _agreement_line("first replies vs CommBox firstResponseTime", self.first_response),
            _agreement_line("last replies vs CommBox lastResponseTime", self.last_response),
        ]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "first_response": self.first_response.as_dict(),
            "last_response": self.last_response.as_dict(),
        }


def _agreement_line(label: str, counts: Agreement) -> str:
    return f"{label}: {counts.agree:,} agree, {counts.disagree:,} disagree ({counts.unknown:,} unknown)"


RECONCILIATION_NOT_BUILT = (
    "first replies vs CommBox firstResponseTime: views not built yet (run `commbox-etl views`)"
)


def read_reconciliation(client: Any, schema: str = REPORTING_SCHEMA) -> Reconciliation | None:
    """Count the conversations of `fct_first_response_reconciliation` by agreement.

    Args:
        client: an open dlt sql client on the destination.
        schema: where the views live.

    Returns:
        The counts, or None when the view does not exist (views never built on this destination),
        so that `status` can tell "not built" from "0 disagree".
    """
    exists = _rows(
        client,
        "select count(*) as n from information_schema.tables where table_schema = %s and table_name = %s",
        schema,
        RECONCILIATION_VIEW,
    )
    if not exists or not exists[0]["n"]:
        return None
    counts = {
        (row["kind"], row["agreement"]): int(row["n"])
        for row in _rows(
            client,
            f"select 'first' as kind, first_response_agreement as agreement, count(*) as n "
            f"from {schema}.{RECONCILIATION_VIEW} group by first_response_agreement "
            f"union all "
            f"select 'last' as kind, last_response_agreement as agreement, count(*) as n "
            f"from {schema}.{RECONCILIATION_VIEW} group by last_response_agreement",
        )
    }

    def agreement(kind: str) -> Agreement:
        return Agreement(*(counts.get((kind, state), 0) for state in ("agree", "disagree", "unknown")))

    return Reconciliation(agreement("first"), agreement("last"))


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_report(pipeline: Any, days: int = 7, schema: str = "commbox_reporting") -> str:
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
        backlog_days = _rows(
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
        end = max(r["local_date"] for r in last_day.values())
        start = end - timedelta(days=days - 1)
        daily = _rows(
            client,
            f"select stream_id, local_date, {', '.join(EVENT_COUNTS)} from {schema}.agg_channel_sla_daily",
        )
        # an undetermined clock may have started earlier or stopped earlier: no response time
        first_responses = _rows(
            client,
            f"select stream_id, started_local_date, calendar_seconds from {schema}.fct_sla_events "
            f"where metric = 'first_response' and stop_reason = 'responded' and not is_undetermined",
        )
        reconciliation = read_reconciliation(client, schema)

    def in_period(day: date) -> bool:
        return start <= _as_date(day) <= end

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
        decided = t["met_events"] + t["breached_events"]
        values = {
            **t,
            "stream_id": stream_id,
            "compliance": t["met_events"] / decided if decided else None,
            "median_first_response": statistics.median(medians[stream_id])
            if medians.get(stream_id)
            else None,
            "open_conversations": int(last_day.get(stream_id, {}).get("open_conversations") or 0),
            "breached_conversations": int(last_day.get(stream_id, {}).get("breached_conversations") or 0),
        }
        cells = []
        for _, key, fmt in COLUMNS:
            value = values[key]
            if key == "median_first_response":
                cells.append(_duration(value))
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


UNDETERMINED_NOTE = (
    "undetermined: clocks that depend on a message whose sender is unknown, neither met nor breached"
)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
