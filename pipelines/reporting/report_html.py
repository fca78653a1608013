"""`commbox-etl report --html PATH`: the SLA report as one self-contained HTML page with charts.

The page needs no network to be viewed: no scripts, fonts or styles from elsewhere; every chart is
inline SVG drawn here. Every figure comes from `report_data.collect_figures` (the terminal report
reads the same `Figures`, so the two never disagree):

- attainment tables per channel and metric, one in business time and one in calendar time (never
  mixed), with met + breached + running + undetermined = clocks and running past target apart;
- per metric, attainment per channel per day (business time) with the goal drawn, and per week
  (tables, each basis apart);
- volume per channel per day: new and resolved conversations (columns) and the backlog (line);
- an hour-of-day x weekday heat map of the median first response in business time;
- the distribution of first responses (business time) with each channel's target marked;
- agents by breach rate with their volume, bots apart;
- the reconciliation panel: CommBox's SLA breach and critical counts and firstResponseTime against
  ours, every disagreement listed;
- a short "how this is measured" note (`report_data.HOW_MEASURED`).

Charts are `<figure class="chart" data-chart="...">`; their marks carry `class="series"`,
`class="point"`, `class="bar"`, `class="cell"` or `class="target"` and a `<title>` with the exact
numbers (shown on hover). Figures read by tests carry `data-*` attributes with the raw numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .report_data import (
    BASIS_LABELS,
    CHART_BASIS,
    HOW_MEASURED,
    METRIC_LABELS,
    METRICS,
    RECONCILIATION_NOT_BUILT,
    TIME_BASES,
    UNDETERMINED_NOTE,
    ClockCounts,
    Figures,
    collect_figures,
    short_duration,
)

# Okabe-Ito: tells channels apart for colour-blind readers too; yellow left out (too light on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
BREACHED_COLOUR = "#D55E00"
MET_COLOUR = "#009E73"
NEW_COLOUR = "#0072B2"
RESOLVED_COLOUR = "#009E73"
BACKLOG_COLOUR = "#D55E00"
# The dashed line on the attainment charts: a common contact-centre goal, not a CommBox setting.
ATTAINMENT_GOAL = 0.9
MAX_AGENTS = 15
MAX_DISAGREEMENTS = 50
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
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
# A sequential scale light -> dark (cividis-like; readable without telling hues apart).
HEAT_SCALE = ("#FFEA46", "#CBBA69", "#958F78", "#666970", "#31446B", "#00224E")


def bucket_of(value: float, buckets: Sequence[tuple[str, float]] = RESPONSE_BUCKETS) -> int:
    """The index of the first bucket whose upper bound is above `value`."""
    for index, (_, upper) in enumerate(buckets):
        if value < upper:
            return index
    return len(buckets) - 1


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
    goal: float | None = None,
    width: int = 620,
    height: int = 320,
) -> str:
    """One line per series over shared x labels, y from 0 to 100 %; None leaves a gap.

    Args:
        series: `(name, values in 0..1, hover text per point)`.
        goal: a share drawn as a dashed `class="target"` line.
    """
    if not x_labels or not any(v is not None for _, values, _ in series for v in values):
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, right, top, bottom = 52, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    parts = [_legend([name for name, _, _ in series], colours, left, 16)]
    parts.append(_y_axis(left, top, plot_w, plot_h, 1.0, 0.25, lambda v: f"{v:.0%}"))
    if goal is not None:
        y = top + plot_h - plot_h * goal
        parts.append(
            f'<g class="target"><line x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#333" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{left + plot_w - 4:.1f}" '
            f'y="{y - 5:.1f}" text-anchor="end" fill="#333" font-size="11">goal {goal:.0%}</text></g>'
        )
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


def volume_chart(
    chart: str,
    title: str,
    subtitle: str,
    x_labels: Sequence[str],
    new: Sequence[int],
    resolved: Sequence[int],
    backlog: Sequence[int | None],
    *,
    width: int = 620,
    height: int = 300,
) -> str:
    """Per day, two columns (new, resolved) side by side and the backlog as a line with points."""
    top_value = max([*new, *resolved, *(b or 0 for b in backlog), 0])
    if not x_labels or top_value == 0:
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, right, top, bottom = 52, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max, step = _nice_max(top_value)
    parts = [
        _legend(["new", "resolved", "backlog"], [NEW_COLOUR, RESOLVED_COLOUR, BACKLOG_COLOUR], left, 16),
        _y_axis(left, top, plot_w, plot_h, y_max, step, lambda v: f"{v:g}"),
    ]
    slot = plot_w / len(x_labels)
    bar_w = slot * 0.36
    every = max(1, math.ceil(len(x_labels) / 10))
    path, points = [], []
    for i, label in enumerate(x_labels):
        x0 = left + slot * i + slot * 0.14
        for offset, (name, value, colour) in enumerate(
            (("new", new[i], NEW_COLOUR), ("resolved", resolved[i], RESOLVED_COLOUR))
        ):
            if value > 0:
                h = plot_h * value / y_max
                parts.append(
                    f'<rect class="bar" data-series="{name}" data-value="{value}" x="{x0 + offset * bar_w:.1f}" '
                    f'y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                    f"<title>{_e(label)}: {value} {name}</title></rect>"
                )
        if backlog[i] is not None:
            x = left + slot * (i + 0.5)
            y = top + plot_h - plot_h * (backlog[i] or 0) / y_max
            path.append(f"{'M' if not path else 'L'}{x:.1f},{y:.1f}")
            points.append(
                f'<circle class="point" data-value="{backlog[i]}" cx="{x:.1f}" cy="{y:.1f}" r="3" '
                f'fill="{BACKLOG_COLOUR}"><title>{_e(label)}: backlog {backlog[i]}</title></circle>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{left + slot * (i + 0.5):.1f}" y="{top + plot_h + 18:.1f}" text-anchor="middle" '
                f'fill="#555">{_e(label)}</text>'
            )
    parts.append(
        f'<g class="series" data-series="backlog"><path d="{" ".join(path)}" fill="none" '
        f'stroke="{BACKLOG_COLOUR}" stroke-width="2"/>{"".join(points)}</g>'
    )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def distribution_chart(
    chart: str,
    title: str,
    subtitle: str,
    series: Sequence[tuple[str, Sequence[int]]],
    targets: Sequence[tuple[str, float]],
    *,
    width: int = 620,
    height: int = 320,
) -> str:
    """Counts per response-time bucket stacked by series, each target a dashed `class="target"` line.

    Args:
        series: `(name, count per RESPONSE_BUCKETS bucket)`.
        targets: `(label, seconds)`; the line sits inside the bucket holding it, in proportion.
    """
    categories = [label for label, _ in RESPONSE_BUCKETS]
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    if not any(totals):
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, right, top, bottom = 52, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max, step = _nice_max(max(totals))
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    parts = [
        _legend([name for name, _ in series], colours, left, 16),
        _y_axis(left, top, plot_w, plot_h, y_max, step, lambda v: f"{v:g}"),
    ]
    slot = plot_w / len(categories)
    bar_w = slot * 0.72
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        base = top + plot_h
        for (name, values), colour in zip(series, colours, strict=True):
            if values[i] <= 0:
                continue
            h = plot_h * values[i] / y_max
            base -= h
            parts.append(
                f'<rect class="bar" data-series="{_e(name)}" data-value="{values[i]}" x="{x:.1f}" '
                f'y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"><title>{_e(name)}, '
                f"{_e(category)}: {values[i]} first responses</title></rect>"
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 18:.1f}" text-anchor="middle" fill="#555">'
            f"{_e(category)}</text>"
        )
    for n, (label, seconds) in enumerate(targets):
        index = bucket_of(seconds)
        lower = RESPONSE_BUCKETS[index - 1][1] if index else 0
        upper = RESPONSE_BUCKETS[index][1]
        within = 0.5 if math.isinf(upper) else (seconds - lower) / (upper - lower)
        x = left + slot * (index + within)
        parts.append(
            f'<g class="target" data-seconds="{seconds:g}"><line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" '
            f'y2="{top + plot_h:.1f}" stroke="#333" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{x + 4:.1f}" y="{top + 12 + 13 * n:.1f}" fill="#333" font-size="11">{_e(label)}</text></g>'
        )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def heat_map(
    chart: str,
    title: str,
    subtitle: str,
    cells: dict[tuple[int, int], tuple[float, int]],
    scale_max: float,
    *,
    width: int = 620,
) -> str:
    """Weekday rows x hour-of-day columns; a cell per (weekday, hour) with data, darker = slower.

    Args:
        cells: `(weekday 0=Mon, hour) -> (median seconds, clocks)`.
        scale_max: the seconds at which the colour is darkest (the target, twice over).
    """
    height = 34 + 7 * 24 + 40
    if not cells:
        return _figure(chart, title, subtitle, _empty(width, height, title), empty=True)
    left, top, cell_h = 44, 34, 24
    cell_w = (width - left - 16) / 24
    parts = []
    for day, name in enumerate(WEEKDAYS):
        parts.append(
            f'<text x="{left - 6}" y="{top + cell_h * day + 16:.1f}" text-anchor="end" fill="#333">{name}</text>'
        )
    for hour in range(0, 24, 3):
        parts.append(
            f'<text x="{left + cell_w * (hour + 0.5):.1f}" y="{top + cell_h * 7 + 16:.1f}" '
            f'text-anchor="middle" fill="#555">{hour:02d}h</text>'
        )
    for (day, hour), (seconds, clocks) in sorted(cells.items()):
        level = min(len(HEAT_SCALE) - 1, int(len(HEAT_SCALE) * seconds / scale_max)) if scale_max else 0
        parts.append(
            f'<rect class="cell" data-value="{seconds:g}" data-clocks="{clocks}" x="{left + cell_w * hour:.1f}" '
            f'y="{top + cell_h * day:.1f}" width="{cell_w - 1:.1f}" height="{cell_h - 1}" '
            f'fill="{HEAT_SCALE[level]}"><title>{WEEKDAYS[day]} {hour:02d}:00–{hour:02d}:59: median '
            f"{_e(short_duration(seconds))} over {clocks} first responses</title></rect>"
        )
    key_x = left
    for i, colour in enumerate(HEAT_SCALE):
        low = scale_max * i / len(HEAT_SCALE)
        parts.append(
            f'<rect x="{key_x:.1f}" y="8" width="14" height="12" fill="{colour}"/>'
            f'<text x="{key_x + 18:.1f}" y="18" fill="#333" font-size="11">≥{_e(short_duration(low))}</text>'
        )
        key_x += 78
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


def rate_bars(
    chart: str,
    title: str,
    subtitle: str,
    rows: Sequence[tuple[str, float, int, int]],
    *,
    width: int = 620,
) -> str:
    """A bar per row `(label, breach rate 0..1, breached, decided)`, labelled with its volume."""
    if not rows:
        return _figure(chart, title, subtitle, _empty(width, 200, title), empty=True)
    left, right, top, row_h = 190, 110, 24, 22
    height = top + row_h * len(rows) + 30
    plot_w = width - left - right
    bottom = top + row_h * len(rows)
    parts = []
    for i in range(5):
        x = left + plot_w * i / 4
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{x:.1f}" y="{bottom + 16:.1f}" text-anchor="middle" fill="#555">{i * 25}%</text>'
        )
    for r, (label, rate, breached, decided) in enumerate(rows):
        y = top + r * row_h + 3
        short = label if len(label) <= 26 else label[:25] + "…"
        w = max(1.0, plot_w * rate)
        parts.append(
            f'<text x="{left - 8}" y="{y + row_h / 2 + 1:.1f}" text-anchor="end" fill="#333">{_e(short)}</text>'
            f'<rect class="bar" data-value="{rate:.6f}" x="{left}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{row_h - 6}" fill="{BREACHED_COLOUR}"><title>{_e(label)}: {breached} of {decided} '
            f"decided clocks breached ({rate:.1%})</title></rect>"
            f'<text x="{left + w + 4:.1f}" y="{y + row_h / 2 + 1:.1f}" fill="#333" font-size="11">'
            f"{rate:.0%} of {decided}</text>"
        )
    return _figure(chart, title, subtitle, _svg(width, height, title, "".join(parts)))


# ----------------------------------------------------------------------------------------- page

_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px auto;
       max-width: 1360px; padding: 0 20px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 26px 0 8px; }
p.meta { color: #555; margin: 0 0 14px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(600px, 1fr)); gap: 16px; }
figure.chart { margin: 0; padding: 10px 12px; border: 1px solid #ddd; border-radius: 6px; }
figcaption { margin-bottom: 6px; }
figcaption strong { display: block; font-size: 15px; }
figcaption span { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 0 0 12px; font-size: 12.5px; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child, td.metric { text-align: left; }
tr.total td { font-weight: bold; }
.notes { font-size: 12.5px; color: #333; }
.notes p, .notes li { margin: 2px 0; }
.bad { color: #B33C00; font-weight: bold; }
"""


