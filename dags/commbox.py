"""Airflow DAG `commbox`: the CommBox export with dlt's Airflow helper, one task reading every stream.

Task graph (inside dlt's `PipelineTasksGroup("commbox")`)::

    commbox_all  >>  commbox_views

- `commbox_all` loads every configured stream's conversations with their messages, customers,
  activities and transcripts, and `managers` and `streams`, in one dlt pipeline. The parallelism is
  inside the task: the source reads the streams' windows and fans out transcripts and activities
  over `max_concurrency` workers, all under one request budget, and dlt's loader loads the files in
  parallel. One task per stream was the earlier shape; it is not kept because the CommBox rate limit
  belongs to the account: one budget learns it from every answer and cannot fight itself, where
  tasks spread over several workers would each learn it alone (measured in bench scenario 7; see
  docs/operations.md, "Parallel tasks share one account's rate").
- `commbox_views` loads the SLA inputs and (re)creates the views in `commbox_reporting` (DuckDB and
  PostgreSQL; on BigQuery it logs that the views are created from `render_views()` output instead).

What each task does lives in `commbox_tasks.py` beside this file (Airflow-free, tested in the
ordinary suite); deploy both. The task starts from the schema the destination already holds (see
`seed_schema`), so what `commbox-etl run` or an earlier shape of this DAG loaded keeps its types.

**Airflow's data interval drives what is read.** A run with a data interval reads exactly that
range of `updatedTime`, widened at the start by `lookback_seconds`: `commbox_source(start_date=
interval start - lookback, end_date=interval end, backfill=True)`. That mode reads no state and
writes none, every table merges on its primary key, so a run is idempotent: clearing a task, re-running
a DAG run and `airflow backfill create --from-date ... --to-date ...` all simply (re)load their
intervals. Windows still close at the server's now minus `safety_margin_seconds`; the next interval's
lookback (default 3600 s, keep it above the margin) re-reads whatever a run that started right at its
interval's end could not yet see. A run without an interval (a trigger timetable, or a manual run
with no logical date) falls back to the scheduled incremental mode: each stream's cursor in the
task's pipeline state, as `commbox-etl run` does.

Why not `dlt.sources.incremental(allow_external_schedulers=True)`: the source does not keep a
`dlt.sources.incremental` cursor (its windows split when full and track per-stream modes), and since
dlt 1.26 that flag raises outside Airflow. Passing the interval as the range does the same thing
explicitly, and only where an interval exists; the DAG file never turns the flag on.

**Configuration** (never in this file). Read when the DAG is parsed: `commbox_stream_ids` (the
streams the task reads; empty = the streams the key sees, discovered when the task runs),
`commbox_schedule` (cron, default hourly), `commbox_start_date` (default 2024-01-01),
`commbox_destination` (duckdb, postgres, bigquery), `commbox_dataset`. Read when a task runs:
`commbox_source_config`, a JSON object of `[sources.commbox]` keys (`{"window_hours": 12,
"max_concurrency": 16}`); also `commbox_retries` (default 2, five minutes apart). Each is an
Airflow Variable or, as Airflow itself allows, an environment variable `AIRFLOW_VAR_<NAME>`; dlt's
own configuration (`SOURCES__COMMBOX__...`, a `.dlt/config.toml` beside this file) is read too.

**Secrets** (never in this file): the API key is the password of the Airflow connection
`commbox_api` (its host, when set, is the base URL), else `SOURCES__COMMBOX__API_KEY`. Destination
credentials are the URI of the connection `commbox_destination` (for BigQuery: its extra, the
service-account JSON), else dlt's
`DESTINATION__<TYPE>__CREDENTIALS`. Both are read inside the tasks, never when parsing.

Runs never overlap (`max_active_runs=1`), so the DAG has one task reading the account at a time,
wherever its workers are. A `commbox-etl run` or backfill on the same machine at the same time
shares that task's budget through the source's `shared_budget` (a file; on by default), so together
they hold the account's limit; one on another machine does not (see docs/operations.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dlt
import pendulum
from commbox_tasks import (
    TABLES,
    build_reporting_views,
    parse_source_config,
    task_source,
)
from dlt.helpers.airflow_helper import PipelineTasksGroup

try:  # Airflow 3
    from airflow.sdk import DAG, BaseHook, Variable, get_current_context
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.models import Variable  # type: ignore[no-redef]
    from airflow.operators.python import get_current_context  # type: ignore[no-redef]
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.commbox.config import parse_moment, parse_stream_ids
from pipelines.ops.runner import make_pipeline, preferred_file_format

log = logging.getLogger("commbox.airflow")

# Inside Airflow, dlt looks every configuration key it resolves up as an Airflow Variable too, one
# call to Airflow's API each: measured, 6 s before the task's first request to CommBox, while the
# account's budget waits. This DAG's configuration is its own Variables, dlt's TOML fragments (the
# `dlt_secrets_toml` Variable, still read) and the environment, so only the fragments are looked up;
# a deployment that keeps single dlt keys as Variables sets this to false in the workers' environment.
os.environ.setdefault("PROVIDERS__AIRFLOW_SECRETS__ONLY_TOML_FRAGMENTS", "true")

DAG_ID = "commbox"
API_CONNECTION = "commbox_api"
DESTINATION_CONNECTION = "commbox_destination"
DEFAULT_SCHEDULE = "0 * * * *"
DEFAULT_START_DATE = "2024-01-01"
# The extract task's pipeline (and task id); the name the earlier per-stream shape gave its task for
# discovered streams, so a deployment that ran that way keeps its incremental state.
PIPELINE_NAME = "commbox_all"


def _variable(name: str, default: Any = None) -> Any:
    """An Airflow Variable (or `AIRFLOW_VAR_<NAME>`); the default when neither is set."""
    value = os.environ.get(f"AIRFLOW_VAR_{name.upper()}")
    if value is not None:
        return value
    try:
        return Variable.get(name, default)
    except Exception as error:  # no metadata database reachable while parsing: keep the default
        log.debug("variable %s not readable (%s); using the default", name, error)
        return default


def _connection(conn_id: str) -> Any:
    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # not defined: fall back to dlt's configuration
        return None


def _apply_destination_connection(destination: str) -> None:
    """Credentials from the `commbox_destination` connection, when defined, for dlt to resolve."""
    connection = _connection(DESTINATION_CONNECTION)
    if connection is not None:
        key = f"DESTINATION__{destination.upper()}__CREDENTIALS"
        os.environ[key] = connection.extra if destination == "bigquery" else connection.get_uri()


def _source_arguments() -> dict[str, Any]:
    """`[sources.commbox]` overrides from the `commbox_source_config` Variable and the API connection."""
    overrides = parse_source_config(_variable("commbox_source_config"))
    connection = _connection(API_CONNECTION)
    if connection is not None:
        if connection.password:
            overrides["api_key"] = connection.password
        if connection.host:
            scheme = connection.schema or "https"
            host = connection.host if "://" in connection.host else f"{scheme}://{connection.host}"
            overrides["base_url"] = host + (f":{connection.port}" if connection.port else "")
    return overrides


def data_interval() -> tuple[datetime, datetime] | None:
    """The running task's data interval, or None when the run has none (or an empty one)."""
    context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None or end <= start:
        return None
    return parse_moment(start, "data_interval_start"), parse_moment(end, "data_interval_end")


