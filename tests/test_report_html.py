"""The HTML SLA report: self-contained, escaped, its figures equal to the marts, and drawn for real by
a headless Chromium with the expected number of marks in every chart.

The browser tests need Debian's `chromium` (`apt-get install chromium`); without it they are skipped,
unless `COMMBOX_REQUIRE_CHROMIUM` is set (CI), when they fail. With `COMMBOX_UPDATE_SCREENSHOT=1` the
browser test also writes its 1400 px wide screenshot to docs/img/sla-report.png (the README's).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.ops.runner import run_pipeline
from pipelines.reporting.report_data import (
    METRICS,
    Agent,
    Agreement,
    ClockCounts,
    Figures,
    Reconciliation,
    StreamReconciliation,
    collect_figures,
)
from pipelines.reporting.report_html import (
    MAX_AGENTS,
    PALETTE,
    RESPONSE_BUCKETS,
    render_html,
    write_html_report,
)
from pipelines.reporting.views import build_views
from tests.helpers import make_test_pipeline, query, source_settings
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "sla-report.png"
SCREENSHOT_SIZE = (1400, 2200)
FIXED_CHARTS = (
    *(f"attainment-{metric}" for metric in METRICS),
    "first-response-heat-map",
    "first-response-distribution",
    "agent-breach-rate",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
)
NS = "{http://www.w3.org/2000/svg}"


def _sample() -> Figures:
    start = date(2024, 3, 4)  # a Monday
    figures = Figures(start=start, end=start + timedelta(days=6), as_of=datetime(2024, 3, 11, tzinfo=UTC))
    for i in range(7):
        day = start + timedelta(days=i)
        figures.daily[("business", "first_response", 510, day)] = ClockCounts(25, 20, 3, 2, 1, 0)
        figures.daily[("calendar", "first_response", 510, day)] = ClockCounts(25, 15, 8, 2, 2, 0)
        if i != 3:  # a day without decided clocks leaves a gap
            figures.daily[("business", "first_response", 533, day)] = ClockCounts(10 + i, 10, i, 0, 0, 0)
        figures.volume[(510, day)] = (30, 25 + i, 40 + i)
        figures.volume[(533, day)] = (5, 4, 9)
    for metric in METRICS:
        figures.targets[(metric, 510)] = figures.targets[(metric, 533)] = (3600, 3600)
    figures.first_responses = [
        (510, start, 9, 30.0, 3600),
        (510, start, 9, 200.0, 3600),
        (510, start + timedelta(days=1), 14, 5000.0, 3600),
        (533, start + timedelta(days=2), 10, 90000.0, 3600),
    ]
    figures.agents = [
        Agent(1, "Ann Lee", False, ClockCounts(45, 40, 5, 0, 0, 0)),
        Agent(2, "<script>alert(1)</script>", False, ClockCounts(12, 3, 9, 0, 0, 0)),
        Agent(3, "Helper bot", True, ClockCounts(10, 10, 0, 0, 0, 0)),
    ]
    figures.streams = [
        StreamReconciliation(510, True, 4, 1, 4, 1, 120, 2, 7),
        StreamReconciliation(533, True, 3, 0, 1, 0, 10, 0, 0),
    ]
    figures.reconciliation = Reconciliation(Agreement(130, 2, 7), Agreement(135, 1, 3))
    figures.channels = [510, 533]
    figures.names = {510: "E-mail", 533: "Chat"}
    figures.policy_basis = {510: "business", 533: "business"}
    return figures


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", page, re.DOTALL)]


def _charts(page: str) -> dict[str, str]:
    """Each chart's markup by its data-chart name."""
    return dict(
        re.findall(r'<figure class="chart" data-chart="([a-z_0-9-]+)"[^>]*>(.*?)</figure>', page, re.DOTALL)
    )


