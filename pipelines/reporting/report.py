"""A terminal SLA report: per channel and metric, the last N local days up to the last day with clocks.

Every figure comes from `report_data.collect_figures` (the HTML report reads the same `Figures`):

- attainment per channel and metric, once in business time and once in calendar time (two tables,
  never mixed): clocks = met + breached + running + undetermined, running clocks already past their
  target shown apart, attainment = met / (met + breached + running past target), the target and the
  median time of the stopped clocks in that table's basis;
- volume per channel: conversations new and resolved over the period, the backlog on its last day;
- agents by breach rate, bots apart;
- CommBox's own SLA counts and firstResponseTime against ours, with each disagreement listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report_data import (
    BASIS_LABELS,
    CHART_BASIS,
    METRIC_LABELS,
    RECONCILIATION_NOT_BUILT,
    REPORTING_SCHEMA,
    TIME_BASES,
    UNDETERMINED_NOTE,
    ClockCounts,
    Figures,
    clock_duration,
    collect_figures,
)

ATTAINMENT_HEADERS = [
    "channel",
    "metric",
    "target",
    "clocks",
    "met",
    "breached",
    "running",
    "(past target)",
    "undetermined",
    "attainment",
    "median",
]
MAX_AGENTS = 15


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _count_cells(counts: ClockCounts) -> list[str]:
    return [
        f"{counts.clocks:,}",
        f"{counts.met:,}",
        f"{counts.breached:,}",
        f"{counts.running:,}",
        f"{counts.running_past_target:,}",
        f"{counts.undetermined:,}",
        _share(counts.attainment),
    ]


def attainment_table(figures: Figures, basis: str) -> str:
    """Per channel and metric (then all channels), the clocks of one time basis."""
    table = [
        [
            name,
            METRIC_LABELS[metric],
            figures.target_label(metric, stream_id),
            *_count_cells(counts),
            clock_duration(figures.median_seconds(basis, metric, stream_id)),
        ]
        for stream_id, name, metric, counts in figures.attainment_rows(basis)
    ]
    return format_table(ATTAINMENT_HEADERS, table)


def volume_table(figures: Figures) -> str:
    """Per channel: conversations new and resolved over the period, the backlog on its last day."""
    table = []
    for stream_id in figures.channels:
        days = [(day, figures.volume.get((stream_id, day))) for day in figures.dates()]
        new = sum(v[0] for _, v in days if v)
        resolved = sum(v[1] for _, v in days if v)
        last = figures.volume.get((stream_id, figures.end))
        table.append(
            [figures.names[stream_id], f"{new:,}", f"{resolved:,}", "-" if last is None else f"{last[2]:,}"]
        )
    return format_table(["channel", "new", "resolved", f"backlog {figures.end.isoformat()}"], table)


def agents_table(figures: Figures, bots: bool) -> str:
    """Agents (or bots) by breach rate, then volume: the clocks they held when each was decided."""
    chosen = sorted(
        (a for a in figures.agents if a.is_bot == bots),
        key=lambda a: (-(a.counts.breach_rate or 0.0), -a.counts.clocks, a.name),
    )[:MAX_AGENTS]
    table = [
        [
            agent.name,
            f"{agent.counts.clocks:,}",
            f"{agent.counts.decided:,}",
            f"{agent.counts.breached + agent.counts.running_past_target:,}",
            _share(agent.counts.breach_rate),
        ]
        for agent in chosen
    ]
    return format_table(["bot" if bots else "agent", "clocks", "decided", "breached", "breach rate"], table)


def reconciliation_lines(figures: Figures) -> list[str]:
    """Our figures against CommBox's: the first-reply agreement, then each disagreement."""
    lines = figures.reconciliation.lines() if figures.reconciliation else [RECONCILIATION_NOT_BUILT]
    vendor = [s for s in figures.streams if s.has_vendor_figures]
    if vendor:
        lines.append(
            "open conversations in SLA breach, CommBox vs ours (first response, calendar time): "
            + ", ".join(f"{figures.names[s.stream_id]} {s.vendor_breached} vs {s.breached}" for s in vendor)
        )
    else:
        lines.append("CommBox's SLA breach counts: not loaded (the streams table has no rows)")
    disagreements = figures.disagreements()
    lines.append(f"disagreements with CommBox: {len(disagreements) or 'none'}")
    lines.extend(f"  {line}" for line in disagreements)
    return lines


def render_figures(figures: Figures) -> str:
    """The whole terminal report from already collected figures."""
    days = len(figures.dates())
    title = (
        f"SLA by channel, {figures.start.isoformat()} to {figures.end.isoformat()} "
        f"({days} day{'s' if days != 1 else ''}, by the local date a clock started)"
    )
    parts = [title, ""]
    for basis in TIME_BASES:
        parts += [f"Attainment in {BASIS_LABELS[basis]}", attainment_table(figures, basis), ""]
    parts += ["Volume (conversations)", volume_table(figures), ""]
    parts += [f"Agents, in {BASIS_LABELS[CHART_BASIS]}", agents_table(figures, bots=False), ""]
    if any(a.is_bot for a in figures.agents):
        parts += [f"Bots, in {BASIS_LABELS[CHART_BASIS]}", agents_table(figures, bots=True), ""]
    parts += [
        "clocks = met + breached + running + undetermined; (past target): running clocks already past "
        "their target; attainment = met / (met + breached + running past target)",
        policy_basis_line(figures),
        UNDETERMINED_NOTE,
        *reconciliation_lines(figures),
    ]
    return "\n".join(parts)


def policy_basis_line(figures: Figures) -> str:
    """Which basis each channel's SLA policy counts (the basis its official state is decided in)."""
    groups = {
        basis: [figures.names[s] for s in figures.channels if figures.policy_basis.get(s) == basis]
        for basis in TIME_BASES
    }
    return "the SLA policy counts " + "; ".join(
        f"{basis} time for {', '.join(names)}" for basis, names in groups.items() if names
    )


def render_report(
    pipeline: Any, days: int = 7, schema: str = REPORTING_SCHEMA, names: Mapping[int, str] | None = None
) -> str:
    """Per-channel SLA attainment (business and calendar time apart), volume, agents and the
    reconciliation with CommBox's figures, as aligned text.

    Args:
        pipeline: the dlt pipeline whose destination holds the views.
        days: how many local days, ending with the last day a clock started on, to cover.
        schema: where the views live.
        names: channel names by stream id; None reads `[sla.streams.<id>] name`.

    Returns:
        The report; a single line when there is no data.
    """
    figures = collect_figures(pipeline, days=days, schema=schema, names=names)
    if not figures.channels:
        return "No conversations in the warehouse yet."
    return render_figures(figures)
