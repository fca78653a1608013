"""Long loads commit in slices: a crash loses at most the slice in flight and the next run resumes.

A first run from `start_date` (or a backfill of a year) under a real rate limit takes hours. Each
`checkpoint_conversations` conversations the run commits a load with its state, so data shows up
while it runs and a failure at the end throws away only the last slice. A subset of the tables
(`with_resources`) keeps cursors of its own, so a full run afterwards loses nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from pipelines.commbox import commbox_source
from tests.helpers import column, duplicate_keys, load, make_test_pipeline, query, source_settings

LIGHT = {"include_transcripts": False, "activity_types": []}


def completed_loads(pipeline) -> int:
    return query(pipeline, "select count(*) from _dlt_loads where status = 0")[0][0]


def test_a_long_load_commits_slices_each_with_its_state(sim_factory, tmp_path):
    sim = sim_factory(conversations=2000)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, checkpoint_conversations=400, **LIGHT)
    assert summary.checkpoints >= 4
    assert completed_loads(pipeline) == summary.checkpoints + 1
    assert set(column(pipeline, "objects", "object_id")) == {o["object_id"] for o in sim.truth.objects()}
    assert summary.conversations == len(sim.truth.objects())
    assert duplicate_keys(pipeline) == {}
    # the next run starts where the last slice ended: only list calls, nothing loaded again
    sim.reset_stats()
    again = load(pipeline, sim, advance=60, checkpoint_conversations=400, **LIGHT)
    assert again.conversations == 0 and again.checkpoints == 0


def test_a_backfill_in_slices_reads_its_range_whole_and_again_when_rerun(sim_factory, tmp_path):
    sim = sim_factory(conversations=1200)
    created = sorted(o["created_at"] for o in sim.truth.objects())
    window = (created[0].date().isoformat(), (created[-1] + timedelta(days=1)).date().isoformat())
    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path, name="commbox_backfill")
    first = load(pipeline, sim, backfill=window, advance=0, checkpoint_conversations=300, **LIGHT)
    assert first.checkpoints >= 3
    # every stream read once: a stream finished in an early slice is not read again in a later one
    assert first.conversations == len(sim.truth.objects())
    assert not any(
        key.startswith("backfill")
        for key in pipeline.state["sources"]["commbox"]["resources"]["conversations"]
    )
    assert set(column(pipeline, "objects", "object_id")) == {o["object_id"] for o in sim.truth.objects()}
    # a finished backfill leaves no progress behind: run again, it reads the whole range again
    second = load(pipeline, sim, backfill=window, advance=0, checkpoint_conversations=0, **LIGHT)
    assert second.conversations == len(sim.truth.objects())
    assert duplicate_keys(pipeline) == {}


def test_a_subset_of_tables_keeps_its_own_cursor_so_a_full_run_loses_nothing(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    sim.clock.advance(600)
    subset = commbox_source(**source_settings(sim)).with_resources("objects")
    pipeline.run(subset)
    assert set(column(pipeline, "objects", "object_id")) == {o["object_id"] for o in sim.truth.objects()}
    load(pipeline, sim, advance=60)
    assert set(column(pipeline, "childs", "child_id")) == {c["child_id"] for c in sim.truth.childs()}
    assert set(column(pipeline, "transcripts", "object_id")) == {o["object_id"] for o in sim.truth.objects()}
    assert duplicate_keys(pipeline) == {}
    cursors = pipeline.state["sources"]["commbox"]["resources"]["conversations"]
    assert {"streams", "streams@objects"} <= set(cursors)


def test_a_first_load_killed_in_a_slice_resumes_after_the_last_committed_one(sim_factory, tmp_path):
    sim = sim_factory(conversations=20_000, latency_ms=2)
    sim.clock.advance(600)
    settings = source_settings(sim)
    env = {
        **os.environ,
        "SOURCES__COMMBOX__BASE_URL": sim.base_url,
        "SOURCES__COMMBOX__API_KEY": sim.api_key,
        "SOURCES__COMMBOX__START_DATE": settings["start_date"],
        "SOURCES__COMMBOX__INCLUDE_TRANSCRIPTS": "false",
        "SOURCES__COMMBOX__ACTIVITY_TYPES": "",
        "SOURCES__COMMBOX__CHECKPOINT_CONVERSATIONS": "3000",
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
    }
    command = [sys.executable, "-m", "pipelines.cli", "--log-level", "INFO", "run", "--no-views"]
    command += ["--pipelines-dir", str(tmp_path / "pipelines")]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    assert process.stderr is not None
    for line in process.stderr:
        if "checkpoint 2 loaded" in line or time.monotonic() > deadline:
            break
    time.sleep(0.3)  # into slice 3
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    pipeline = make_test_pipeline(tmp_path)
    pipeline.sync_destination()
    committed = len(column(pipeline, "objects", "object_id"))
    assert committed >= 2 * 3000 and completed_loads(pipeline) >= 2

    summary = load(pipeline, sim, advance=0, checkpoint_conversations=3000, **LIGHT)
    truth = {o["object_id"] for o in sim.truth.objects()}
    assert set(column(pipeline, "objects", "object_id")) == truth
    assert duplicate_keys(pipeline) == {}
    # the committed slices are not loaded again: only the conversations after them (and the
    # lookback before the last cursor) are read as changed
    assert summary.conversations <= len(truth) - committed + 500


def test_an_interrupted_backfill_never_moves_a_backfill_of_another_range(sim_factory, tmp_path):
    """One pipeline, two backfill ranges (as Airflow's intervals are): a backfill of the later range
    stops at its first checkpoint; a backfill of the earlier range then reads its own range whole
    instead of resuming from the other's cursor."""
    sim = sim_factory(conversations=1200)
    sim.clock.advance(600)
    created = sorted(o["created_at"] for o in sim.truth.objects())
    middle = created[len(created) // 2]
    late = (middle.date().isoformat(), (created[-1] + timedelta(days=1)).date().isoformat())
    early = (created[0].date().isoformat(), middle.date().isoformat())
    pipeline = make_test_pipeline(tmp_path)
    start, end = late
    # the library way: one slice per call, so the later range's progress stays in the state
    pipeline.run(
        commbox_source(
            **source_settings(
                sim, start_date=start, end_date=end, backfill=True, checkpoint_conversations=100, **LIGHT
            )
        )
    )
    assert any(
        key.startswith("backfill@")
        for key in pipeline.state["sources"]["commbox"]["resources"]["conversations"]
    )
    load(pipeline, sim, backfill=early, advance=0, checkpoint_conversations=0, **LIGHT)
    start_at, end_at = (datetime.fromisoformat(day).replace(tzinfo=UTC) for day in early)
    wanted = {o["object_id"] for o in sim.truth.objects() if start_at <= o["updated_at"] < end_at}
    assert wanted and wanted <= set(column(pipeline, "objects", "object_id"))