def _values(markup: str, kind: str, series: str) -> int:
    """The sum of the data-value of the marks of one kind (and series)."""
    pattern = rf'class="{kind}"(?: data-series="{series}")? data-value="(\d+)"'
    return sum(int(v) for v in re.findall(pattern, markup))


def _marks(markup: str, kind: str) -> int:
    return len(re.findall(rf'class="{kind}"', markup))


def test_page_draws_every_chart_as_inline_svg_with_its_marks():
    page = render_html(_sample())
    charts = _charts(page)
    assert set(FIXED_CHARTS) | {"volume-0", "volume-1"} == set(charts)
    assert len(_svgs(page)) == len(charts)  # every chart is well-formed SVG
    first = charts["attainment-first_response"]
    assert _marks(first, "series") == 2 and _marks(first, "point") == 7 + 6 and _marks(first, "target") == 1
    # a gap on the day without clocks: that series' path is drawn in two pieces
    chat = re.search(r'data-series="Chat"><path d="([^"]*)"', first)
    assert chat is not None and chat.group(1).count("M") == 2
    # the attainment of E-mail: 20 met of 20 + 3 + 1 decided
    assert f'cy="{34 + 242 - 242 * 20 / 24:.1f}"' in first
    assert "no data in this period" in charts["attainment-next_response"]  # no next-response clocks
    assert _marks(charts["volume-0"], "bar") == 14 and _marks(charts["volume-0"], "point") == 7
    heat = charts["first-response-heat-map"]
    assert _marks(heat, "cell") == 3  # Mon 09h (two), Tue 14h, Wed 10h
    assert 'data-value="115" data-clocks="2"' in heat
    distribution = charts["first-response-distribution"]
    assert sorted(
        map(int, re.findall(r'class="bar" data-series="[^"]*" data-value="(\d+)"', distribution))
    ) == [
        1,
        1,
        1,
        1,
    ]
    assert _marks(distribution, "target") == 1 and 'data-seconds="3600"' in distribution
    agents = charts["agent-breach-rate"]
    assert _marks(agents, "bar") == 2  # the bot is apart
    assert re.findall(r'class="bar" data-value="([0-9.]+)"', agents) == ["0.750000", "0.111111"]
    assert "Helper bot" not in agents and '<table class="bots">' in page


def test_tables_add_up_and_keep_the_bases_apart():
    page = render_html(_sample())
    for basis in ("business", "calendar"):
        table = re.search(rf'<table class="attainment" data-basis="{basis}">(.*?)</table>', page, re.DOTALL)
        assert table is not None and f"({basis} time)" in table.group(1)
        other = "calendar" if basis == "business" else "business"
        assert f"{other} time" not in table.group(1)
        for row in re.findall(r"<tr[^>]*data-metric[^>]*>(.*?)</tr>", table.group(1)):
            cells = dict(re.findall(r'data-key="([a-z_]+)">([^<]*)<', row))
            met, breached, running, undetermined = (
                int(cells[k]) for k in ("met", "breached", "running", "undetermined")
            )
            assert met + breached + running + undetermined == int(cells["clocks"])
    assert (
        '<table class="weekly" data-basis="business">' in page
        and '<table class="weekly" data-basis="calendar">' in page
    )
    assert "<th>week of 03-04</th>" in page  # Monday to Sunday, whole: not marked as a part
    partial = _sample()
    partial.end -= timedelta(days=1)
    assert "<th>week of 03-04 (part)</th>" in render_html(partial)
    assert "How this is measured" in page and "met + breached + running + undetermined = clocks" in page


def test_reconciliation_panel_lists_the_disagreements():
    page = render_html(_sample())
    panel = re.search(r'<section class="reconciliation">(.*?)</section>', page, re.DOTALL)
    assert panel is not None
    items = re.findall(r"<li>([^<]*)</li>", panel.group(1))
    assert items == [
        "E-mail: 2 first agent replies differ from CommBox&#x27;s firstResponseTime",
        "Chat: open conversations in SLA breach: CommBox 3, ours 1",
    ]
    assert "first replies vs CommBox firstResponseTime: 130 agree, 2 disagree (7 unknown)" in panel.group(1)


