"""The HTML SLA report: self-contained, escaped, and drawn for real by a headless Chromium.

The browser tests need Debian's `chromium` (`apt-get install chromium`); without it they are skipped,
unless `COMMBOX_REQUIRE_CHROMIUM` is set (CI), when they fail.
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
from pipelines.reporting.report_data import Agreement, Reconciliation
from pipelines.reporting.report_html import PALETTE, ReportData, collect, render_html, write_html_report
from pipelines.reporting.views import build_views
from tests.helpers import make_test_pipeline, query, source_settings
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations

CHARTS = ("compliance", "agent-breaches", "first-response", "backlog-age")
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


def _sample() -> ReportData:
    start = date(2024, 3, 1)
    data = ReportData(
        start=start, end=start + timedelta(days=6), as_of=datetime(2024, 3, 8, tzinfo=UTC), channels=[]
    )
    for i in range(7):
        data.daily[(510, start + timedelta(days=i))] = (20 + i, 3)
        if i != 3:  # a day without decided clocks leaves a gap
            data.daily[(533, start + timedelta(days=i))] = (10, i)
    data.agents = {"Ann Lee": (40, 5), "<script>alert(1)</script>": (3, 9), "Bo Chen": (12, 0)}
    data.first_responses = {510: [30, 200, 200, 1000, 5000], 533: [90000, 4000]}
    data.backlog_ages = {510: [100, 20000], 533: [700000]}
    data.undetermined = {533: 4}
    data.reconciliation = Reconciliation(Agreement(120, 2, 7), Agreement(125, 1, 3))
    data.channels = [510, 533]
    return data


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", page, re.DOTALL)]


def test_page_has_the_four_charts_as_inline_svg():
    page = render_html(_sample())
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in page
    svgs = _svgs(page)  # every chart is well-formed SVG
    assert len(svgs) == len(CHARTS)
    ns = "{http://www.w3.org/2000/svg}"
    compliance = svgs[0]
    assert len([g for g in compliance.iter(f"{ns}g") if g.get("class") == "series"]) == 2
    # a gap on the day without clocks: that series' path is drawn in two pieces
    path = next(g for g in compliance.iter(f"{ns}g") if g.get("data-series") == "Stream 533").find(
        f"{ns}path"
    )
    assert path is not None and path.get("d", "").count("M") == 2
    agent_bars = [rect for rect in svgs[1].iter(f"{ns}rect") if rect.get("class") == "bar"]
    assert sorted(float(r.get("data-value", 0)) for r in agent_bars) == sorted([5, 40, 9, 3, 12])
    first_response = [
        float(r.get("data-value", 0)) for r in svgs[2].iter(f"{ns}rect") if r.get("class") == "bar"
    ]
    assert sum(first_response) == 7
    backlog = [float(r.get("data-value", 0)) for r in svgs[3].iter(f"{ns}rect") if r.get("class") == "bar"]
    assert sum(backlog) == 3


def test_page_needs_no_network_and_escapes_what_it_shows():
    page = render_html(_sample())
    assert "<script" not in page.replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_summary_shows_undetermined_clocks_and_the_reconciliation():
    page = render_html(_sample())
    summary = re.search(r'<table class="summary">(.*?)</table>', page, re.DOTALL)
    assert summary is not None and "<th>undetermined</th>" in summary.group(1)
    rows = re.findall(r"<tr><td>(Stream \d+)</td>((?:<td>[^<]*</td>)+)</tr>", summary.group(1))
    undetermined = {name: re.findall(r"<td>([^<]*)</td>", cells)[3] for name, cells in rows}
    assert undetermined == {"Stream 510": "0", "Stream 533": "4"}
    assert "<p>first replies vs CommBox firstResponseTime: 120 agree, 2 disagree (7 unknown)</p>" in page
    assert "<p>last replies vs CommBox lastResponseTime: 125 agree, 1 disagree (3 unknown)</p>" in page


def test_collect_counts_undetermined_clocks_and_disagreements(tmp_path):
    pipeline = make_test_pipeline(tmp_path, name="html_known_answers")
    load_conversations(pipeline, CONVERSATIONS)
    build_views(pipeline)
    data = collect(pipeline, days=400)
    # the five clocks of conversations 130-134 that depend on an unknown-side message (stream 1)
    assert data.undetermined == {1: 5}
    assert data.reconciliation == Reconciliation(
        Agreement(len(CONVERSATIONS) - 3, 1, 2), Agreement(len(CONVERSATIONS) - 2, 1, 1)
    )
    # undetermined first-response clocks have no response time: 131's and 133's, though stopped by a reply
    (replied,) = query(
        pipeline,
        "select count(*) from commbox_reporting.fct_sla_events "
        "where stream_id = 1 and metric = 'first_response' and stop_reason = 'responded'",
    )[0]
    assert len(data.first_responses[1]) == replied - 2
    page = render_html(data)
    assert "1 disagree (2 unknown)" in page


def test_empty_period_still_renders_every_chart():
    data = ReportData(start=date(2024, 3, 1), end=date(2024, 3, 7), as_of=None, channels=[])
    page = render_html(data)
    assert page.count("data-empty") == len(CHARTS)
    assert page.count("no data in this period") == len(CHARTS)
    assert len(_svgs(page)) == len(CHARTS)


@pytest.fixture
def loaded(sim, tmp_path):
    """The simulator's account loaded into DuckDB with the SLA views built."""
    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path)
    run_pipeline(pipeline, source_overrides=source_settings(sim))
    return pipeline