_TOTAL = ' class="total"'
_BAD = ' class="bad"'


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _counts_cells(counts: ClockCounts) -> str:
    keys = (
        ("clocks", counts.clocks),
        ("met", counts.met),
        ("breached", counts.breached),
        ("running", counts.running),
        ("running_past_target", counts.running_past_target),
        ("undetermined", counts.undetermined),
    )
    cells = "".join(f'<td data-key="{k}">{v:,}</td>' for k, v in keys)
    return cells + f'<td data-key="attainment">{_share(counts.attainment)}</td>'


def attainment_table(figures: Figures, basis: str) -> str:
    """Per channel and metric, then all channels: the clocks of one time basis, as an HTML table."""
    head = (
        "<tr><th>channel</th><th>metric</th><th>target</th><th>clocks</th><th>met</th><th>breached</th>"
        "<th>running</th><th>of which past target</th><th>undetermined</th><th>attainment</th>"
        f"<th>median ({basis} time)</th></tr>"
    )
    body = []
    for stream_id, name, metric, counts in figures.attainment_rows(basis):
        middle = figures.median_seconds(basis, metric, stream_id)
        body.append(
            f'<tr{_TOTAL if stream_id is None else ""} data-stream="{stream_id or "all"}" '
            f'data-metric="{metric}"><td>{_e(name)}</td><td class="metric">{METRIC_LABELS[metric]}</td>'
            f"<td>{_e(figures.target_label(metric, stream_id))}</td>{_counts_cells(counts)}"
            f"<td>{'-' if middle is None else _e(short_duration(middle))}</td></tr>"
        )
    return (
        f'<table class="attainment" data-basis="{basis}"><caption>Attainment in {_e(BASIS_LABELS[basis])}'
        f"</caption>{head}{''.join(body)}</table>"
    )