def test_page_needs_no_network_and_escapes_what_it_shows():
    page = render_html(_sample())
    assert "<script" not in page.replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_empty_period_still_renders_every_chart():
    page = render_html(Figures(start=date(2024, 3, 1), end=date(2024, 3, 7), as_of=None))
    charts = _charts(page)
    assert set(charts) == set(FIXED_CHARTS)
    assert page.count("data-empty") == len(FIXED_CHARTS)
    assert len(_svgs(page)) == len(FIXED_CHARTS)


def test_known_answers_on_the_page(tmp_path):
    pipeline = make_test_pipeline(tmp_path, name="html_known_answers")
    load_conversations(pipeline, CONVERSATIONS)
    build_views(pipeline)
    figures = collect_figures(pipeline, days=400, names={1: "E-mail"})
    page = render_html(figures)
    # stream 1's first responses in business time: 101 (30 min) met, 104 (90 min) breached; the five
    # clocks of 130-134 that depend on an unknown-side message are undetermined, three of them first
    # responses; conversation 135's first reply disagrees with CommBox's
    row = re.search(
        r'<table class="attainment" data-basis="business">.*?<tr data-stream="1" '
        r'data-metric="first_response">(.*?)</tr>',
        page,
        re.DOTALL,
    )
    assert row is not None
    cells = dict(re.findall(r'data-key="([a-z_]+)">([^<]*)<', row.group(1)))
    assert cells["undetermined"] == "3"
    assert "conversation 135 (E-mail)" in page
    assert "1 disagree (2 unknown)" in page


@pytest.fixture
def loaded(sim, tmp_path):
    """The simulator's account loaded into DuckDB with the SLA views built."""
    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path)
    run_pipeline(pipeline, source_overrides=source_settings(sim))
    return pipeline


def _period(pipeline, days: int) -> tuple[str, str]:
    (last,) = query(pipeline, "select max(local_date) from commbox_reporting.agg_sla_attainment_daily")[0]
    return str(last - timedelta(days=days - 1)), str(last)


def test_figures_on_the_page_match_the_marts(loaded, tmp_path):
    page = write_html_report(loaded, tmp_path / "sla.html", days=7, names={}).read_text()
    start, end = _period(loaded, 7)
    keys = ("clocks", "met", "breached", "running", "running_past_target", "undetermined")
    checked = 0
    for basis, metric, stream_id, *sums in query(
        loaded,
        "select time_basis, metric, stream_id, sum(clocks), sum(met_clocks), sum(breached_clocks), "
        "sum(running_clocks), sum(running_past_target_clocks), sum(undetermined_clocks) "
        "from commbox_reporting.agg_sla_attainment_daily "
        f"where local_date between '{start}' and '{end}' group by all",
    ):
        table = re.search(rf'<table class="attainment" data-basis="{basis}">(.*?)</table>', page, re.DOTALL)
        assert table is not None
        row = re.search(rf'<tr data-stream="{stream_id}" data-metric="{metric}">(.*?)</tr>', table.group(1))
        assert row is not None, (basis, metric, stream_id)
        cells = dict(re.findall(r'data-key="([a-z_]+)">([^<]*)<', row.group(1)))
        assert [int(cells[k].replace(",", "")) for k in keys] == [int(v) for v in sums]
        met, breached, past = int(sums[1]), int(sums[2]), int(sums[4])
        expected = "-" if met + breached + past == 0 else f"{met / (met + breached + past):.1%}"
        assert cells["attainment"] == expected
        checked += 1
    assert checked >= 6
    # volume: every day's new and resolved columns and backlog points
    charts = _charts(page)
    streams = [
        s
        for (s,) in query(
            loaded,
            "select distinct stream_id from commbox_reporting.fct_stream_sla_reconciliation order by 1",
        )
    ]
    for n, stream_id in enumerate(streams):
        new, resolved, backlog = query(
            loaded,
            "select coalesce(sum(new_conversations), 0), coalesce(sum(resolved_conversations), 0), "
            "coalesce(sum(backlog_conversations), 0) from commbox_reporting.agg_channel_volume_daily "
            f"where stream_id = {stream_id} and local_date between '{start}' and '{end}'",
        )[0]
        chart = charts[f"volume-{n}"]
        assert _values(chart, "bar", "new") == new and _values(chart, "bar", "resolved") == resolved
        assert _values(chart, "point", "") == backlog
    # the reconciliation panel: CommBox's counts and ours, as in fct_stream_sla_reconciliation
    for stream_id, vendor_breached, breached, vendor_critical, critical in query(
        loaded,
        "select stream_id, vendor_breached_conversations, breached_conversations, "
        "vendor_critical_conversations, critical_conversations "
        "from commbox_reporting.fct_stream_sla_reconciliation",
    ):
        row = re.search(rf'<tr data-stream="{stream_id}"><td>[^<]*</td>((?:<td[^>]*>[^<]*</td>)+)</tr>', page)
        assert row is not None
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
        assert cells[:4] == [str(vendor_breached), str(breached), str(vendor_critical), str(critical)]


