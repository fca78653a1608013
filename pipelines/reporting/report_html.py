"""`commbox-etl report --html PATH`: the SLA numbers as one self-contained HTML page with charts.

The page needs no network to be viewed: no scripts, fonts or styles from elsewhere. Every chart is
inline SVG drawn here, from the marts in `commbox_reporting`:

- SLA compliance per channel per day (`agg_channel_sla_daily`), a line per channel;
- breaches by agent (`agg_agent_daily`, names from `stg_commbox__managers`), horizontal bars;
- the distribution of first response times (`fct_sla_events`, first-response clocks stopped by a
  reply), stacked by channel;
- the backlog by age (`fct_conversations` open at the build's as-of, `int_build_params`), stacked by
  channel.

Above the charts, a summary per channel (met, breached, undetermined: clocks that depend on a message
whose sender is unknown, counted apart) and the reconciliation with CommBox's own firstResponseTime /
lastResponseTime (`report_data.read_reconciliation`, the same lines as `commbox-etl status`).

The period is the last `days` local dates that have SLA events. Figures are `<figure class="chart"
data-chart="...">`; marks carry `class="series"` or `class="bar"` and a `<title>` with the exact
numbers (shown on hover).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .report_data import (
    FIRST_RESPONSE_CLOCKS,
    RECONCILIATION_NOT_BUILT,
    REPORTING_SCHEMA,
    UNDETERMINED_NOTE,
    Reconciliation,
    as_date,
    as_utc,
    compliance,
    median,
    period,
    read_reconciliation,
    short_duration,
)

# Okabe-Ito: tells channels apart for colour-blind readers too; yellow left out (too light on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
BREACHED_COLOUR = "#D55E00"
MET_COLOUR = "#009E73"
MAX_AGENTS = 15
# Upper bounds in seconds, last open-ended.
RESPONSE_BUCKETS = (
    ("<1m", 60),
    ("1–5m", 300),
    ("5–15m", 900),
    ("15–30m", 1800),
    ("30–60m", 3600),
    ("1–2h", 7200),
    ("2–4h", 14400),
    ("4–8h", 28800),
    ("8–24h", 86400),
    (">24h", math.inf),
)
AGE_BUCKETS = (
    ("< 1 h", 3600),
    ("1–4 h", 14400),
    ("4–24 h", 86400),
    ("1–3 days", 3 * 86400),
    ("3–7 days", 7 * 86400),
    ("> 7 days", math.inf),
)


@dataclass
class ReportData:
    """Everything the page shows, already aggregated; `collect` reads it from the warehouse."""

    start: date
    end: date
    as_of: datetime | None
    channels: list[int]
    # (stream_id, local_date) -> (met, breached)
    daily: dict[tuple[int, date], tuple[int, int]] = field(default_factory=dict)
    # manager label -> (met, breached)
    agents: dict[str, tuple[int, int]] = field(default_factory=dict)
    # stream_id -> first response seconds of clocks stopped by a reply
    first_responses: dict[int, list[float]] = field(default_factory=dict)
    # stream_id -> age in seconds of each open conversation at as_of
    backlog_ages: dict[int, list[float]] = field(default_factory=dict)
    # stream_id -> clocks in the period that depend on an unknown-side message (neither met nor breached)
    undetermined: dict[int, int] = field(default_factory=dict)
    # first/last agent replies vs CommBox's figures; None = the reconciliation view is missing
    reconciliation: Reconciliation | None = None


def channel_name(stream_id: int) -> str:
    return f"Stream {stream_id}"


def _bucket(value: float, buckets: Sequence[tuple[str, float]]) -> int:
    for index, (_, upper) in enumerate(buckets):
        if value < upper:
            return index
    return len(buckets) - 1


def collect(pipeline: Any, days: int = 7, schema: str = REPORTING_SCHEMA) -> ReportData:
    """Read the report's numbers from the SLA views of the pipeline's destination.

    Args:
        pipeline: a dlt pipeline whose destination holds the views (`runner.make_pipeline`).
        days: how many local dates, ending with the last date that has SLA events.
        schema: the schema the views live in.
    """
    with pipeline.sql_client() as client:

        def rows(sql: str, *args: Any) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in client.execute_sql(sql, *args) or []]

        last = rows(f"select max(local_date) from {schema}.agg_channel_sla_daily")[0][0]
        as_of = as_utc(rows(f"select max(as_of_at) from {schema}.int_build_params")[0][0])
        # The last day is the last with SLA events (the build's as-of day when there are none).
        start, end = period(as_date(last) if last is not None else (as_of or datetime.now(UTC)).date(), days)
        data = ReportData(start=start, end=end, as_of=as_of, channels=[])
        for stream_id, local_date, met, breached, undetermined in rows(
            f"select stream_id, local_date, met_events, breached_events, undetermined_events "
            f"from {schema}.agg_channel_sla_daily where local_date >= %s and local_date <= %s",
            start,
            end,
        ):
            data.daily[(int(stream_id), as_date(local_date))] = (int(met or 0), int(breached or 0))
            if undetermined:
                data.undetermined[int(stream_id)] = data.undetermined.get(int(stream_id), 0) + int(
                    undetermined
                )
        names = {
            int(manager_id): " ".join(part for part in (first, last_name) if part) or f"Agent {manager_id}"
            for manager_id, first, last_name in rows(
                f"select manager_id, first_name, last_name from {schema}.stg_commbox__managers"
            )
            if manager_id is not None
        }
        for manager_id, met, breached in rows(
            f"select manager_id, sum(met_events), sum(breached_events) from {schema}.agg_agent_daily "
            "where local_date >= %s and local_date <= %s group by manager_id",
            start,
            end,
        ):
            label = names.get(int(manager_id), f"Agent {manager_id}")
            if label in data.agents:  # two agents with one name stay apart
                label = f"{label} ({manager_id})"
            data.agents[label] = (int(met or 0), int(breached or 0))
        for stream_id, seconds in rows(
            f"select stream_id, calendar_seconds from {schema}.fct_sla_events "
            f"where {FIRST_RESPONSE_CLOCKS} and started_local_date >= %s and started_local_date <= %s",
            start,
            end,
        ):
            if seconds is not None:
                data.first_responses.setdefault(int(stream_id), []).append(float(seconds))
        if as_of is not None:
            for stream_id, created_at in rows(
                f"select stream_id, created_at from {schema}.fct_conversations where is_open"
            ):
                created = as_utc(created_at)
                if created is not None:
                    age = max(0.0, (as_of - created).total_seconds())
                    data.backlog_ages.setdefault(int(stream_id), []).append(age)
        data.reconciliation = read_reconciliation(client, schema)
    data.channels = sorted(
        {key[0] for key in data.daily} | set(data.first_responses) | set(data.backlog_ages)
    )
    return data


# ------------------------------------------------------------------------------------------ svg

_FONT = 'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif"'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(value: float) -> tuple[float, float]:
    """An axis maximum at or above `value` and a tick step giving 4–6 ticks (1, 2 or 5 × 10^k)."""
    if value <= 0:
        return 1.0, 0.25 if value < 0 else 1.0
    raw = value / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if value >= 1 else step
    return math.ceil(value / step) * step, step


def _figure(chart: str, title: str, subtitle: str, svg: str, empty: bool = False) -> str:
    return (
        f'<figure class="chart" data-chart="{_e(chart)}"{" data-empty" if empty else ""}>'
        f"<figcaption><strong>{_e(title)}</strong><span>{_e(subtitle)}</span></figcaption>"
        f"{svg}</figure>"
    )


def _svg(width: int, height: int, label: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{_e(label)}" {_FONT} font-size="12">{body}</svg>'
    )


def _empty(width: int, height: int, label: str) -> str:
    body = (
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>'
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">'
        "no data in this period</text>"
    )
    return _svg(width, height, label, body)


def _legend(names: Sequence[str], colours: Sequence[str], x: float, y: float) -> str:
    parts = []
    for name, colour in zip(names, colours, strict=True):
        parts.append(
            f'<g class="legend-item"><rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" '
            f'fill="{colour}"/><text x="{x + 17:.1f}" y="{y + 1:.1f}" fill="#333">{_e(name)}</text></g>'
        )
        x += 30 + 7.2 * len(name)
    return "".join(parts)


def _y_axis(
    left: float, top: float, plot_w: float, plot_h: float, y_max: float, step: float, fmt: Any
) -> str:
    parts = []
    ticks = round(y_max / step)
    for i in range(ticks + 1):
        value = i * step
        y = top + plot_h - plot_h * value / y_max
        parts.append(
            f'<line class="grid" x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#999" if i == 0 else "#e5e5e5"}"/>'
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_e(fmt(value))}</text>'
        )
    return "".join(parts)


def line_chart(
    chart: str,
    title: str,
    subtitle: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], Sequence[str]]],
    *,
    width: int = 620,
    height: int = 320,
) -> str:
    """One line per series over shared x labels, y from 0 to 100 %; None leaves a gap.

    Args:
        series: `(name, values in 0..1, hover text per point)`.
    """
    if not x_labels or not any(v is not None for _, values, _ in series for v in values):
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, right, top, bottom = 52, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    parts = [_legend([name for name, _, _ in series], colours, left, 16)]
    parts.append(_y_axis(left, top, plot_w, plot_h, 1.0, 0.25, lambda v: f"{v:.0%}"))
    slot = plot_w / len(x_labels)
    every = max(1, math.ceil(len(x_labels) / 10))
    for i, label in enumerate(x_labels):
        if i % every == 0:
            x = left + slot * (i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 18:.1f}" text-anchor="middle" fill="#555">{_e(label)}</text>'
            )
    for (name, values, hovers), colour in zip(series, colours, strict=True):
        path, pen_down, points = [], False, []
        for i, value in enumerate(values):
            if value is None:
                pen_down = False
                continue
            x = left + slot * (i + 0.5)
            y = top + plot_h - plot_h * max(0.0, min(1.0, value))
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            points.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{_e(hovers[i])}</title></circle>"
            )
        parts.append(
            f'<g class="series" data-series="{_e(name)}"><path d="{" ".join(path)}" fill="none" '
            f'stroke="{colour}" stroke-width="2.5" stroke-linejoin="round"/>{"".join(points)}</g>'
        )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def stacked_columns(
    chart: str,
    title: str,
    subtitle: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    unit: str,
    width: int = 620,
    height: int = 320,
) -> str:
    """A column per category, the series stacked in it (counts)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    if not categories or not any(totals):
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, right, top, bottom = 52, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max, step = _nice_max(max(totals))
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    parts = [_legend([name for name, _ in series], colours, left, 16)]
    parts.append(_y_axis(left, top, plot_w, plot_h, y_max, step, lambda v: f"{v:g}"))
    slot = plot_w / len(categories)
    bar_w = slot * 0.72
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        base = top + plot_h
        for (name, values), colour in zip(series, colours, strict=True):
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / y_max
            base -= h
            parts.append(
                f'<rect class="bar" data-value="{value:g}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(name)}, {_e(category)}: {value:g} {_e(unit)}'
                "</title></rect>"
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 18:.1f}" text-anchor="middle" fill="#555">'
            f"{_e(category)}</text>"
        )
        if totals[i]:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{base - 4:.1f}" text-anchor="middle" fill="#333" '
                f'font-size="11">{totals[i]:g}</text>'
            )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def horizontal_bars(
    chart: str,
    title: str,
    subtitle: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    segments: Sequence[tuple[str, str]],
    *,
    width: int = 620,
) -> str:
    """A bar per row (label, segment values), segments `(name, colour)` stacked left to right."""
    if not rows or not any(sum(values) for _, values in rows):
        return _figure(chart, title, subtitle, _empty(width, 200, title), empty=True)
    left, right, top, row_h = 170, 48, 34, 22
    height = top + row_h * len(rows) + 30
    plot_w = width - left - right
    x_max, step = _nice_max(max(sum(values) for _, values in rows))
    parts = [_legend([name for name, _ in segments], [colour for _, colour in segments], left, 16)]
    ticks = round(x_max / step)
    bottom = top + row_h * len(rows)
    for i in range(ticks + 1):
        x = left + plot_w * i * step / x_max
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{x:.1f}" y="{bottom + 16:.1f}" text-anchor="middle" fill="#555">{i * step:g}</text>'
        )
    for r, (label, values) in enumerate(rows):
        y = top + r * row_h + 3
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + row_h / 2 + 1:.1f}" text-anchor="end" fill="#333">{_e(short)}</text>'
        )
        x = float(left)
        for (name, colour), value in zip(segments, values, strict=True):
            if value <= 0:
                continue
            w = plot_w * value / x_max
            parts.append(
                f'<rect class="bar" data-value="{value:g}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{row_h - 6}" fill="{colour}"><title>{_e(label)}: {value:g} {_e(name)}</title></rect>'
            )
            x += w
        parts.append(
            f'<text x="{x + 4:.1f}" y="{y + row_h / 2 + 1:.1f}" fill="#333" font-size="11">'
            f"{_e(_values_note(values))}</text>"
        )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def _values_note(values: Sequence[float]) -> str:
    breached = values[0]
    total = sum(values)
    return f"{breached:g} ({breached / total:.0%})" if total else ""


