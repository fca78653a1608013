"""The command line as the README shows it: `commbox-etl simulate --port ...` serves the simulator."""

from __future__ import annotations

import subprocess
import sys
import time

import dlt
import pytest
import requests

from pipelines.ops.runner import run_pipeline
from tests.fixtures.faults_harness import Cli, wait_for
from tests.helpers import make_test_pipeline, query, source_settings

CLI = [sys.executable, "-m", "pipelines.cli"]


def test_simulate_passes_its_flags_to_the_simulator_and_serves(tmp_path):
    ready = tmp_path / "ready"
    server = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", "--conversations", "60", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            assert server.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        reply = requests.get(
            ready.read_text().strip() + "/core/systemstatus",
            headers={"Authorization": "Bearer demo-key"},
            timeout=10,
        )
        assert reply.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_simulate_help_is_the_simulators_and_unknown_flags_elsewhere_fail():
    help_text = subprocess.run([*CLI, "simulate", "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--port" in help_text.stdout
    bogus = subprocess.run([*CLI, "run", "--bogus"], capture_output=True, text=True, timeout=60)
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_postgres_summary_counts_rows_loaded(sim_factory, postgres_credentials, tmp_path):
    """dlt's CSV writer counts fields, not rows (`rows.streams=32` for 4 streams); the summary line
    must say how many rows each table received, as it does on DuckDB."""
    sim = sim_factory(conversations=60, clock_running=False)
    sim.clock.advance(600)
    pipeline = make_test_pipeline(
        tmp_path, destination=dlt.destinations.postgres(credentials=postgres_credentials)
    )
    summary = run_pipeline(pipeline, build_views=False, source_overrides=source_settings(sim))
    # Tables whose rows are one per key in a first load (users and identities repeat per conversation
    # and merge into fewer rows).
    for table in ("objects", "childs", "transcripts", "activities", "managers", "streams"):
        assert summary.rows[table] == query(pipeline, f"select count(*) from {table}")[0][0], table
    assert summary.rows["streams"] == len(sim.truth.streams())
    assert f"rows.streams={len(sim.truth.streams())} " in summary.line()
    on_duckdb = run_pipeline(
        make_test_pipeline(tmp_path / "duckdb"), build_views=False, source_overrides=source_settings(sim)
    )
    assert summary.rows == on_duckdb.rows


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_postgres_lost_during_the_views_step_is_one_line(
    sim_factory, postgres_server, postgres_credentials, tmp_path
):
    """The load commits, then the connection of the views step is terminated (as a failover or a
    restart would): exit 1 and one line naming the views step, no traceback."""
    sim = sim_factory(conversations=60, clock_running=False)
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim, destination="postgres", location=postgres_credentials, log_level="WARNING")
    with_views = [arg for arg in cli.args("run") if arg != "--no-views"]
    first = cli.finish(
        subprocess.Popen(
            with_views, env=cli.env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    )
    assert first.returncode == 0, first.output
    database = postgres_credentials.rsplit("/", 1)[1]
    holder, killer = postgres_server.admin_connect(database), postgres_server.admin_connect(database)
    try:
        with killer.cursor() as cur:
            cur.execute(
                "select table_name from information_schema.views where table_schema = 'commbox_reporting'"
            )
            trap = f"commbox_reporting.{cur.fetchone()[0]}"
            # One view becomes a table that only the views step touches (it drops what stands in
            # the place of a view); locking a view would lock the raw tables under it as well.
            cur.execute(f"drop view {trap} cascade")
            cur.execute(f"create table {trap} (trap int)")
            cur.execute(f'alter table {trap} owner to "{postgres_server.loader_role}"')
        holder.autocommit = False
        with holder.cursor() as cur:
            cur.execute(f"lock table {trap} in access exclusive mode")
        process = subprocess.Popen(
            with_views,
            env=cli.env(RUNTIME__LOG_LEVEL="WARNING"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waiting: list[int] = []

        def blocked() -> bool:
            with killer.cursor() as cur:
                cur.execute(
                    "select pid from pg_stat_activity where usename = %s and wait_event_type = 'Lock'",
                    (postgres_server.loader_role,),
                )
                waiting[:] = [row[0] for row in cur.fetchall()]
            return bool(waiting)

        assert wait_for(blocked, process, timeout=120), "the views step never reached the views"

        def terminated() -> bool:
            # Every connection the views step opens again is cut too, as when the server is gone.
            if blocked():
                with killer.cursor() as cur:
                    for pid in waiting:
                        cur.execute("select pg_terminate_backend(%s)", (pid,))
            return process.poll() is not None

        assert wait_for(terminated, process, timeout=120)
        result = cli.finish(process)
    finally:
        holder.rollback()
        holder.close()
        killer.close()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    failures = [line for line in result.stderr.splitlines() if line.startswith("commbox-etl:")]
    assert len(failures) == 1 and failures[0].startswith("commbox-etl: failed in views:"), result.stderr
    assert "commbox-etl views" in failures[0]