def test_numbers_come_from_the_marts(loaded):
    data = collect(loaded, days=7)
    (last,) = query(loaded, "select max(local_date) from commbox_reporting.agg_channel_sla_daily")[0]
    assert data.end == last and data.start == last - timedelta(days=6)
    met, breached = query(
        loaded,
        "select sum(case when is_met then 1 else 0 end), sum(case when is_breached then 1 else 0 end) "
        "from commbox_reporting.fct_sla_events "
        f"where started_local_date between '{data.start}' and '{data.end}'",
    )[0]
    assert sum(m for m, _ in data.daily.values()) == met
    assert sum(b for _, b in data.daily.values()) == breached
    (responses,) = query(
        loaded,
        "select count(*) from commbox_reporting.fct_sla_events where metric = 'first_response' "
        "and stop_reason = 'responded' and not is_undetermined "
        f"and started_local_date between '{data.start}' and '{data.end}'",
    )[0]
    assert sum(len(v) for v in data.first_responses.values()) == responses > 0
    (open_now,) = query(loaded, "select count(*) from commbox_reporting.fct_conversations where is_open")[0]
    assert sum(len(v) for v in data.backlog_ages.values()) == open_now
    assert sum(b for _, b in data.agents.values()) > 0


def test_report_command_writes_the_page(loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "warehouse.duckdb"))
    target = tmp_path / "out" / "sla.html"
    args = ["report", "--html", str(target), "--days", "10", "--pipelines-dir", str(tmp_path / "pipelines")]
    assert main(args) == 0
    assert f"SLA report written to {target}" in capsys.readouterr().out
    page = target.read_text()
    assert all(f'data-chart="{chart}"' in page for chart in CHARTS)
    assert "data-empty" not in page


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
    page = write_html_report(loaded, tmp_path / "reports" / "sla.html", days=14)
    url = page.as_uri()
    channels = len(collect(loaded, days=14).channels)

    dom = _browser(tmp_path, "--dump-dom", url).stdout
    figures = re.findall(r'<figure class="chart" data-chart="([a-z-]+)"', dom)
    assert figures == list(CHARTS)
    assert "data-empty" not in dom
    assert dom.count('class="series"') == channels
    assert dom.count('class="point"') >= channels
    assert dom.count('class="bar"') >= 10

    shot = tmp_path / "sla.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", url)
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 1400)
    colours = Counter(pixels)
    assert len(colours) > 100, "the page looks blank"
    assert colours.most_common(1)[0][1] < 0.95 * len(pixels), "the page looks blank"
    # every channel's colour was painted (solid bar fills and legend keys)
    for colour in PALETTE[:channels]:
        assert colours[_hex(colour)] > 50, colour


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
    assert all(f'data-chart="{chart}"' in page.read_text() for chart in CHARTS)


@pytest.mark.postgres
def test_report_from_postgres(sim, tmp_path, postgres_credentials):
    import dlt

    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path, destination=dlt.destinations.postgres(postgres_credentials))
    run_pipeline(pipeline, source_overrides=source_settings(sim))
    data = collect(pipeline, days=7)
    assert data.daily and data.agents and data.first_responses and data.channels
    page = write_html_report(pipeline, tmp_path / "sla.html", days=7).read_text()
    assert all(f'data-chart="{chart}"' in page for chart in CHARTS)
    assert "data-empty" not in page
