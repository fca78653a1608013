"""The report data: every figure the terminal report (`report.py`), the HTML report (`report_html.py`)
and `commbox-etl status` show is defined here once, from the reporting views.

- the period: `period(end, days)`, the `days` local dates ending with `end`;
- compliance: met / (met + breached), None when no clock was decided;
- the median first response: over the clocks a reply stopped (`FIRST_RESPONSE_CLOCKS`), never a
  median of daily medians;
- durations, in the two spellings the reports use (`clock_duration`, `short_duration`);
- the reconciliation with CommBox's firstResponseTime / lastResponseTime (`read_reconciliation`);
- the SLA report (`collect_figures` -> `Figures`): per metric, channel and time basis the clocks
  partitioned as met + breached + running + undetermined = clocks (`ClockCounts`), attainment =
  met / (met + breached + running past target), by day and by week; volume; first responses for the
  distribution and the hour-of-day x weekday heat map; agents by breach rate, bots apart; channel
  names (`channel_names`); CommBox's own SLA counts against ours (`StreamReconciliation`).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .views import reading_views

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


# ------------------------------------------------------------------------------ the SLA report

METRICS = ("first_response", "next_response", "resolution")
METRIC_LABELS = {
    "first_response": "first response",
    "next_response": "next response",
    "resolution": "resolution",
}
TIME_BASES = ("business", "calendar")
BASIS_LABELS = {
    "business": "business time (opening hours only, paused time left out)",
    "calendar": "calendar time (wall clock, paused time left out)",
}
# The basis of the charts, the heat map and the agents: CommBox targets count business hours by
# default (`[sla.default] business_hours_only`); the calendar figures are in their own table.
CHART_BASIS = "business"
HOW_MEASURED = (
    "An SLA clock starts when a customer writes and waits (first response, next response) or when a "
    "conversation opens (resolution), and stops at the reply or resolution; each is measured against "
    "the target of the policy in force when it started ([sla] in .dlt/config.toml).",
    "Every clock is exactly one of: met (stopped within target), breached (stopped past target), "
    "running (not stopped yet) or undetermined (it depends on a message whose sender the API did not "
    "give), so met + breached + running + undetermined = clocks. Running clocks already past their "
    "target are shown apart: they can no longer be met.",
    "Attainment = met ÷ (met + breached + running past target). Breach rate = 1 − attainment.",
    "Business time counts opening hours only; calendar time counts the wall clock. Paused time "
    "(pending, scheduled) counts in neither. A table or chart is in one of them and says which.",
    "Days are the local dates a clock started on, in the channel's time zone; weeks start on Monday.",
    "CommBox's own figures: its SLA breach and SLA-critical counts of open conversations "
    "(/stats/streamsSLAExceptions, read at the last run) and its firstResponseTime per conversation.",
)


def channel_label(stream_id: int) -> str:
    """The label of a channel nothing names: its id."""
    return f"stream {stream_id}"


def channel_names(
    stream_ids: Iterable[int],
    configured: Mapping[int, str] | None = None,
    from_api: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """A unique name per channel: `[sla.streams.<id>] name`, else the API's name, else the id.

    Two channels given the same name keep it, each followed by its id, so no two share a label.
    """
    configured, from_api = configured or {}, from_api or {}
    names = {
        stream_id: configured.get(stream_id) or from_api.get(stream_id) or channel_label(stream_id)
        for stream_id in stream_ids
    }
    taken = Counter(names.values())
    return {
        stream_id: f"{name} ({stream_id})" if taken[name] > 1 else name for stream_id, name in names.items()
    }


def agent_names(managers: Iterable[tuple[int, str | None, str | None]]) -> dict[int, str]:
    """A unique label per manager id from (id, first name, last name): the name, or `agent <id>`
    without one; a name two managers share is followed by each one's id."""
    names = {
        manager_id: " ".join(p for p in (first, last) if p and p.strip()).strip() or f"agent {manager_id}"
        for manager_id, first, last in managers
    }
    taken = Counter(names.values())
    return {
        manager_id: f"{name} ({manager_id})" if taken[name] > 1 else name
        for manager_id, name in names.items()
    }


