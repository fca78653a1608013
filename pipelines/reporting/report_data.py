"""The report data: every figure the terminal report (`report.py`), the HTML report (`report_html.py`)
and `commbox-etl status` show is defined here once, from the reporting views.

- the period: `period(end, days)`, the `days` local dates ending with `end`;
- compliance: met / (met + breached), None when no clock was decided;
- the median first response: over the clocks a reply stopped (`FIRST_RESPONSE_CLOCKS`), never a
  median of daily medians;
- durations, in the two spellings the reports use (`clock_duration`, `short_duration`);
- the reconciliation with CommBox's firstResponseTime / lastResponseTime (`read_reconciliation`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

REPORTING_SCHEMA = "commbox_reporting"
RECONCILIATION_VIEW = "fct_first_response_reconciliation"
# The first-response clocks that have a response time: stopped by a reply, and not undetermined (an
# undetermined clock may have started earlier or stopped earlier).
FIRST_RESPONSE_CLOCKS = "metric = 'first_response' and stop_reason = 'responded' and not is_undetermined"
UNDETERMINED_NOTE = (
    "undetermined: clocks that depend on a message whose sender is unknown, neither met nor breached"
)
RECONCILIATION_NOT_BUILT = (
    "first replies vs CommBox firstResponseTime: views not built yet (run `commbox-etl views`)"
)


def as_date(value: Any) -> date:
    """A local date from a date, a datetime (its date) or an ISO string, as drivers return them."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_utc(value: Any) -> datetime | None:
    """A UTC datetime from a datetime (naive ones are UTC) or an ISO string; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def period(end: date, days: int) -> tuple[date, date]:
    """The first and last local dates of a report of `days` dates (at least one) ending with `end`."""
    return end - timedelta(days=max(1, days) - 1), end


def compliance(met: int, breached: int) -> float | None:
    """The share of decided clocks that were met; None when none was decided."""
    return met / (met + breached) if met + breached else None


def median(values: Iterable[float]) -> float | None:
    """The median of `values`, None when there are none."""
    values = list(values)
    return statistics.median(values) if values else None


def clock_duration(seconds: float | None) -> str:
    """A duration for the terminal: `12m 05s` under an hour, `1h 02m` above, `-` for none."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def short_duration(seconds: float) -> str:
    """A duration for the page: `42 s`, `12.5 min` or `1.5 h`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rows(client: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of a query on an open dlt sql client, each as a dict by column name."""
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
    exists = rows(
        client,
        "select count(*) as n from information_schema.tables where table_schema = %s and table_name = %s",
        schema,
        RECONCILIATION_VIEW,
    )
    if not exists or not exists[0]["n"]:
        return None
    counts = {
        (row["kind"], row["agreement"]): int(row["n"])
        for row in rows(
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
