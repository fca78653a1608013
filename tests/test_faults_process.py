"""Process-level faults with the real CLI: kill -9 in each phase (DuckDB and PostgreSQL), two runs at
once, two backfills at once, and PostgreSQL going away in the middle of a load."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.fixtures.faults_harness import CANARY_KEY, Cli, Warehouse, oracle, wait_for
from tests.helpers import PRIMARY_KEYS

pytestmark = pytest.mark.faults


def check(faults_report, request, warehouse, sim, **kwargs):
    verdict = oracle(warehouse, sim, **kwargs)
    faults_report.verdict(request.node.nodeid, verdict)
    assert not verdict.bad, verdict.bad
    return verdict


def key_sets(warehouse: Warehouse) -> dict[str, list[object]]:
    """Primary keys per table: what a clean run must match, on any destination."""
    present = warehouse.tables()
    return {
        table: sorted(warehouse.column(table, key))
        for table, key in {**PRIMARY_KEYS, "bad_records": "record_id"}.items()
        if table in present
    }


def _package_dirs(pipelines_dir: Path, area: str) -> list[Path]:
    return [path for path in (pipelines_dir / "commbox").glob(f"{area}/*") if path.is_dir()]


def in_extract(cli: Cli) -> bool:
    # Half of the conversations' transcripts fetched: the source is mid-way through extracting.
    return cli.sim.stats()["requests"].get("transcript", 0) >= cli.sim.config.conversations // 2


def in_normalize(cli: Cli) -> bool:
    # dlt builds the load package in load/new while it normalizes, and moves it on when done.
    return bool(_package_dirs(cli.pipelines_dir, "load/new"))


def in_load(cli: Cli) -> bool:
    return any(
        any((package / jobs).iterdir())
        for package in _package_dirs(cli.pipelines_dir, "load/normalized")
        for jobs in ("started_jobs", "completed_jobs")
        if (package / jobs).is_dir()
    )


PHASES = {"extract": in_extract, "normalize": in_normalize, "load": in_load}


@pytest.fixture(scope="module")
def clean_keys(tmp_path_factory):
    """The key sets of an undisturbed run of the same account (the `canary_sim` defaults)."""
    from pipelines.commbox_sim import SimConfig, Simulator
    from pipelines.ops.runner import run_pipeline
    from tests.helpers import make_test_pipeline, source_settings

    sim = Simulator(SimConfig(seed=3, conversations=120, clock_running=False, api_key=CANARY_KEY))
    sim.start(host="127.0.0.1", port=0)
    try:
        sim.clock.advance(600)
        tmp_path = tmp_path_factory.mktemp("clean")
        pipeline = make_test_pipeline(tmp_path)
        run_pipeline(pipeline, build_views=False, source_overrides=source_settings(sim))
    finally:
        sim.stop()
    return key_sets(Warehouse("duckdb", str(tmp_path / "warehouse.duckdb")))


def cli_for(target, tmp_path, sim, **env) -> Cli:
    return Cli(tmp_path, sim, destination=target.name, location=target.location, extra_env=env)


@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_then_the_next_run_equals_a_clean_run(
    canary_sim, target, tmp_path, faults_report, request, clean_keys, phase
):
    """Scenario 8: SIGKILL in extract, normalize or load; the next run ends equal to a clean run."""
    sim = canary_sim(latency_ms=8 if phase == "extract" else 0)
    sim.clock.advance(600)
    cli = cli_for(target, tmp_path, sim)
    process = cli.start()
    caught = wait_for(lambda: PHASES[phase](cli), process, timeout=120)
    if process.poll() is not None:
        cli.finish(process)
        pytest.fail(f"the run ended before its {phase} phase could be caught")
    assert caught
    cli.kill9(process)
    faults_report.fault(f"kill -9 during {phase} ({target.name})", 1, True)
    check(faults_report, request, cli.warehouse, sim, complete=False)

    sim.configure(latency_ms=0)
    rerun = cli.run()
    assert rerun.returncode == 0, rerun.output
    check(faults_report, request, cli.warehouse, sim)
    assert key_sets(cli.warehouse) == clean_keys


def test_a_second_scheduled_run_refuses_to_start(canary_sim, tmp_path, faults_report, request):
    """Scenario 10: the lock: a second run of the same pipeline exits 3 with a clear message."""
    sim = canary_sim(latency_ms=10)
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim)
    first = cli.start()
    lock = cli.pipelines_dir / "commbox.lock"
    assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first)
    second = cli.run()
    assert second.returncode == 3, second.output
    assert "another run of pipeline 'commbox' is in progress" in second.stderr
    assert cli.finish(first).returncode == 0
    faults_report.fault("second scheduled run at once", 1, True)
    check(faults_report, request, cli.warehouse, sim)


def test_two_backfills_of_different_ranges_at_once(canary_sim, tmp_path, faults_report, request):
    """Scenario 10: two backfills load into one DuckDB file at the same time: 0 duplicates, 0 lost."""
    import duckdb

    sim = canary_sim()
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim)
    created = sorted(o["created_at"] for o in sim.truth.objects())
    start = created[0].date()
    middle = created[len(created) // 2].date()
    end = sim.clock.now().date() + timedelta(days=1)
    # Hold the file's write lock while both start, so that both meet it for certain, then let go.
    holder = duckdb.connect(cli.location)
    try:
        runs = [
            cli.start("backfill", "--start", start.isoformat(), "--end", middle.isoformat()),
            cli.start("backfill", "--start", middle.isoformat(), "--end", end.isoformat()),
        ]
        for run in runs:
            assert not wait_for(lambda run=run: run.poll() is not None, None, timeout=1.5)
    finally:
        holder.close()
    results = [cli.finish(run) for run in runs]
    assert [result.returncode for result in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert all("locked by another process" in result.stderr for result in results)
    faults_report.fault("two backfills at once (DuckDB)", 1, True)
    verdict = oracle(cli.warehouse, sim, pipeline_name="none")
    faults_report.verdict(request.node.nodeid, verdict)
    assert verdict.lost == 0 and verdict.duplicates == {} and verdict.extra == 0, verdict.bad


@pytest.mark.postgres
def test_postgres_stopped_in_the_middle_of_a_load(
    canary_sim, postgres_server, postgres_credentials, tmp_path, faults_report, request
):
    """Scenario 11: the server goes away mid-load: a clear error; once it is back the re-run completes."""
    sim = canary_sim()
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim, destination="postgres", location=postgres_credentials)
    process = cli.start()
    try:
        assert wait_for(lambda: in_load(cli), process, timeout=120), "the run never reached its load"
        postgres_server.stop()
        failed = cli.finish(process)
    finally:
        postgres_server.start()
    faults_report.fault("PostgreSQL stopped mid-load", 1, failed.returncode == 1)
    assert failed.returncode == 1, failed.output
    assert "failed in load" in failed.stderr, failed.stderr[-1500:]
    assert "the destination could not be reached" in failed.stderr, failed.stderr[-1500:]
    check(faults_report, request, cli.warehouse, sim, complete=False)

    rerun = cli.run()
    assert rerun.returncode == 0, rerun.output
    check(faults_report, request, cli.warehouse, sim)