def expected_marks(pipeline, days: int) -> dict[str, dict[str, int]]:
    """Per chart, how many marks of each kind the page must draw, counted from the marts."""
    start, end = _period(pipeline, days)
    period = f"between '{start}' and '{end}'"
    marks: dict[str, dict[str, int]] = {}
    for metric in METRICS:
        series, points = query(
            pipeline,
            "select count(distinct stream_id), count(*) from commbox_reporting.agg_sla_attainment_daily "
            f"where time_basis = 'business' and metric = '{metric}' and attainment is not null and local_date {period}",
        )[0]
        marks[f"attainment-{metric}"] = {"series": series, "point": points, "target": 1}
    streams = [
        s
        for (s,) in query(
            pipeline,
            "select distinct stream_id from commbox_reporting.fct_stream_sla_reconciliation order by 1",
        )
    ]
    for n, stream_id in enumerate(streams):
        bars, points = query(
            pipeline,
            "select sum(case when new_conversations > 0 then 1 else 0 end) "
            "+ sum(case when resolved_conversations > 0 then 1 else 0 end), count(*) "
            f"from commbox_reporting.agg_channel_volume_daily where stream_id = {stream_id} and local_date {period}",
        )[0]
        marks[f"volume-{n}"] = {"bar": int(bars or 0), "point": points}
    responded = (
        "from commbox_reporting.fct_sla_clock_outcomes where time_basis = 'business' and metric = 'first_response' "
        f"and stop_reason = 'responded' and outcome in ('met', 'breached') and started_local_date {period}"
    )
    (cells,) = query(
        pipeline, f"select count(distinct (isodow(started_local_date), started_local_hour)) {responded}"
    )[0]
    marks["first-response-heat-map"] = {"cell": cells}
    bucket = " ".join(
        f"when elapsed_seconds < {upper} then {i}" for i, (_, upper) in enumerate(RESPONSE_BUCKETS[:-1])
    )
    bars, targets = query(
        pipeline,
        f"select count(distinct (stream_id, case {bucket} else {len(RESPONSE_BUCKETS) - 1} end)), "
        f"count(distinct target_seconds) {responded}",
    )[0]
    marks["first-response-distribution"] = {"bar": bars, "target": targets}
    (agents,) = query(
        pipeline,
        "select count(*) from (select manager_id from commbox_reporting.agg_agent_attainment_daily "
        f"where time_basis = 'business' and not is_bot and local_date {period} group by manager_id "
        "having sum(met_clocks + breached_clocks + running_past_target_clocks) > 0)",
    )[0]
    marks["agent-breach-rate"] = {"bar": min(agents, MAX_AGENTS)}
    return marks