def _part(figures: Figures, week: date) -> str:
    """` (part)` for a week the period covers only some days of."""
    return "" if figures.start <= week and week + timedelta(days=6) <= figures.end else " (part)"


def weekly_table(figures: Figures, basis: str) -> str:
    """Attainment per channel and metric per week (Monday to Sunday), one time basis."""
    weeks = figures.weeks()
    head = (
        "<tr><th>channel</th><th>metric</th>"
        + "".join(f"<th>week of {w:%m-%d}{_part(figures, w)}</th>" for w in weeks)
        + "</tr>"
    )
    body = []
    for stream_id in [*figures.channels, None]:
        name = "all channels" if stream_id is None else figures.names[stream_id]
        for metric in METRICS:
            if not figures.counts(basis, metric, stream_id).clocks:
                continue
            cells = []
            for week in weeks:
                c = figures.counts(basis, metric, stream_id, week=week)
                cells.append(
                    f'<td data-week="{week.isoformat()}" title="met {c.met}, breached {c.breached}, running past '
                    f'target {c.running_past_target} of {c.clocks} clocks">{_share(c.attainment)}</td>'
                )
            body.append(
                f"<tr{_TOTAL if stream_id is None else ''}><td>{_e(name)}</td>"
                f'<td class="metric">{METRIC_LABELS[metric]}</td>{"".join(cells)}</tr>'
            )
    return (
        f'<table class="weekly" data-basis="{basis}"><caption>Attainment per week, {_e(BASIS_LABELS[basis])}'
        f"</caption>{head}{''.join(body)}</table>"
    )