def account_source(stream_ids: list[int], destination: str, dataset: str | None) -> Callable[[], Any]:
    """The data of the extract task, built when the task runs (config and secrets are read then,
    not at parse)."""

    def build() -> Any:
        _apply_destination_connection(destination)
        return task_source(_source_arguments(), stream_ids, TABLES, data_interval(), destination, dataset)

    return build


def _views(destination: str, dataset: str | None) -> None:
    _apply_destination_connection(destination)
    build_reporting_views(destination, dataset)


def build_dag() -> DAG:
    stream_ids = list(
        parse_stream_ids(_variable("commbox_stream_ids") or dlt.config.get("sources.commbox.stream_ids"))
    )
    destination = str(_variable("commbox_destination") or dlt.config.get("destination_type") or "duckdb")
    dataset = _variable("commbox_dataset") or None
    start_date = pendulum.instance(parse_moment(_variable("commbox_start_date", DEFAULT_START_DATE), "start"))

    with DAG(
        dag_id=DAG_ID,
        description="CommBox contact-centre export with dlt, one task reading every stream, then the SLA views",
        schedule=CronDataIntervalTimetable(_variable("commbox_schedule", DEFAULT_SCHEDULE), timezone="UTC"),
        start_date=start_date,
        catchup=False,
        # One run at a time: one task reads the account at a time (and DuckDB has one writer).
        max_active_runs=1,
        default_args={
            "retries": int(_variable("commbox_retries", 2)),
            "retry_delay": timedelta(minutes=5),
        },
        tags=["commbox", "dlt"],
        doc_md=__doc__,
    ) as dag:
        # The group points dlt at a fresh working folder; pipelines must be created after it.
        tasks = PipelineTasksGroup(
            "commbox", use_data_folder=False, wipe_local_data=True, use_task_logger=True
        )

        def pipeline(name: str) -> dlt.Pipeline:
            return make_pipeline(destination=destination, dataset=dataset, pipeline_name=name)

        extract = pipeline(PIPELINE_NAME)
        # `run()` makes a plain task; inside the group its id is `commbox.<pipeline name>`.
        with tasks:
            load = tasks.run(
                extract,
                account_source(stream_ids, destination, dataset),
                loader_file_format=preferred_file_format(extract),
            )
            views = _python_task("commbox_views", _views, destination, dataset)
        load >> views
    return dag


def _python_task(task_id: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        from airflow.providers.standard.operators.python import PythonOperator
    except ImportError:  # Airflow 2
        from airflow.operators.python import PythonOperator  # type: ignore[no-redef]
    return PythonOperator(task_id=task_id, python_callable=fn, op_args=list(args))


dag = build_dag()
