"""The Airflow DAG with a real Airflow: `airflow dags test` against the simulator, into DuckDB.

Runs where apache-airflow is installed beside this interpreter (`make test-airflow` builds
`.airflow-venv` and runs this file there); elsewhere it is skipped, unless `COMMBOX_REQUIRE_AIRFLOW`
is set, when a missing Airflow fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).with_name("airflow")
API_KEY = "airflow-test-key"
# The simulator's history (10 days to the end of March 2024) lies inside one monthly interval.
SIM_END = "2024-03-31T00:00:00Z"
MONTHLY_RUN = "2024-04-01T00:00:00+00:00"  # a manual run then: data interval [2024-03-01, 2024-04-01)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

if not AIRFLOW.exists():
    if os.environ.get("COMMBOX_REQUIRE_AIRFLOW"):
        raise RuntimeError(f"COMMBOX_REQUIRE_AIRFLOW is set but {AIRFLOW} does not exist")
    pytest.skip(
        "apache-airflow is not installed here; `make test-airflow` runs this", allow_module_level=True
    )


def _get(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    """The simulator in its own process on a free port, its clock frozen just past the history."""
    ready = tmp_path / "sim.ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.commbox_sim",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--seed",
            "11",
            "--conversations",
            "400",
            "--days",
            "10",
            "--end",
            SIM_END,
            "--frozen-clock",
            "--api-key",
            API_KEY,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() or not ready.read_text().strip():
            assert process.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        base_url = ready.read_text().strip()
        # past the pipeline's safety margin, as a scheduler running after the interval would be
        _get(f"{base_url}/_sim/advance?seconds=600", method="POST")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _airflow_env(tmp_path: Path, base_url: str, stream_ids: list[int]) -> dict[str, str]:
    host, port = base_url.removeprefix("http://").split(":")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "SOURCES__", "DESTINATION__"))
    }
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        # configuration as Airflow Variables (here from the environment), the key as a connection
        AIRFLOW_VAR_COMMBOX_STREAM_IDS=",".join(map(str, stream_ids)),
        AIRFLOW_VAR_COMMBOX_SCHEDULE="@monthly",
        AIRFLOW_VAR_COMMBOX_RETRIES="0",  # a failure fails the test at once
        AIRFLOW_VAR_COMMBOX_DESTINATION="duckdb",
        AIRFLOW_VAR_COMMBOX_SOURCE_CONFIG=json.dumps({"max_retry_wait_seconds": 30, "window_hours": 48}),
        AIRFLOW_CONN_COMMBOX_API=json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "schema": "http", "password": API_KEY}
        ),
        DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "warehouse.duckdb"),
        PYTHONPATH=str(ROOT),
    )
    return env


def _airflow(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(AIRFLOW), *args],
        env=env,
        cwd=env["AIRFLOW_HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        print(result.stdout[-20000:])
        print(result.stderr[-20000:], file=sys.stderr)
    return result


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_dags_test_loads_the_simulators_truth(simulator: str, tmp_path: Path) -> None:
    streams = [s["stream_id"] for s in _get(f"{simulator}/_sim/truth/streams")]
    truth_objects = _get(f"{simulator}/_sim/truth/objects")
    truth_childs = _get(f"{simulator}/_sim/truth/childs")
    env = _airflow_env(tmp_path, simulator, streams)
    Path(env["AIRFLOW_HOME"]).mkdir()
    assert _airflow(env, "db", "migrate").returncode == 0

    listed = _airflow(env, "tasks", "list", "commbox")
    assert listed.returncode == 0
    # one task reads every stream under one request budget, then the views
    tasks = [line.strip() for line in listed.stdout.splitlines()]
    assert [task for task in tasks if task.startswith("commbox.commbox_")] == [
        "commbox.commbox_all",
        "commbox.commbox_views",
    ]

    for attempt in range(2):  # the second run of the same interval must change nothing
        run = _airflow(env, "dags", "test", "commbox", MONTHLY_RUN)
        assert run.returncode == 0, f"airflow dags test failed (run {attempt + 1})"
        # the one task read every stream over the run's data interval (March), widened by the
        # default lookback
        log = run.stdout + run.stderr
        read = "reading updatedTime [2024-02-29 23:00:00+00:00, 2024-04-01 00:00:00+00:00]"
        assert log.count(read) == 1
        assert f"streams {streams}: {read}" in log
        warehouse = tmp_path / "warehouse.duckdb"
        loaded = Counter(row[0] for row in _rows(warehouse, "select object_id from commbox_raw.objects"))
        assert set(loaded) == {o["object_id"] for o in truth_objects}
        assert max(loaded.values()) == 1
        childs = Counter(row[0] for row in _rows(warehouse, "select child_id from commbox_raw.childs"))
        assert set(childs) == {c["child_id"] for c in truth_childs}
        assert max(childs.values()) == 1
        transcripts = {row[0] for row in _rows(warehouse, "select object_id from commbox_raw.transcripts")}
        assert transcripts == {o["object_id"] for o in truth_objects}
        by_stream = dict(_rows(warehouse, "select stream_id, count(*) from commbox_raw.objects group by 1"))
        assert by_stream == Counter(o["stream_id"] for o in truth_objects)
        assert {row[0] for row in _rows(warehouse, "select stream_id from commbox_raw.streams")} == set(
            streams
        )
        events = _rows(warehouse, "select count(*) from commbox_reporting.fct_sla_events")[0][0]
        assert events > 0

    # the operator's view of an Airflow deployment: status and the HTML report read the same warehouse
    cli = Path(sys.executable).with_name("commbox-etl")
    ops_env = {**env, "COMMBOX_LOG_LEVEL": "WARNING"}
    status = subprocess.run(
        [str(cli), "status", "--json", "--pipelines-dir", str(tmp_path / "ops")],
        env=ops_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert {s["stream_id"] for s in document["streams"]} == set(streams)
    # interval runs keep no cursor: the last window is the newest change loaded
    assert {s["last_window_source"] for s in document["streams"]} == {"data"}
    assert sum(s["rows"]["objects"] for s in document["streams"]) == len(truth_objects)
    # the pace the DAG's task achieved against the limit it found (issue 16), one budget for all
    pace = document["paces"]["commbox_all"]
    assert pace["achieved_rps"] > 0 and pace["requests"] > 0
    page = tmp_path / "sla.html"
    report = subprocess.run(
        [str(cli), "report", "--html", str(page), "--pipelines-dir", str(tmp_path / "ops")],
        env=ops_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    # the first-response attainment chart has data from what the DAG loaded
    assert '<figure class="chart" data-chart="attainment-first_response">' in page.read_text()
