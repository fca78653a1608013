"""Core scenarios on DuckDB and PostgreSQL: idempotent reloads, incremental runs against the oracle, a
state in the future, and a wiped working folder (a fresh Airflow worker)."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import pytest

from pipelines.ops.runner import run_pipeline
from tests.fixtures.faults_harness import Cli, Warehouse, cursors, oracle
from tests.helpers import assert_equals_truth, load, make_test_pipeline, source_settings

pytestmark = pytest.mark.faults

CONVERSATION_TABLES = ("objects", "childs", "users", "user_identities", "activities", "transcripts")


def check(faults_report, request, warehouse, sim, **kwargs):
    verdict = oracle(warehouse, sim, **kwargs)
    faults_report.verdict(request.node.nodeid, verdict)
    assert not verdict.bad, verdict.bad
    return verdict


def backfill_range(sim) -> tuple[str, str]:
    start = min(o["created_at"] for o in sim.truth.objects()).date()
    end = sim.clock.now().date() + timedelta(days=1)
    return start.isoformat(), end.isoformat()


def test_same_range_loaded_twice_gives_identical_tables(canary_sim, target, tmp_path, faults_report, request):
    """Scenario 1: a backfill of the same range, run twice, leaves every table as it was."""
    sim = canary_sim()
    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path, name="commbox_backfill", destination=target.destination())
    settings = source_settings(sim)
    run_pipeline(pipeline, backfill=backfill_range(sim), build_views=False, source_overrides=settings)
    first = target.warehouse.snapshot()
    check(faults_report, request, target.warehouse, sim, pipeline_name="commbox_backfill")
    run_pipeline(pipeline, backfill=backfill_range(sim), build_views=False, source_overrides=settings)
    second = target.warehouse.snapshot()
    assert set(first) == set(second)
    for table in first:
        assert first[table] == second[table], table
    assert len(first["objects"]) == len(sim.truth.objects())
    check(faults_report, request, target.warehouse, sim, pipeline_name="commbox_backfill")


def test_incremental_runs_equal_the_oracle(canary_sim, target, tmp_path, faults_report, request):
    """Scenario 2: run; insert, update, close, reassign, back-date inside the lookback; run; run again."""
    sim = canary_sim()
    pipeline = make_test_pipeline(tmp_path, destination=target.destination())
    load(pipeline, sim)
    check(faults_report, request, target.warehouse, sim)
    state = target.warehouse.stored_state()
    touched = sim.mutate(new=6, messages=10, status_changes=6, closures=4, reassignments=5, reopen=2)
    late = sim.mutate(status_changes=3, messages=2, backdate_seconds=1200)
    assert late["status_changes"], "the simulator back-dated nothing"
    summary = load(pipeline, sim)
    check(faults_report, request, target.warehouse, sim, previous_state=state)
    assert_equals_truth(pipeline, sim)
    changed = set().union(*(set(ids) for ids in (*touched.values(), *late.values())))
    assert summary.conversations == len(changed)

    counts = {table: target.warehouse.count(table) for table in CONVERSATION_TABLES}
    state = target.warehouse.stored_state()
    summary = load(pipeline, sim, advance=60)
    assert summary.conversations == 0
    assert {table: summary.rows.get(table, 0) for table in CONVERSATION_TABLES} == dict.fromkeys(
        CONVERSATION_TABLES, 0
    )
    assert {table: target.warehouse.count(table) for table in CONVERSATION_TABLES} == counts
    check(faults_report, request, target.warehouse, sim, previous_state=state)


def test_working_folder_wiped_between_runs(canary_sim, target, tmp_path, faults_report, request):
    """Scenario 9: a fresh worker has no local state; it comes back from the destination."""
    sim = canary_sim()
    pipeline = make_test_pipeline(tmp_path, destination=target.destination())
    load(pipeline, sim)
    state = target.warehouse.stored_state()
    touched = sim.mutate(new=4, messages=6, closures=3, reassignments=3)
    shutil.rmtree(tmp_path / "pipelines")
    fresh = make_test_pipeline(tmp_path, destination=target.destination())
    summary = load(fresh, sim)
    # Only what changed was loaded: the cursor and the `seen` markers came back from the destination.
    assert summary.conversations == len(set().union(*(set(ids) for ids in touched.values())))
    check(faults_report, request, target.warehouse, sim, previous_state=state)
    assert_equals_truth(fresh, sim)


def summary_rows(output: str, table: str) -> int:
    found = re.search(rf"rows\.{table}=(\d+)", output)
    return int(found.group(1)) if found else 0


def test_state_in_the_future_and_an_empty_window(canary_sim, tmp_path, faults_report, request):
    """Scenario 3: a stored cursor ahead of the server's clock loads nothing, exits 0 and stays put;
    a backfill of a range without conversations exits 0 with 0 rows."""
    ahead = canary_sim()
    ahead.clock.advance(2 * 86400)
    cli = Cli(tmp_path, ahead)
    assert cli.run().returncode == 0
    state = cli.warehouse.stored_state()
    future = cursors(state)
    assert future

    behind = canary_sim()  # the same account, its clock two days earlier
    behind.clock.advance(600)
    cli.sim = behind
    result = cli.run()
    assert result.returncode == 0, result.stderr
    for table in CONVERSATION_TABLES:
        assert summary_rows(result.stdout, table) == 0, result.stdout
    assert cursors(cli.warehouse.stored_state()) == future
    check(faults_report, request, cli.warehouse, behind, previous_state=state)

    empty = cli.run("backfill", "--start", "2020-01-01", "--end", "2020-01-08")
    assert empty.returncode == 0, empty.stderr
    assert "rows.objects" not in empty.stdout
    check(faults_report, request, cli.warehouse, behind, previous_state=state)
    assert Warehouse("duckdb", cli.location).count("objects") == len(behind.truth.objects())
