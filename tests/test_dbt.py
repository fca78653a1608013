"""`sql/` as a real dbt package: `dbt build` on DuckDB and on a real PostgreSQL server.

A throw-away dbt project installs the package the way a user's does (packages.yml, a local path
here, `subdirectory: sql` from git in docs/dbt.md), over a warehouse the project's own pipeline
loaded: from the simulator, and from the SLA known-answer conversations. `dbt build` runs every model
and schema test; every mart then equals, row by row, the one `commbox-etl views` built from the same
files into another schema; the SQL dbt compiled equals the runner's rendering of each model for
that adapter (which is how BigQuery's rendering, checked in tests/test_templates.py, is trusted);
`dbt docs generate` succeeds.

dbt runs as a command from its own virtualenv (`make test-dbt` builds `.dbt-venv` from
tests/dbt-constraints.txt): dbt-core pins python-dateutil below the version this project pins, so the
two cannot share one environment. `COMMBOX_DBT` names the executable; without one the tests skip,
unless `COMMBOX_REQUIRE_DBT=1` (set by `make test-dbt`), where a missing dbt is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import pytest
import sqlglot
from sqlglot import exp

from pipelines.ops.runner import build_reporting_views
from pipelines.reporting.templates import SQL_DIR, models, render
from pipelines.reporting.views import build_views
from tests.helpers import load, make_test_pipeline
from tests.test_sla_history import APRIL, AS_OF, LATE_REPLY, LATE_REPLY_BEFORE, MARCH, VERSION_1, VERSION_2
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations

ROOT = Path(__file__).resolve().parents[1]
MARTS = [model.name for model in models() if model.layer == "marts"]
RUNNER_SCHEMA = "commbox_reporting"
DBT_SCHEMA = "dbt_reporting"
CUSTOM_FIELDS = ["content__subject", "content__origin_url"]


def _dbt_executable() -> str | None:
    named = os.environ.get("COMMBOX_DBT")
    if named:
        return os.path.abspath(named)  # dbt runs in the test's project directory
    local = ROOT / ".dbt-venv" / "bin" / "dbt"
    return str(local) if local.exists() else shutil.which("dbt")


DBT = _dbt_executable()
if DBT is None or not Path(DBT).exists():
    if os.environ.get("COMMBOX_REQUIRE_DBT") == "1":
        raise RuntimeError(f"COMMBOX_REQUIRE_DBT=1 but no dbt executable ({DBT!r}); run `make test-dbt`")
    pytest.skip(
        "dbt is not installed: `make test-dbt` builds .dbt-venv and runs these tests", allow_module_level=True
    )

HOST_PROJECT = """\
name: commbox_host
version: "1.0.0"
config-version: 2
profile: commbox_host
"""


class DbtProject:
    """A throw-away dbt project with the package installed from `sql/`, targeting one warehouse."""

    def __init__(self, base: Path, output: dict[str, Any]) -> None:
        self.dir = base
        base.mkdir(parents=True, exist_ok=True)
        (base / "dbt_project.yml").write_text(HOST_PROJECT)
        (base / "packages.yml").write_text(json.dumps({"packages": [{"local": str(SQL_DIR)}]}))
        profile = {"commbox_host": {"target": "test", "outputs": {"test": {**output, "threads": 1}}}}
        (base / "profiles.yml").write_text(json.dumps(profile))

    def run(self, *args: str, variables: dict[str, Any] | None = None) -> str:
        command = [str(DBT), *args, "--profiles-dir", str(self.dir), "--project-dir", str(self.dir)]
        if variables is not None:
            command += ["--vars", json.dumps(variables)]
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
        done = subprocess.run(command, cwd=self.dir, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (
            f"dbt {' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
        )
        return done.stdout

    def compiled(self, name: str) -> str:
        found = list((self.dir / "target" / "compiled" / "commbox").rglob(f"{name}.sql"))
        assert len(found) == 1, (name, found)
        return found[0].read_text()


class Engine:
    """One warehouse: a dlt destination, a dbt profile output and a plain connection to compare with."""

    def __init__(
        self, destination: Any, output: dict[str, Any], connect: Callable[[], Any], dialect: str
    ) -> None:
        self.destination = destination
        self.output = output
        self.connect = connect
        self.dialect = dialect

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return [tuple(_normalise(v) for v in row) for row in cur.fetchall()]
        finally:
            conn.close()


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, Decimal):
        return float(value)
    return value


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "duckdb":
        import duckdb

        path = str(tmp_path / "warehouse.duckdb")
        return Engine(
            dlt.destinations.duckdb(path),
            {"type": "duckdb", "path": path, "schema": DBT_SCHEMA},
            lambda: duckdb.connect(path, read_only=True),
            "duckdb",
        )
    import psycopg2

    server = request.getfixturevalue("postgres_server")
    database = server.create_database()
    url = server.loader_url(database)
    output = {
        "type": "postgres",
        "host": server.host,
        "port": server.port,
        "user": server.loader_role,
        "password": server.loader_password,
        "dbname": database,
        "schema": DBT_SCHEMA,
    }
    return Engine(dlt.destinations.postgres(url), output, lambda: psycopg2.connect(url), "postgres")


def _build_both(
    engine: Engine,
    pipeline: dlt.Pipeline,
    project_dir: Path,
    custom_fields: list[str],
    runner: Callable[[], Any],
    as_of: str | None = None,
) -> DbtProject:
    """The runner's views in `commbox_reporting` (its `[reporting] custom_fields` from the
    environment), then `dbt build` of the package into `dbt_reporting`, the same fields as a dbt var."""
    os.environ["REPORTING__CUSTOM_FIELDS"] = json.dumps(custom_fields)
    try:
        assert runner()
    finally:
        del os.environ["REPORTING__CUSTOM_FIELDS"]
    project = DbtProject(project_dir, engine.output)
    project.run("deps")
    output = project.run("build", variables={"commbox_custom_fields": custom_fields, "commbox_as_of": as_of})
    assert "ERROR=0" in output and "PASS=" in output, output[-3000:]
    return project


def _assert_marts_equal(engine: Engine) -> dict[str, int]:
    counts = {}
    for mart in MARTS:
        runner = engine.rows(f"select * from {RUNNER_SCHEMA}.{mart}")
        built = engine.rows(f"select * from {DBT_SCHEMA}.{mart}")
        key = repr  # rows mix NULLs and values: order them by their text
        assert sorted(built, key=key) == sorted(runner, key=key), mart
        counts[mart] = len(built)
    return counts


def _comparable(sql: str, dialect: str) -> str:
    """A compiled model with relation names reduced to `schema.name` and quoting dropped, re-printed."""
    tree = sqlglot.parse_one(sql, read=dialect)
    for table in tree.find_all(exp.Table):
        table.set("catalog", None)
    for identifier in tree.find_all(exp.Identifier):
        identifier.set("quoted", False)
    return tree.sql(dialect=dialect, identify=False, normalize=True)


def test_dbt_builds_the_simulators_warehouse_as_the_runner_does(engine, sim_factory, tmp_path):
    sim = sim_factory(conversations=200)
    pipeline = make_test_pipeline(tmp_path / "pipeline", destination=engine.destination)
    load(pipeline, sim)
    project = _build_both(
        engine, pipeline, tmp_path / "dbt", CUSTOM_FIELDS, lambda: build_reporting_views(pipeline)
    )

    counts = _assert_marts_equal(engine)
    assert counts["fct_conversations"] == 200 and counts["fct_sla_events"] > 200
    # the allow-listed custom fields reach the conversations mart, with values
    (filled,) = engine.rows(
        f"select count(content__subject) + count(content__origin_url) from {DBT_SCHEMA}.fct_conversations"
    )[0]
    assert filled > 0

    # what dbt compiled is what the runner renders for this adapter, model by model
    for model in models():
        ours, _ = render(
            model.path.read_text(),
            where=model.name,
            ref=lambda name: f"{DBT_SCHEMA}.{name}",
            source=lambda table: f"commbox_raw.{table}",
            dialect=engine.dialect,
            custom_fields=CUSTOM_FIELDS,
        )
        theirs = project.compiled(model.name)
        assert _comparable(theirs, engine.dialect) == _comparable(ours, engine.dialect), model.name

    if engine.dialect == "duckdb":
        project.run("docs", "generate", variables={"commbox_custom_fields": CUSTOM_FIELDS})
        catalog = json.loads((project.dir / "target" / "catalog.json").read_text())
        documented = {node["metadata"]["name"] for node in catalog["nodes"].values()}
        assert set(MARTS) <= documented


def test_dbt_gives_the_sla_known_answers(engine, tmp_path):
    """The hand-worked SLA cases (tests/test_sla_known_answers.py checks the runner's marts against
    them): dbt's marts are the same rows, so the known answers hold there too."""
    pipeline = dlt.pipeline(
        pipeline_name=f"dbt_known_answers_{engine.dialect}",
        destination=engine.destination,
        dataset_name="commbox_raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    load_conversations(pipeline, CONVERSATIONS)
    # build_views, not build_reporting_views: the SLA tables are the cases' own, not [sla]'s
    _build_both(engine, pipeline, tmp_path / "dbt", [], lambda: build_views(pipeline))
    counts = _assert_marts_equal(engine)
    assert counts["fct_sla_events"] >= len(CONVERSATIONS)
    # one figure worked out by hand, read from dbt's mart: Fri 17:50 -> Mon 09:20 is 30 business minutes
    assert engine.rows(
        f"select business_seconds, state from {DBT_SCHEMA}.fct_sla_events "
        "where object_id = 101 and metric = 'first_response'"
    ) == [(1800, "met")]


def test_dbt_measures_each_clock_against_its_policy_version(engine, tmp_path):
    """The policy-history case of tests/test_sla_history.py ([sla] changed from 2024-04-01), built by
    dbt with var commbox_as_of: the same marts as the runner's, the March clock under version 1 and
    the April one under version 2."""
    pipeline = dlt.pipeline(
        pipeline_name=f"dbt_history_{engine.dialect}",
        destination=engine.destination,
        dataset_name="commbox_raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    load_conversations(pipeline, [*MARCH, LATE_REPLY_BEFORE], sla=VERSION_1)
    load_conversations(pipeline, [*MARCH, LATE_REPLY, *APRIL], sla=VERSION_2)
    as_of = AS_OF.strftime("%Y-%m-%d %H:%M:%S+00:00")
    _build_both(engine, pipeline, tmp_path / "dbt", [], lambda: build_views(pipeline, as_of=AS_OF), as_of)
    _assert_marts_equal(engine)
    assert engine.rows(
        f"select object_id, policy_key, state from {DBT_SCHEMA}.fct_sla_events "
        "where metric = 'first_response' and object_id in (9101, 9102) order by object_id"
    ) == [(9101, "1@2024-04-01", "breached"), (9102, "1", "met")]
