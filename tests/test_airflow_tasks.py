"""The DAG's task logic without Airflow: interval ranges, the one extract task over one dataset.

`tests/test_airflow_dag.py` runs the whole DAG in a real Airflow (`make test-airflow`); this file
checks, in the ordinary suite, what each task does.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dlt.common.versioned_state import decompress_state

from pipelines.commbox.config import ConfigError
from pipelines.ops.runner import make_pipeline
from tests.helpers import query, source_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dags"))
from commbox_tasks import (  # Airflow puts dags/ on sys.path; so do we
    CONVERSATION_TABLES,
    TABLES,
    build_reporting_views,
    interval_arguments,
    parse_source_config,
    task_source,
)


def test_an_interval_is_read_as_a_backfill_widened_by_the_lookback():
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC)
    assert interval_arguments((start, end), 3600) == {
        "start_date": datetime(2024, 2, 29, 23, tzinfo=UTC),
        "end_date": end,
        "backfill": True,
    }
    assert interval_arguments(None, 3600) == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("", {}),
        ('{"window_hours": 12}', {"window_hours": 12}),
        ({"page_size": 50}, {"page_size": 50}),
    ],
)
def test_source_config_variable(raw, expected):
    assert parse_source_config(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [("[1, 2]", "JSON object"), ("{nope", "not JSON"), ('{"api_key": "k"}', "commbox_api connection")],
)
def test_source_config_variable_refuses(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_source_config(raw)


@pytest.mark.parametrize("before", ["first", "last"])
def test_the_extract_task_loads_every_stream_once_over_what_was_loaded_before(
    sim_factory, tmp_path, monkeypatch, before
):
    """The DAG's one extract task reads every stream in one pipeline over a dataset that a pipeline
    of one stream loaded first (the DAG's earlier per-stream tasks, or `commbox-etl run`): it starts
    from the stored schema, so undeclared columns typed by that earlier load still load, and the
    result equals the simulator's truth, each conversation and message once."""
    sim = sim_factory(conversations=400, seed=11, days=10, end="2024-03-31T00:00:00Z")
    sim.clock.advance(600)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "warehouse.duckdb"))
    overrides = {k: v for k, v in source_settings(sim).items() if k != "start_date"}
    objects = sim.truth.objects()
    interval = (
        min(o["created_at"] for o in objects) - timedelta(days=1),
        max(o["updated_at"] for o in objects) + timedelta(days=1),
    )
    streams = sorted({o["stream_id"] for o in objects})

    def run(name: str, stream_ids: list[int], tables: tuple[str, ...]) -> None:
        pipeline = make_pipeline(destination="duckdb", pipeline_name=name, pipelines_dir=str(tmp_path / "p"))
        source = task_source(overrides, stream_ids, tables, interval, "duckdb", None)
        pipeline.run(source).raise_on_failed_jobs()

    earlier = streams[0] if before == "first" else streams[-1]
    run(f"commbox_{earlier}", [earlier], CONVERSATION_TABLES)
    run("commbox_all", streams, TABLES)

    probe = make_pipeline(destination="duckdb", pipeline_name="probe", pipelines_dir=str(tmp_path / "p"))
    loaded = Counter(row[0] for row in query(probe, "select object_id from commbox_raw.objects"))
    assert set(loaded) == {o["object_id"] for o in objects} and max(loaded.values()) == 1
    childs = Counter(row[0] for row in query(probe, "select child_id from commbox_raw.childs"))
    assert set(childs) == {c["child_id"] for c in sim.truth.childs()} and max(childs.values()) == 1
    by_stream = dict(query(probe, "select stream_id, count(*) from commbox_raw.objects group by 1"))
    assert by_stream == Counter(o["stream_id"] for o in objects)
    assert {row[0] for row in query(probe, "select stream_id from commbox_raw.streams")} == set(streams)
    # interval runs keep no cursor: the task's pipeline stored a state without stream cursors
    states = dict(
        query(probe, "select pipeline_name, state from commbox_raw._dlt_pipeline_state order by _dlt_load_id")
    )
    state = decompress_state(states["commbox_all"])
    conversations = state.get("sources", {}).get("commbox", {}).get("resources", {}).get("conversations", {})
    assert "streams" not in conversations

    views = build_reporting_views("duckdb", None)
    assert "fct_sla_events" in views
    assert query(probe, "select count(*) from commbox_reporting.fct_sla_events")[0][0] > 0