def week_of(day: date) -> date:
    """The Monday that starts the week of `day`."""
    return day - timedelta(days=day.weekday())


# The columns of the attainment marts that hold a ClockCounts, in its field order.
CLOCK_COUNT_COLUMNS = (
    "clocks",
    "met_clocks",
    "breached_clocks",
    "running_clocks",
    "running_past_target_clocks",
    "undetermined_clocks",
)


@dataclass(frozen=True)
class ClockCounts:
    """SLA clocks partitioned: met + breached + running + undetermined = clocks.

    `running_past_target` is the part of `running` already past its target.
    """

    clocks: int = 0
    met: int = 0
    breached: int = 0
    running: int = 0
    running_past_target: int = 0
    undetermined: int = 0

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> ClockCounts:
        """The counts of a mart row's `clocks`, `met_clocks`, ... `undetermined_clocks` columns."""
        return cls(*(int(row[column] or 0) for column in CLOCK_COUNT_COLUMNS))

    def __add__(self, other: ClockCounts) -> ClockCounts:
        return ClockCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.clocks,
            self.met,
            self.breached,
            self.running,
            self.running_past_target,
            self.undetermined,
        )

    @property
    def decided(self) -> int:
        """Clocks whose outcome against the target is known: met, breached, running past target."""
        return self.met + self.breached + self.running_past_target

    @property
    def attainment(self) -> float | None:
        """met / decided; None when nothing is decided."""
        return self.met / self.decided if self.decided else None

    @property
    def breach_rate(self) -> float | None:
        """(breached + running past target) / decided; None when nothing is decided."""
        return (self.breached + self.running_past_target) / self.decided if self.decided else None


@dataclass(frozen=True)
class Agent:
    """An agent's (or bot's) clocks over the period, in `CHART_BASIS`."""

    manager_id: int
    name: str
    is_bot: bool
    counts: ClockCounts


@dataclass(frozen=True)
class StreamReconciliation:
    """CommBox's own SLA figures for one channel against ours (`fct_stream_sla_reconciliation`)."""

    stream_id: int
    has_vendor_figures: bool
    vendor_breached: int | None
    vendor_critical: int | None
    breached: int
    critical: int
    first_replies_agree: int
    first_replies_disagree: int
    first_replies_unknown: int

    def disagreements(self, name: str) -> list[str]:
        """One line per figure that differs from CommBox's (none when all agree)."""
        lines = []
        if self.has_vendor_figures:
            for label, vendor, ours in (
                ("open conversations in SLA breach", self.vendor_breached, self.breached),
                ("open conversations SLA-critical", self.vendor_critical, self.critical),
            ):
                if vendor != ours:
                    lines.append(f"{name}: {label}: CommBox {vendor}, ours {ours}")
        if self.first_replies_disagree:
            n = self.first_replies_disagree
            lines.append(
                f"{name}: {n} first agent repl{'y differs' if n == 1 else 'ies differ'} "
                "from CommBox's firstResponseTime"
            )
        return lines