# ----------------------------------------------------------------------------------------- page

_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px auto;
       max-width: 1280px; padding: 0 20px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
p.meta { color: #555; margin: 0 0 18px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 18px; }
figure.chart { margin: 0; padding: 12px 14px; border: 1px solid #ddd; border-radius: 6px; }
figcaption { margin-bottom: 6px; }
figcaption strong { display: block; font-size: 15px; }
figcaption span { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 0 0 20px; font-size: 13px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.notes { margin: -12px 0 20px; font-size: 13px; color: #333; }
.notes p { margin: 2px 0; }
"""


def _summary_table(data: ReportData) -> str:
    head = "<tr><th>channel</th><th>SLA clocks decided</th><th>met</th><th>breached</th>"
    head += "<th>undetermined</th><th>compliance</th><th>median first response</th><th>open now</th></tr>"
    body = []
    for stream_id in data.channels:
        met = sum(m for (s, _), (m, _b) in data.daily.items() if s == stream_id)
        breached = sum(b for (s, _), (_m, b) in data.daily.items() if s == stream_id)
        share = compliance(met, breached)
        middle = median(data.first_responses.get(stream_id, ()))
        body.append(
            f"<tr><td>{_e(channel_name(stream_id))}</td><td>{met + breached}</td><td>{met}</td>"
            f"<td>{breached}</td><td>{data.undetermined.get(stream_id, 0)}</td>"
            f"<td>{'-' if share is None else f'{share:.1%}'}</td>"
            f"<td>{'-' if middle is None else short_duration(middle)}</td>"
            f"<td>{len(data.backlog_ages.get(stream_id, []))}</td></tr>"
        )
    lines = data.reconciliation.lines() if data.reconciliation else [RECONCILIATION_NOT_BUILT]
    notes = "".join(f"<p>{_e(line)}</p>" for line in [UNDETERMINED_NOTE, *lines])
    return f'<table class="summary">{head}{"".join(body)}</table><div class="notes">{notes}</div>'


def render_html(data: ReportData, generated_at: datetime | None = None) -> str:
    """The whole page, self-contained."""
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    dates = [data.start + timedelta(days=i) for i in range((data.end - data.start).days + 1)]
    labels = [d.strftime("%m-%d") for d in dates]
    compliance_series = []
    for stream_id in data.channels:
        values: list[float | None] = []
        hovers = []
        for d in dates:
            met, breached = data.daily.get((stream_id, d), (0, 0))
            values.append(compliance(met, breached))
            share = "no decided clocks" if met + breached == 0 else f"{met / (met + breached):.1%}"
            hovers.append(
                f"{channel_name(stream_id)} {d.isoformat()}: {share} (met {met}, breached {breached})"
            )
        compliance_series.append((channel_name(stream_id), values, hovers))
    agents = sorted(data.agents.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))[:MAX_AGENTS]
    response_series = []
    for stream_id in data.channels:
        counts = [0.0] * len(RESPONSE_BUCKETS)
        for seconds in data.first_responses.get(stream_id, []):
            counts[_bucket(seconds, RESPONSE_BUCKETS)] += 1
        response_series.append((channel_name(stream_id), counts))
    backlog_series = []
    for stream_id in data.channels:
        counts = [0.0] * len(AGE_BUCKETS)
        for age in data.backlog_ages.get(stream_id, []):
            counts[_bucket(age, AGE_BUCKETS)] += 1
        backlog_series.append((channel_name(stream_id), counts))
    period = f"{data.start.isoformat()} to {data.end.isoformat()}"
    as_of = data.as_of.strftime("%Y-%m-%d %H:%M UTC") if data.as_of else "-"
    charts = [
        line_chart(
            "compliance",
            "SLA compliance per channel per day",
            "met ÷ (met + breached) SLA clocks, by the local date a clock started",
            labels,
            compliance_series,
        ),
        horizontal_bars(
            "agent-breaches",
            "Breaches by agent",
            f"SLA clocks the agent held when decided, {period}; top {MAX_AGENTS} by breaches",
            [(label, [float(breached), float(met)]) for label, (met, breached) in agents],
            [("breached", BREACHED_COLOUR), ("met", MET_COLOUR)],
        ),
        stacked_columns(
            "first-response",
            "Distribution of first response times",
            f"conversations by time to the first reply (calendar time), {period}",
            [label for label, _ in RESPONSE_BUCKETS],
            response_series,
            unit="conversations",
        ),
        stacked_columns(
            "backlog-age",
            "Backlog by age",
            f"open conversations at {as_of} by time since they were created",
            [label for label, _ in AGE_BUCKETS],
            backlog_series,
            unit="open conversations",
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>CommBox SLA report {period}</title><style>{_CSS}</style></head><body>"
        f'<h1>CommBox SLA report</h1><p class="meta">{_e(period)} (last {len(dates)} days with data) · '
        f"data as of {_e(as_of)} · generated {_e(generated)}</p>"
        f"{_summary_table(data)}"
        f'<div class="grid">{"".join(charts)}</div>'
        "</body></html>\n"
    )


def write_html_report(pipeline: Any, path: Path, days: int = 7) -> Path:
    """Collect the numbers and write the page to `path` (folders created); returns the absolute path."""
    data = collect(pipeline, days=days)
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(data), encoding="utf-8")
    return target


__all__ = ["ReportData", "collect", "render_html", "write_html_report"]
