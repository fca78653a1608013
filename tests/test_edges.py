"""The edges a new user meets first (issue 12): commands before any load, backfill ranges, a busy
port, help texts, the demo's pipeline name, the SLA inputs' own load and BigQuery before loading.

Each test drives the real `commbox-etl` (a subprocess where the exact stderr and the files left
behind matter, `main()` in-process otherwise) against the simulator and DuckDB files in tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dlt
import duckdb
import pytest

from pipelines.cli import build_parser, main
from pipelines.ops.runner import backfill_pipeline_name
from tests.fixtures.faults_harness import Cli
from tests.helpers import OWN_PREFIXES

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "pipelines.cli"]
DLT = Path(sys.executable).with_name("dlt")
# Settings a developer's shell may carry; every subprocess here starts without them.


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(OWN_PREFIXES)}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def left_in(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def requests_served(sim) -> int:
    return sum(sim.stats()["requests"].values())


# 1. report, views and status before any load ---------------------------------------------------


@pytest.mark.parametrize("command", [["report"], ["report", "--html", "sla.html"], ["views"], ["status"]])
def test_before_any_load_says_what_to_run_first_and_leaves_nothing(tmp_path, command):
    result = cli(tmp_path, *command, "--pipelines-dir", str(tmp_path / "pipelines"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"commbox-etl: nothing loaded yet into duckdb {tmp_path / 'commbox.duckdb'} dataset commbox_raw: "
        "run `commbox-etl run` first"
    ]
    assert result.stdout == ""
    # no empty DuckDB file, no pipeline working folder
    assert left_in(tmp_path) == []


def test_a_warehouse_without_the_dataset_is_nothing_loaded_too(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("create schema other_raw")
    env = clean_env(DESTINATION__DUCKDB__CREDENTIALS=str(warehouse))
    result = cli(tmp_path, "status", "--json", "--pipelines-dir", str(tmp_path / "pipelines"), env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"commbox-etl: nothing loaded yet into duckdb {warehouse} dataset commbox_raw: "
        "run `commbox-etl run` first"
    ]
    assert left_in(tmp_path) == ["warehouse.duckdb"]


@pytest.mark.postgres
def test_before_any_load_on_postgres_leaves_no_working_folder(tmp_path, postgres_credentials):
    """No file to look for first: the dataset is asked for, and the working folder that took goes."""
    env = clean_env(DESTINATION__POSTGRES__CREDENTIALS=postgres_credentials)
    for command in (["report"], ["views"], ["status"]):
        result = cli(
            tmp_path, *command, "--destination", "postgres", "--pipelines-dir", str(tmp_path / "p"), env=env
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            "commbox-etl: nothing loaded yet into postgres dataset commbox_raw: run `commbox-etl run` first"
        ]
        assert left_in(tmp_path) == []


def test_before_any_load_after_a_failed_run_says_how_it_failed(sim, cli_env, monkeypatch, capsys):
    monkeypatch.setenv("SOURCES__COMMBOX__API_KEY", "not-the-key")
    assert main(["run", "--no-views", *cli_env]) == 1
    capsys.readouterr()
    assert main(["status", *cli_env]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("commbox-etl: nothing loaded yet into duckdb "), line
    assert "; the last run of commbox on this machine failed in extract: " in line and "rejected" in line


# 2. backfill ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "line"),
    [
        ("28/03/2024", "2024-03-30", "--start: '28/03/2024' is not a date (YYYY-MM-DD) or an ISO timestamp"),
        ("2024-02-30", "2024-03-30", "--start: '2024-02-30' is not a date (YYYY-MM-DD) or an ISO timestamp"),
        ("2024-03-29", "2024-03-30T12:00:00", "--end: '2024-03-30T12:00:00' has no time zone"),
        ("2024-03-29T12:00:00+02:00", "2024-03-29T10:00:00Z", "--end: 2024-03-29T10:00:00Z is not after"),
    ],
)
def test_backfill_refuses_a_bad_range_before_building_anything(tmp_path, start, end, line):
    env = clean_env(SOURCES__COMMBOX__API_KEY="key", SOURCES__COMMBOX__BASE_URL="http://127.0.0.1:9")
    result = cli(
        tmp_path, "backfill", "--start", start, "--end", end, "--pipelines-dir", "pipelines", env=env
    )
    assert result.returncode == 2, result.stderr
    [message] = result.stderr.splitlines()
    assert message.startswith(f"commbox-etl: configuration error: {line}"), message
    assert left_in(tmp_path) == []


def test_backfill_names_its_pipeline_after_the_instants_not_their_spelling():
    at = datetime(2024, 3, 29, 10, tzinfo=UTC)
    same = at.astimezone(datetime.fromisoformat("2024-03-29T12:00:00+02:00").tzinfo)
    day = datetime(2024, 3, 30, tzinfo=UTC)
    assert backfill_pipeline_name(at, day, ()) == backfill_pipeline_name(same, day, ())
    assert backfill_pipeline_name(at, day, ()) == "commbox_backfill_20240329T100000Z_20240330_all"
    # whole days keep the names backfills of dates always had
    assert (
        backfill_pipeline_name(day - timedelta(days=1), day, ()) == "commbox_backfill_20240329_20240330_all"
    )


@pytest.mark.timeout(240)
def test_backfill_accepts_timestamps_with_a_zone(sim, tmp_path):
    sim.clock.advance(600)
    changes = sorted(o["updated_at"] for o in sim.truth.objects())
    start = changes[len(changes) // 2].replace(microsecond=0)
    end = changes[-1] + timedelta(days=1)
    run = Cli(tmp_path, sim, log_level="WARNING").run(
        "backfill",
        "--start",
        start.astimezone(datetime.fromisoformat("2024-01-01T00:00:00+02:00").tzinfo).isoformat(),
        "--end",
        end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert run.returncode == 0, run.output
    [name] = [path.name for path in (tmp_path / "pipelines").iterdir() if path.is_dir()]
    assert name == backfill_pipeline_name(start, end.replace(microsecond=0), ())
    loaded = {
        row[0] for row in Cli(tmp_path, sim).warehouse.query("select object_id from commbox_raw.objects")
    }
    assert loaded == {o["object_id"] for o in sim.truth.objects() if o["updated_at"] >= start}


# 3. a busy port ---------------------------------------------------------------------------------


def test_simulate_on_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(tmp_path, "simulate", "--port", str(port), "--conversations", "20")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"commbox-etl: simulate --port {port}: 127.0.0.1:{port} is already in use; "
        "choose another port (--port 0 picks a free one)"
    ]


# 4. help texts say only what works -------------------------------------------------------------


def test_help_texts_point_only_at_pages_that_exist():
    parser = build_parser()
    [commands] = [action for action in parser._actions if action.dest == "command"]
    texts = [parser.format_help(), *(sub.format_help() for sub in commands.choices.values())]
    assert "docs/simulator.md" in texts[0]
    for text in texts:
        assert "README:" not in text
        for page in re.findall(r"docs/[\w./-]+\.md", text):
            assert (REPO / page).is_file(), page


@pytest.mark.timeout(240)
def test_views_as_of_takes_now_dates_and_zoned_timestamps(sim, cli_env, capsys):
    sim.clock.advance(600)
    assert main(["run", "--no-views", *cli_env]) == 0
    views_help = build_parser()._actions[-1].choices["views"].format_help()
    assert "now" in views_help
    for as_of in ("now", "2024-03-31", "2024-03-31T00:00:00+03:00"):
        capsys.readouterr()
        assert main(["views", "--as-of", as_of, *cli_env]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.startswith("built ")
    assert main(["views", "--as-of", "2024-03-31T00:00:00", *cli_env]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "commbox-etl: configuration error: --as-of: '2024-03-31T00:00:00' has no time zone"
    )


# 5. the demo's pipeline is the one the docs inspect ----------------------------------------------


@pytest.mark.timeout(300)
def test_demo_pipeline_is_found_by_the_documented_dlt_commands(tmp_path):
    result = cli(
        tmp_path, "--log-level", "WARNING", "demo", "--conversations", "40", "--days", "3", timeout=280
    )
    assert result.returncode == 0, result.stderr[-3000:]
    operations = (REPO / "docs" / "operations.md").read_text()
    [demo_row] = [line for line in operations.splitlines() if line.startswith("| `commbox-etl demo")]
    shown = re.findall(r"`(dlt pipeline [^`]*)`", demo_row)
    assert any(command.endswith(" commbox info") for command in shown), shown
    for command in shown:
        inspected = subprocess.run(
            [str(DLT), *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert inspected.returncode == 0, (command, inspected.stdout, inspected.stderr)
        if command.endswith(" info"):
            assert "commbox_raw" in inspected.stdout, inspected.stdout
    # and the demo says so itself
    assert any(line.endswith(" commbox info") for line in re.findall(r"dlt pipeline [^\n`]*", result.stdout))


# 6. loading the SLA inputs never becomes the data run's trace ---------------------------------------


def loaded_tables(trace) -> set[str]:
    load = trace.last_load_info
    assert load is not None, [step.step for step in trace.steps]
    return {
        job.job_file_info.table_name
        for package in load.load_packages
        for job in package.jobs["completed_jobs"]
    }


@pytest.mark.timeout(240)
def test_the_sla_inputs_load_leaves_the_data_runs_trace_and_last_load(sim, cli_env, tmp_path, capsys):
    sim.clock.advance(600)
    assert main(["run", *cli_env]) == 0
    pipeline = dlt.attach("commbox", pipelines_dir=str(tmp_path / "pipelines"))
    tables = loaded_tables(pipeline.last_trace)
    assert "objects" in tables and not tables & {"sla_policies", "business_windows", "sla_statuses"}, tables
    data_load = pipeline.last_trace.last_load_info.loads_ids[-1]
    capsys.readouterr()
    assert main(["views", *cli_env]) == 0
    assert (
        loaded_tables(dlt.attach("commbox", pipelines_dir=str(tmp_path / "pipelines")).last_trace) == tables
    )
    capsys.readouterr()
    assert main(["status", "--json", *cli_env]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["last_run"]["result"] == "ok"
    assert document["last_load"]["load_id"] == data_load
    # the SLA inputs were loaded all the same
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from commbox_raw.sla_policies").fetchone()[0] > 0


# 7. a destination that cannot work says so before any request ----------------------------------------


def test_bigquery_without_credentials_is_one_line_before_any_request(sim, cli_env, capsys):
    sim.reset_stats()
    assert main(["run", "--destination", "bigquery", *cli_env]) == 2
    [line] = capsys.readouterr().err.splitlines()
    try:
        import google.cloud.bigquery  # noqa: F401
    except ImportError:
        assert (
            line
            == "commbox-etl: configuration error: destination: bigquery needs the extra: pip install -e '.[bigquery]'"
        )
    else:
        assert line.startswith("commbox-etl: configuration error: destination.bigquery.credentials"), line
    assert requests_served(sim) == 0


def test_postgres_without_credentials_is_one_line_before_any_request(sim, cli_env, capsys):
    sim.reset_stats()
    assert main(["run", "--destination", "postgres", *cli_env]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("commbox-etl: configuration error: destination.postgres.credentials: missing"), (
        line
    )
    assert "DESTINATION__POSTGRES__CREDENTIALS" in line
    assert requests_served(sim) == 0


def test_views_that_cannot_be_built_refuse_the_run_before_any_request(sim, cli_env, monkeypatch, capsys):
    monkeypatch.setenv("REPORTING__CUSTOM_FIELDS", '["status"]')
    sim.reset_stats()
    assert main(["run", *cli_env]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("commbox-etl: configuration error: reporting.custom_fields"), line
    assert requests_served(sim) == 0
    # --no-views loads without them
    sim.clock.advance(600)
    assert main(["run", "--no-views", *cli_env]) == 0