@dataclass
class Figures:
    """Every figure of the SLA report over the local dates `start`..`end`, read by `collect_figures`."""

    start: date
    end: date
    as_of: datetime | None
    channels: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    # stream -> the basis its (latest) policy's targets count, "business" or "calendar"
    policy_basis: dict[int, str] = field(default_factory=dict)
    # (basis, metric, stream, local date) -> clocks started that day
    daily: dict[tuple[str, str, int, date], ClockCounts] = field(default_factory=dict)
    # (metric, stream) -> (smallest, largest) target in seconds of the clocks in the period
    targets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    # (basis, metric, stream) -> elapsed seconds of each stopped (met or breached) clock
    stopped_seconds: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    # first responses in CHART_BASIS, one (stream, local date, local hour, seconds, target) per clock
    first_responses: list[tuple[int, date, int, float, int]] = field(default_factory=list)
    # (stream, local date) -> (new, resolved, backlog at the end of the day)
    volume: dict[tuple[int, date], tuple[int, int, int]] = field(default_factory=dict)
    agents: list[Agent] = field(default_factory=list)
    streams: list[StreamReconciliation] = field(default_factory=list)
    # the conversations whose first agent reply disagrees with CommBox's firstResponseTime
    reply_disagreements: list[dict[str, Any]] = field(default_factory=list)
    reconciliation: Reconciliation | None = None

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def weeks(self) -> list[date]:
        return sorted({week_of(day) for day in self.dates()})

    def attainment_rows(self, basis: str) -> Iterator[tuple[int | None, str, str, ClockCounts]]:
        """(stream id, channel name, metric, counts) per channel and metric that had clocks in
        `basis`, then every metric over all channels (stream id None): the rows of both reports'
        attainment tables."""
        for stream_id in [*self.channels, None]:
            name = "all channels" if stream_id is None else self.names[stream_id]
            for metric in METRICS:
                counts = self.counts(basis, metric, stream_id)
                if counts.clocks or stream_id is None:
                    yield stream_id, name, metric, counts

    def counts(
        self,
        basis: str,
        metric: str | None = None,
        stream_id: int | None = None,
        day: date | None = None,
        week: date | None = None,
    ) -> ClockCounts:
        """The clocks of a basis, summed over what is not given (metric, channel, day or week)."""
        total = ClockCounts()
        for (b, m, s, d), value in self.daily.items():
            if (
                b == basis
                and (metric is None or m == metric)
                and (stream_id is None or s == stream_id)
                and (day is None or d == day)
                and (week is None or week_of(d) == week)
            ):
                total += value
        return total

    def median_seconds(self, basis: str, metric: str, stream_id: int | None = None) -> float | None:
        """The median time of the stopped clocks (never a median of medians)."""
        return median(
            seconds
            for (b, m, s), values in self.stopped_seconds.items()
            if b == basis and m == metric and (stream_id is None or s == stream_id)
            for seconds in values
        )

    def first_response_heat(self) -> dict[tuple[int, int], tuple[float, int]]:
        """(weekday 0 = Monday, local hour) -> (median first response in `CHART_BASIS`, responses),
        every channel together, by the local date and hour the clock started."""
        cells: dict[tuple[int, int], list[float]] = {}
        for _, day, hour, seconds, _ in self.first_responses:
            cells.setdefault((day.weekday(), hour), []).append(seconds)
        return {key: (statistics.median(values), len(values)) for key, values in cells.items()}

    def target_label(self, metric: str, stream_id: int | None = None) -> str:
        """`1 h`, or `1 h–2 h` when the channels' (or a policy change's) targets differ."""
        bounds = [v for (m, s), v in self.targets.items() if m == metric and stream_id in (None, s)]
        if not bounds:
            return "-"
        low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)
        return short_duration(low) if low == high else f"{short_duration(low)}–{short_duration(high)}"

    def disagreements(self) -> list[str]:
        """Every figure of ours that differs from CommBox's, one line each."""
        return [
            line
            for stream in self.streams
            for line in stream.disagreements(
                self.names.get(stream.stream_id, channel_label(stream.stream_id))
            )
        ]


def _has_relation(client: Any, schema: str, name: str) -> bool:
    found = rows(
        client,
        "select count(*) as n from information_schema.tables where table_schema = %s and table_name = %s",
        schema,
        name,
    )
    return bool(found and found[0]["n"])


def _columns(client: Any, schema: str, name: str) -> set[str]:
    return {
        str(row["column_name"])
        for row in rows(
            client,
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
            schema,
            name,
        )
    }


