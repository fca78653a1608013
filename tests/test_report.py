"""The terminal report over the known-answer conversations (DuckDB)."""

from __future__ import annotations

import dlt

from pipelines.reporting.report import ATTAINMENT_HEADERS, format_table, render_report
from pipelines.reporting.views import build_views
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations


def test_format_table_aligns_columns():
    text = format_table(["stream", "n"], [["1", "10"], ["22", "5"]])
    lines = text.splitlines()
    assert lines[0] == "stream   n"
    assert lines[2] == "1       10"
    assert lines[3] == "22       5"


def _table(lines: list[str], title: str) -> list[list[str]]:
    """The rows of the table under `title`, split on runs of two spaces."""
    start = lines.index(title) + 3
    end = lines.index("", start)
    return [[cell.strip() for cell in row.split("  ") if cell.strip()] for row in lines[start:end]]


def test_report_on_loaded_tables(tmp_path, monkeypatch):
    pipeline = dlt.pipeline(
        pipeline_name="sla_report",
        destination=dlt.destinations.duckdb(str(tmp_path / "r.duckdb")),
        dataset_name="commbox_raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    load_conversations(pipeline, CONVERSATIONS)
    build_views(pipeline)
    text = render_report(pipeline, days=400, names={1: "E-mail", 3: "E-mail"})
    lines = text.splitlines()
    assert lines[0].startswith("SLA by channel, 2023-")  # 400 days back from 2024-12-30
    business = _table(lines, "Attainment in business time (opening hours only, paused time left out)")
    calendar = _table(lines, "Attainment in calendar time (wall clock, paused time left out)")
    column = {name: i for i, name in enumerate(ATTAINMENT_HEADERS)}
    # channel names from the configuration; two channels named alike keep their ids
    assert [r[0] for r in business if r[1] == "first response"] == [
        "E-mail (1)",
        "stream 2",
        "E-mail (3)",
        "stream 4",
        "all channels",
    ]
    for row in business + calendar:  # the counts add up
        clocks, met, breached, running, _, undetermined = (
            int(row[column[k]]) for k in ATTAINMENT_HEADERS[3:9]
        )
        assert met + breached + running + undetermined == clocks, row
    # stream 1's first responses: the five clocks of 130-134 that depend on an unknown-side message are
    # undetermined (three of them first responses); 101 is met in business time (30 min) and breached
    # in calendar time (63 h 30 min), 106 likewise (0 min against 15 h)
    stream_1 = {r[1]: r for r in business if r[0] == "E-mail (1)"}["first response"]
    assert stream_1[column["undetermined"]] == "3"
    assert stream_1[column["target"]] == "1.0 h"
    calendar_1 = {r[1]: r for r in calendar if r[0] == "E-mail (1)"}["first response"]
    assert int(calendar_1[column["breached"]]) > int(stream_1[column["breached"]])
    # conversation 135 disagrees with CommBox; 130 and 131 cannot be told (unknown sides)
    assert (
        f"first replies vs CommBox firstResponseTime: {len(CONVERSATIONS) - 3} agree, 1 disagree (2 unknown)"
        in lines
    )
    assert (
        f"last replies vs CommBox lastResponseTime: {len(CONVERSATIONS) - 2} agree, 1 disagree (1 unknown)"
        in lines
    )
    assert lines[-2:] == [
        "disagreements with CommBox: 1",
        "  E-mail (1): 1 first agent reply differs from CommBox's firstResponseTime",
    ]
    assert (
        "the SLA policy counts business time for E-mail (1), stream 2, E-mail (3); calendar time for stream 4"
        in lines
    )
    # without names given, [sla.streams.<id>] name is read as a run reads [sla] (here, the environment)
    monkeypatch.setenv("SLA__STREAMS__4__NAME", "Phone")
    assert "Phone " in render_report(pipeline, days=400) and "stream 4" not in render_report(
        pipeline, days=400
    )