def attainment_series(figures: Figures, metric: str) -> list[tuple[str, list[float | None], list[str]]]:
    """A line per channel with at least one decided day: daily attainment in `CHART_BASIS`."""
    series = []
    for stream_id in figures.channels:
        values: list[float | None] = []
        hovers = []
        for day in figures.dates():
            c = figures.counts(CHART_BASIS, metric, stream_id, day=day)
            values.append(c.attainment)
            hovers.append(
                f"{figures.names[stream_id]} {day.isoformat()}: {_share(c.attainment)} (met {c.met}, breached "
                f"{c.breached}, running past target {c.running_past_target}, clocks {c.clocks})"
            )
        if any(v is not None for v in values):
            series.append((figures.names[stream_id], values, hovers))
    return series


def distribution_series(figures: Figures) -> list[tuple[str, list[int]]]:
    """First responses (business time) per bucket, one series per channel that has any."""
    series = []
    for stream_id in figures.channels:
        counts = [0] * len(RESPONSE_BUCKETS)
        for s, _, _, seconds, _ in figures.first_responses:
            if s == stream_id:
                counts[bucket_of(seconds)] += 1
        if any(counts):
            series.append((figures.names[stream_id], counts))
    return series


def _distribution_targets(figures: Figures) -> list[tuple[str, float]]:
    by_target: dict[int, list[str]] = {}
    for stream_id, _, _, _, target in figures.first_responses:
        names = by_target.setdefault(target, [])
        if figures.names[stream_id] not in names:
            names.append(figures.names[stream_id])
    if len(by_target) == 1:
        ((target, _),) = by_target.items()
        return [(f"target {short_duration(target)}", float(target))]
    return [
        (f"target {short_duration(t)}: {', '.join(names)}", float(t))
        for t, names in sorted(by_target.items())
    ]