def configured_channel_names() -> dict[int, str]:
    """`[sla.streams.<id>] name` from the configuration (validated by `load_sla_config`).

    Raises:
        ConfigError: a bad `[sla]` section, in one line naming the key (the CLI exits 2).
    """
    from ..commbox.config import ConfigError, sla_section
    from .sla import load_sla_config

    try:  # sla_section: the TOML files with SLA__... environment variables over them, as a run reads it
        return dict(load_sla_config(sla_section()).stream_names)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def collect_figures(
    pipeline: Any,
    days: int = 7,
    schema: str = REPORTING_SCHEMA,
    names: Mapping[int, str] | None = None,
) -> Figures:
    """Read every figure of the SLA report from the marts.

    Args:
        pipeline: a dlt pipeline whose destination holds the views (`build_views()` has run).
        days: how many local dates, ending with the last date a clock started on (the as-of date
            when there is none).
        schema: where the views live.
        names: channel names by stream id; None reads `[sla.streams.<id>] name`.

    Returns:
        The figures; empty collections when the warehouse holds no clocks.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    configured = configured_channel_names() if names is None else dict(names)
    with reading_views(pipeline) as client:
        (last,) = rows(client, f"select max(local_date) as d from {schema}.agg_sla_attainment_daily")
        (params,) = rows(client, f"select max(as_of_at) as a from {schema}.int_build_params")
        as_of = as_utc(params["a"])
        end_day = as_date(last["d"]) if last["d"] is not None else (as_of or datetime.now(UTC)).date()
        start, end = period(end_day, days)
        figures = Figures(start=start, end=end, as_of=as_of)
        for row in rows(
            client,
            f"select stream_id, metric, time_basis, local_date, clocks, met_clocks, breached_clocks, "
            f"running_clocks, running_past_target_clocks, undetermined_clocks, min_target_seconds, "
            f"max_target_seconds from {schema}.agg_sla_attainment_daily "
            f"where local_date >= %s and local_date <= %s",
            start,
            end,
        ):
            stream_id, metric = int(row["stream_id"]), str(row["metric"])
            figures.daily[(str(row["time_basis"]), metric, stream_id, as_date(row["local_date"]))] = (
                ClockCounts.of_row(row)
            )
            low, high = int(row["min_target_seconds"]), int(row["max_target_seconds"])
            known = figures.targets.get((metric, stream_id), (low, high))
            figures.targets[(metric, stream_id)] = (min(known[0], low), max(known[1], high))
        for row in rows(
            client,
            f"select stream_id, metric, time_basis, started_local_date, started_local_hour, outcome, "
            f"elapsed_seconds, target_seconds, stop_reason from {schema}.fct_sla_clock_outcomes "
            f"where outcome in ('met', 'breached') and started_local_date >= %s and started_local_date <= %s",
            start,
            end,
        ):
            key = (str(row["time_basis"]), str(row["metric"]), int(row["stream_id"]))
            figures.stopped_seconds.setdefault(key, []).append(float(row["elapsed_seconds"]))
            if (
                key[0] == CHART_BASIS
                and key[1] == "first_response"
                and row["stop_reason"] == "responded"
                and row["started_local_hour"] is not None
            ):
                figures.first_responses.append(
                    (
                        key[2],
                        as_date(row["started_local_date"]),
                        int(row["started_local_hour"]),
                        float(row["elapsed_seconds"]),
                        int(row["target_seconds"]),
                    )
                )
        for row in rows(
            client,
            f"select stream_id, local_date, new_conversations, resolved_conversations, backlog_conversations "
            f"from {schema}.agg_channel_volume_daily where local_date >= %s and local_date <= %s",
            start,
            end,
        ):
            figures.volume[(int(row["stream_id"]), as_date(row["local_date"]))] = (
                int(row["new_conversations"] or 0),
                int(row["resolved_conversations"] or 0),
                int(row["backlog_conversations"] or 0),
            )
        managers = rows(
            client, f"select manager_id, first_name, last_name, is_bot from {schema}.stg_commbox__managers"
        )
        labels = agent_names(
            (int(m["manager_id"]), m["first_name"], m["last_name"])
            for m in managers
            if m["manager_id"] is not None
        )
        agents: dict[int, tuple[bool, ClockCounts]] = {}
        for row in rows(
            client,
            f"select manager_id, is_bot, clocks, met_clocks, breached_clocks, running_clocks, "
            f"running_past_target_clocks, undetermined_clocks from {schema}.agg_agent_attainment_daily "
            f"where time_basis = %s and local_date >= %s and local_date <= %s",
            CHART_BASIS,
            start,
            end,
        ):
            manager_id = int(row["manager_id"])
            counts = ClockCounts.of_row(row)
            is_bot, total = agents.get(manager_id, (False, ClockCounts()))
            agents[manager_id] = (is_bot or bool(row["is_bot"]), total + counts)
        figures.agents = [
            Agent(manager_id, labels.get(manager_id, f"agent {manager_id}"), is_bot, counts)
            for manager_id, (is_bot, counts) in agents.items()
        ]
        for row in rows(
            client,
            f"select stream_id, has_vendor_figures, vendor_breached_conversations, "
            f"vendor_critical_conversations, breached_conversations, critical_conversations, "
            f"first_replies_agree, first_replies_disagree, first_replies_unknown "
            f"from {schema}.fct_stream_sla_reconciliation order by stream_id",
        ):
            figures.streams.append(
                StreamReconciliation(
                    stream_id=int(row["stream_id"]),
                    has_vendor_figures=bool(row["has_vendor_figures"]),
                    vendor_breached=None
                    if row["vendor_breached_conversations"] is None
                    else int(row["vendor_breached_conversations"]),
                    vendor_critical=None
                    if row["vendor_critical_conversations"] is None
                    else int(row["vendor_critical_conversations"]),
                    breached=int(row["breached_conversations"]),
                    critical=int(row["critical_conversations"]),
                    first_replies_agree=int(row["first_replies_agree"]),
                    first_replies_disagree=int(row["first_replies_disagree"]),
                    first_replies_unknown=int(row["first_replies_unknown"]),
                )
            )
        figures.reply_disagreements = rows(
            client,
            f"select object_id, stream_id, first_agent_message_at, commbox_first_response_at, "
            f"first_response_difference_seconds from {schema}.{RECONCILIATION_VIEW} "
            f"where first_response_agreement = 'disagree' order by object_id",
        )
        policies = rows(
            client,
            f"select stream_id, is_business_hours_only, effective_from_at from {schema}.stg_commbox__sla_policies "
            f"order by effective_from_at",
        )
        from_api: dict[int, str] = {}
        # The API's streams carry no name today; a name column, once loaded, is used.
        if "stream_name" in _columns(client, schema, "stg_commbox__streams"):
            from_api = {
                int(r["stream_id"]): str(r["stream_name"])
                for r in rows(client, f"select stream_id, stream_name from {schema}.stg_commbox__streams")
                if r["stream_name"]
            }
        figures.reconciliation = read_reconciliation(client, schema)
    figures.channels = sorted(
        {key[2] for key in figures.daily}
        | {key[0] for key in figures.volume}
        | {s.stream_id for s in figures.streams}
    )
    figures.names = channel_names(figures.channels, configured, from_api)
    default_basis = "business"
    by_stream: dict[int, str] = {}
    for policy in policies:  # the latest version wins
        basis = "business" if policy["is_business_hours_only"] else "calendar"
        if policy["stream_id"] is None:
            default_basis = basis
        else:
            by_stream[int(policy["stream_id"])] = basis
    figures.policy_basis = {s: by_stream.get(s, default_basis) for s in figures.channels}
    return figures
