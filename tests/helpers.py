"""One place for what pipeline tests share: load into a temporary warehouse, read it back, compare."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import dlt

from pipelines.ops.runner import RunSummary, run_pipeline

PRIMARY_KEYS = {
    "objects": "object_id",
    "childs": "child_id",
    "users": "user_id",
    "user_identities": "identity_id",
    "activities": "activity_id",
    "transcripts": "object_id",
    "managers": "manager_id",
    "streams": "stream_id",
}


def make_test_pipeline(
    tmp_path: Path, name: str = "commbox", destination: Any = None, dataset: str = "commbox_raw"
) -> dlt.Pipeline:
    target = destination or dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb"))
    return dlt.pipeline(
        pipeline_name=name,
        destination=target,
        dataset_name=dataset,
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def source_settings(sim: Any, **overrides: Any) -> dict[str, Any]:
    start = min(o["created_at"] for o in sim.truth.objects())
    settings = {
        "api_key": sim.api_key,
        "base_url": sim.base_url,
        "start_date": start.date().isoformat(),
        "max_retry_wait_seconds": 30,
    }
    settings.update(overrides)
    return settings


def load(pipeline: dlt.Pipeline, sim: Any, *, advance: float = 600, **overrides: Any) -> RunSummary:
    """One scheduled run against the simulator, its clock first moved past the safety margin."""
    if advance:
        sim.clock.advance(advance)
    backfill = overrides.pop("backfill", None)
    return run_pipeline(
        pipeline, backfill=backfill, build_views=False, source_overrides=source_settings(sim, **overrides)
    )


def query(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    with pipeline.sql_client() as client:
        return [tuple(row) for row in client.execute_sql(sql)]


def column(pipeline: dlt.Pipeline, table: str, name: str) -> list[Any]:
    return [row[0] for row in query(pipeline, f"select {name} from {table}")]


def duplicate_keys(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Primary keys that occur more than once, per loaded table (should always be empty)."""
    found = {}
    tables = pipeline.default_schema.tables
    for table, key in PRIMARY_KEYS.items():
        if table not in tables or not pipeline.default_schema.get_table_columns(table):
            continue
        counts = Counter(column(pipeline, table, key))
        dupes = sum(1 for count in counts.values() if count > 1)
        if dupes or None in counts:
            found[table] = dupes
    return found


def truth_in_range(
    sim: Any, pipeline: dlt.Pipeline, stream_ids: set[int] | None = None
) -> dict[str, set[Any]]:
    objects = [o for o in sim.truth.objects() if stream_ids is None or o["stream_id"] in stream_ids]
    ids = {o["object_id"] for o in objects}
    return {
        "objects": ids,
        "childs": {c["child_id"] for c in sim.truth.childs() if c["object_id"] in ids},
        "transcripts": ids,
    }


def assert_equals_truth(pipeline: dlt.Pipeline, sim: Any, activity_types: tuple[int, ...] = (2, 6)) -> None:
    """The loaded ids equal the simulator's, no key twice, and sampled fields equal."""
    assert duplicate_keys(pipeline) == {}
    truth_objects = {o["object_id"]: o for o in sim.truth.objects()}
    assert set(column(pipeline, "objects", "object_id")) == set(truth_objects)
    truth_childs = {c["child_id"]: c for c in sim.truth.childs()}
    assert set(column(pipeline, "childs", "child_id")) == set(truth_childs)
    assert set(column(pipeline, "transcripts", "object_id")) == set(truth_objects)
    truth_activities = Counter(
        (a["object_id"], a["activity_type"], a["created_at"].replace(microsecond=0))
        for a in sim.truth.activities()
        if a["activity_type"] in activity_types
    )
    loaded_activities = Counter(
        (object_id, activity_type, created_at.replace(microsecond=0))
        for object_id, activity_type, created_at in query(
            pipeline, "select object_id, activity_type, created_at from activities"
        )
    )
    assert loaded_activities == truth_activities
    rows = query(
        pipeline,
        "select object_id, status_id, updated_at, closed_at, assigned_manager_id, stream_id from objects",
    )
    for object_id, status_id, updated_at, closed_at, assigned, stream_id in rows:
        truth = truth_objects[object_id]
        assert (status_id, stream_id) == (truth["status_id"], truth["stream_id"]), object_id
        assert updated_at == truth["updated_at"], object_id
        assert closed_at == truth["closed_at"], object_id
        assert assigned == truth["assigned_manager_id"], object_id
    child_rows = query(pipeline, "select child_id, object_id, is_manager, manager_id, created_at from childs")
    for child_id, object_id, is_manager, manager_id, created_at in child_rows:
        truth = truth_childs[child_id]
        assert (object_id, is_manager, manager_id) == (
            truth["object_id"],
            truth["is_manager"],
            truth["manager_id"],
        )
        assert created_at == truth["created_at"]


# Environment variables this project reads: cleared before a CLI test sets its own.
OWN_PREFIXES = ("SOURCES__", "DESTINATION", "DATASET_NAME", "COMMBOX_", "REPORTING__", "SLA__", "GOOGLE_")


def point_cli_at(monkeypatch: Any, tmp_path: Path, sim: Any, **extra: str) -> list[str]:
    """`main()` pointed at the simulator and a DuckDB file in tmp_path through the environment (the
    caller's own settings cleared first, `extra` as SOURCES__COMMBOX__<KEY>); returns the flags."""
    for key in list(os.environ):
        if key.startswith(OWN_PREFIXES):
            monkeypatch.delenv(key)
    environment = {
        "SOURCES__COMMBOX__BASE_URL": sim.base_url,
        "SOURCES__COMMBOX__API_KEY": sim.api_key,
        "SOURCES__COMMBOX__START_DATE": source_settings(sim)["start_date"],
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
        **{f"SOURCES__COMMBOX__{key.upper()}": value for key, value in extra.items()},
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return ["--pipelines-dir", str(tmp_path / "pipelines")]