def agents_rows(figures: Figures, bots: bool) -> list[tuple[str, float, int, int]]:
    """Agents (or bots) with a decided clock, by breach rate then volume: (name, rate, breached, decided)."""
    chosen = [a for a in figures.agents if a.is_bot == bots and a.counts.decided]
    chosen.sort(key=lambda a: (-(a.counts.breach_rate or 0.0), -a.counts.decided, a.name))
    return [
        (
            a.name,
            a.counts.breach_rate or 0.0,
            a.counts.breached + a.counts.running_past_target,
            a.counts.decided,
        )
        for a in chosen[:MAX_AGENTS]
    ]


def _bots_table(figures: Figures) -> str:
    rows = agents_rows(figures, bots=True)
    if not rows:
        return '<p class="notes">Bots: no bot held a decided clock in this period.</p>'
    body = "".join(
        f"<tr><td>{_e(name)}</td><td>{decided}</td><td>{breached}</td><td>{rate:.1%}</td></tr>"
        for name, rate, breached, decided in rows
    )
    return (
        '<table class="bots"><caption>Bots (apart from people)</caption><tr><th>bot</th><th>decided</th>'
        f"<th>breached</th><th>breach rate</th></tr>{body}</table>"
    )


def reconciliation_panel(figures: Figures) -> str:
    """CommBox's figures against ours per channel, then every disagreement."""
    head = (
        "<tr><th>channel</th><th>CommBox: in SLA breach</th><th>ours: in breach</th>"
        "<th>CommBox: SLA-critical</th><th>ours: critical</th><th>first replies agree</th>"
        "<th>disagree</th><th>unknown</th></tr>"
    )
    body = []
    for s in figures.streams:

        def vendor(value: int | None, ours: int) -> str:
            if value is None:
                return "<td>not loaded</td>"
            return f"<td{_BAD if value != ours else ''}>{value}</td>"

        body.append(
            f'<tr data-stream="{s.stream_id}"><td>{_e(figures.names.get(s.stream_id, s.stream_id))}</td>'
            f"{vendor(s.vendor_breached, s.breached)}<td>{s.breached}</td>"
            f"{vendor(s.vendor_critical, s.critical)}<td>{s.critical}</td>"
            f"<td>{s.first_replies_agree}</td>"
            f"<td{_BAD if s.first_replies_disagree else ''}>{s.first_replies_disagree}</td>"
            f"<td>{s.first_replies_unknown}</td></tr>"
        )
    lines = figures.reconciliation.lines() if figures.reconciliation else [RECONCILIATION_NOT_BUILT]
    disagreements = figures.disagreements()
    listed = "".join(f"<li>{_e(line)}</li>" for line in disagreements) or "<li>none: every figure agrees</li>"
    replies = "".join(
        f"<li>conversation {_e(r['object_id'])} ({_e(figures.names.get(int(r['stream_id']), r['stream_id']))}): "
        f"our first agent reply {_e(_when(r['first_agent_message_at']))}, CommBox's firstResponseTime "
        f"{_e(_when(r['commbox_first_response_at']))}</li>"
        for r in figures.reply_disagreements[:MAX_DISAGREEMENTS]
    )
    more = len(figures.reply_disagreements) - MAX_DISAGREEMENTS
    return (
        '<section class="reconciliation"><h2>Do our numbers match CommBox\'s?</h2>'
        f'<table class="reconciliation">{head}{"".join(body)}</table>'
        '<div class="notes"><p>Ours: open conversations at the data\'s as-of whose first response went past '
        "its target in calendar time (or still waiting past its critical share), as CommBox states its counts; "
        "CommBox's are as read at the last run.</p>"
        + "".join(f"<p>{_e(line)}</p>" for line in lines)
        + f'<p>Disagreements ({len(disagreements)}):</p><ul class="disagreements">{listed}</ul>'
        + (f'<ul class="reply-disagreements">{replies}</ul>' if replies else "")
        + (f"<p>… and {more} more conversations</p>" if more > 0 else "")
        + "</div></section>"
    )


