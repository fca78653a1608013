"""The terminal report over the known-answer conversations (DuckDB)."""

from __future__ import annotations

import dlt

from pipelines.reporting.report import format_table, render_report
from pipelines.reporting.views import build_views
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations


def test_format_table_aligns_columns():
    text = format_table(["stream", "n"], [["1", "10"], ["22", "5"]])
    lines = text.splitlines()
    assert lines[0] == "stream   n"
    assert lines[2] == "1       10"
    assert lines[3] == "22       5"


def test_report_on_loaded_tables(tmp_path):
    pipeline = dlt.pipeline(
        pipeline_name="sla_report",
        destination=dlt.destinations.duckdb(str(tmp_path / "r.duckdb")),
        dataset_name="commbox_raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    load_conversations(pipeline, CONVERSATIONS)
    build_views(pipeline)
    text = render_report(pipeline, days=400)
    lines = text.splitlines()
    assert lines[0].startswith("SLA by channel, 2023-")  # 400 days back from 2024-12-30
    header = lines[2]
    assert "compliance" in header and "median 1st resp" in header and "undetermined" in header
    rows = lines[4 : lines.index("", 4)]
    assert [r.split()[0] for r in rows] == ["1", "2", "3", "4"]
    assert len({len(r) for r in [header, *rows]}) <= 2  # aligned (rstrip may shorten none)
    # the five clocks of conversations 130-134 that depend on an unknown-side message, all on stream 1
    undetermined = header.split().index("undetermined")
    assert [r.split()[undetermined] for r in rows] == ["5", "0", "0", "0"]
    # conversation 135 disagrees with CommBox; 130 and 131 cannot be told (unknown sides)
    assert lines[-2:] == [
        f"first replies vs CommBox firstResponseTime: {len(CONVERSATIONS) - 3} agree, 1 disagree (2 unknown)",
        f"last replies vs CommBox lastResponseTime: {len(CONVERSATIONS) - 2} agree, 1 disagree (1 unknown)",
    ]