def test_report_command_writes_the_page(loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "warehouse.duckdb"))
    target = tmp_path / "out" / "sla.html"
    args = ["report", "--html", str(target), "--days", "10", "--pipelines-dir", str(tmp_path / "pipelines")]
    assert main(args) == 0
    assert f"SLA report written to {target}" in capsys.readouterr().out
    charts = _charts(target.read_text())
    assert set(FIXED_CHARTS) <= set(charts)
    assert not [name for name, markup in charts.items() if "no data in this period" in markup]


# ------------------------------------------------------------------------------ in a real browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("COMMBOX_REQUIRE_CHROMIUM"):
        pytest.fail("COMMBOX_REQUIRE_CHROMIUM is set but chromium is not installed")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    channels = 4 if colour_type == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                nearest = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + nearest) & 0xFF
        pixels.extend(tuple(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_charts_render_in_headless_chromium(loaded, tmp_path):
    page = write_html_report(loaded, tmp_path / "reports" / "sla.html", days=14, names={})
    url = page.as_uri()
    dom = _browser(tmp_path, "--dump-dom", url).stdout
    charts = _charts(dom)
    expected = expected_marks(loaded, 14)
    assert set(charts) == set(expected)
    for name, kinds in expected.items():
        assert "no data in this period" not in charts[name], name
        assert {kind: _marks(charts[name], kind) for kind in kinds} == kinds, name

    shot = tmp_path / "sla.png"
    _browser(
        tmp_path, f"--screenshot={shot}", f"--window-size={SCREENSHOT_SIZE[0]},{SCREENSHOT_SIZE[1]}", url
    )
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == SCREENSHOT_SIZE
    colours = Counter(pixels)
    assert len(colours) > 100, "the page looks blank"
    assert colours.most_common(1)[0][1] < 0.95 * len(pixels), "the page looks blank"
    channels = len(re.findall(r'data-chart="volume-\d+"', dom))
    for colour in PALETTE[: min(channels, 3)]:  # the channels' colours were painted
        assert colours[_hex(colour)] > 50, colour
    if os.environ.get("COMMBOX_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)


def test_readme_screenshot_is_the_current_page_size():
    width, height, _ = decode_png(SCREENSHOT.read_bytes())
    assert (width, height) == SCREENSHOT_SIZE


def test_demo_ends_by_writing_the_report(tmp_path, monkeypatch, capsys):
    """`make run` (`commbox-etl demo`) ends with the HTML report's path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS", raising=False)
    for key in ("BASE_URL", "API_KEY", "START_DATE"):  # the demo sets these; restore them after
        monkeypatch.setenv(f"SOURCES__COMMBOX__{key}", "")
    assert main(["demo", "--conversations", "150", "--days", "5"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    page = tmp_path / "reports" / "sla.html"
    assert out[-1] == f"SLA report with charts (open it in a browser): {page}"
    assert set(FIXED_CHARTS) <= set(_charts(page.read_text()))


@pytest.mark.postgres
def test_report_from_postgres(sim, tmp_path, postgres_credentials):
    import dlt

    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path, destination=dlt.destinations.postgres(postgres_credentials))
    run_pipeline(pipeline, source_overrides=source_settings(sim))
    figures = collect_figures(pipeline, days=7, names={})
    assert figures.daily and figures.agents and figures.first_responses and figures.channels
    for basis in ("business", "calendar"):
        for stream_id in figures.channels:
            counts = figures.counts(basis, stream_id=stream_id)
            assert counts.met + counts.breached + counts.running + counts.undetermined == counts.clocks
    page = write_html_report(pipeline, tmp_path / "sla.html", days=7, names={}).read_text()
    assert set(FIXED_CHARTS) <= set(_charts(page))