def _when(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def render_html(figures: Figures, generated_at: datetime | None = None) -> str:
    """The whole page, self-contained."""
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    dates = figures.dates()
    labels = [d.strftime("%m-%d") for d in dates]
    period = f"{figures.start.isoformat()} to {figures.end.isoformat()}"
    as_of = figures.as_of.strftime("%Y-%m-%d %H:%M UTC") if figures.as_of else "-"
    basis = BASIS_LABELS[CHART_BASIS]
    attainment_charts = [
        line_chart(
            f"attainment-{metric}",
            f"{METRIC_LABELS[metric].capitalize()}: attainment per channel per day",
            f"target {figures.target_label(metric)}, in {basis}; dashed: goal {ATTAINMENT_GOAL:.0%}",
            labels,
            attainment_series(figures, metric),
            goal=ATTAINMENT_GOAL,
        )
        for metric in METRICS
    ]
    volume_charts = []
    for n, stream_id in enumerate(figures.channels):
        days = [figures.volume.get((stream_id, d)) for d in dates]
        volume_charts.append(
            volume_chart(
                f"volume-{n}",
                f"Volume: {figures.names[stream_id]}",
                "conversations new and resolved per local day; backlog open at the end of the day",
                labels,
                [v[0] if v else 0 for v in days],
                [v[1] if v else 0 for v in days],
                [v[2] if v else None for v in days],
            )
        )
    heat = figures.first_response_heat()
    targets = sorted({t for *_, t in figures.first_responses})
    other_charts = [
        heat_map(
            "first-response-heat-map",
            "First response by hour of day and weekday",
            f"median first response in {basis}, by the local hour the customer wrote; darkest at "
            f"twice the target ({short_duration(2 * targets[0]) if targets else '-'}) or more",
            heat,
            2.0 * (targets[0] if targets else 3600),
        ),
        distribution_chart(
            "first-response-distribution",
            "Distribution of first response",
            f"first responses by time to the reply in {basis}; dashed: the target",
            distribution_series(figures),
            _distribution_targets(figures),
        ),
        rate_bars(
            "agent-breach-rate",
            "Agents by breach rate",
            f"share of the clocks an agent held when decided that breached, in {basis}; "
            f"label: rate of decided clocks; top {MAX_AGENTS}",
            agents_rows(figures, bots=False),
        ),
    ]
    notes = "".join(f"<p>{_e(line)}</p>" for line in (*HOW_MEASURED, UNDETERMINED_NOTE))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>CommBox SLA report {period}</title><style>{_CSS}</style></head><body>"
        f'<h1>CommBox SLA report</h1><p class="meta">{_e(period)} ({len(dates)} local days, by the date a '
        f"clock started) · data as of {_e(as_of)} · generated {_e(generated)}</p>"
        + "".join(attainment_table(figures, b) for b in TIME_BASES)
        + f'<h2>Attainment per day ({_e(basis)})</h2><div class="grid">{"".join(attainment_charts)}</div>'
        + "<h2>Attainment per week</h2>"
        + "".join(weekly_table(figures, b) for b in TIME_BASES)
        + f'<h2>Volume per channel</h2><div class="grid">{"".join(volume_charts)}</div>'
        + f'<h2>First response and agents ({_e(basis)})</h2><div class="grid">{"".join(other_charts)}</div>'
        + _bots_table(figures)
        + reconciliation_panel(figures)
        + f'<section class="how-measured"><h2>How this is measured</h2><div class="notes">{notes}</div></section>'
        + "</body></html>\n"
    )


def collect(pipeline: Any, days: int = 7, names: dict[int, str] | None = None) -> Figures:
    """The page's figures (`report_data.collect_figures`)."""
    return collect_figures(pipeline, days=days, names=names)


def write_html_report(pipeline: Any, path: Path, days: int = 7, names: dict[int, str] | None = None) -> Path:
    """Collect the figures and write the page to `path` (folders created); returns the absolute path."""
    figures = collect(pipeline, days=days, names=names)
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(figures), encoding="utf-8")
    return target


__all__ = ["Figures", "collect", "render_html", "write_html_report"]
