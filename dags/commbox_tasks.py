"""What the `commbox` DAG's tasks do, free of Airflow so it can be tested without it.

`dags/commbox.py` wires these into tasks; Airflow puts the dags folder on `sys.path`, so the DAG
imports this module by its bare name.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import dlt
from dlt.common.schema import Schema

from pipelines.commbox import commbox_source
from pipelines.commbox.config import ConfigError
from pipelines.commbox.settings import DEFAULT_LOOKBACK_SECONDS
from pipelines.ops.runner import load_sla_tables, make_pipeline, read_sla_config
from pipelines.reporting.views import build_views

log = logging.getLogger("commbox.airflow")

REFERENCE_TABLES = ("managers", "streams")
CONVERSATION_TABLES = (
    "objects",
    "childs",
    "users",
    "user_identities",
    "bad_records",
    "transcripts",
    "activities",
)
# What the extract task loads: the reference tables and every conversation table.
TABLES = (*REFERENCE_TABLES, *CONVERSATION_TABLES)
VIEWS_PIPELINE = "commbox_views"


def parse_source_config(raw: Any) -> dict[str, Any]:
    """`[sources.commbox]` overrides from the `commbox_source_config` Variable (a JSON object)."""
    if raw in (None, ""):
        return {}
    try:
        overrides = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as error:
        raise ConfigError(f"commbox_source_config: not JSON ({error})") from None
    if not isinstance(overrides, dict):
        raise ConfigError("commbox_source_config: expected a JSON object of [sources.commbox] keys")
    if "api_key" in overrides:
        raise ConfigError("commbox_source_config: the API key belongs in the commbox_api connection")
    return dict(overrides)


def interval_arguments(interval: tuple[datetime, datetime] | None, lookback_seconds: float) -> dict[str, Any]:
    """Source arguments for a data interval: its range, widened at the start by the lookback, read
    as a backfill (no state read or written). None (no interval): nothing, the incremental mode."""
    if interval is None:
        return {}
    start, end = interval
    return {"start_date": start - timedelta(seconds=lookback_seconds), "end_date": end, "backfill": True}


def lookback_seconds(overrides: dict[str, Any]) -> float:
    value = overrides.get("lookback_seconds", dlt.config.get("sources.commbox.lookback_seconds"))
    return float(value if value is not None else DEFAULT_LOOKBACK_SECONDS)


def task_source(
    overrides: dict[str, Any],
    stream_ids: list[int],
    tables: tuple[str, ...],
    interval: tuple[datetime, datetime] | None,
    destination: str,
    dataset: str | None,
) -> Any:
    """The source the extract task loads: its streams (all configured or discovered ones, read in
    parallel under one request budget) and tables, the interval's range, the stored schema."""
    arguments = dict(overrides)
    # A task runs the source once (dlt's task group): it loads its whole interval in one load.
    arguments.setdefault("checkpoint_conversations", 0)
    if stream_ids:
        arguments["stream_ids"] = stream_ids
    arguments.update(interval_arguments(interval, lookback_seconds(arguments)))
    if interval is not None:
        log.info(
            "streams %s: reading updatedTime [%s, %s] (data interval, lookback included)",
            stream_ids or "discovered",
            arguments["start_date"],
            arguments["end_date"],
        )
    else:
        log.info(
            "streams %s: no data interval, incremental from the stored state", stream_ids or "discovered"
        )
    source = commbox_source(**arguments).with_resources(*tables)
    seed_schema(source, destination, dataset)
    return source


def seed_schema(source: Any, destination: str, dataset: str | None) -> None:
    """Start the source from the schema the destination already holds (the newest any pipeline stored).

    The task's pipeline is fresh on its first run (and on every worker: dlt's task group wipes its
    working folder) and would infer the types of undeclared columns (the `content__*` keys of
    conversations) from what this interval alone holds: a column an earlier load (`commbox-etl run`,
    another interval, the per-stream tasks of the DAG's earlier shape) typed as a timestamp and this
    run first saw empty would then disagree at load time, and the load fails. Seeded with the stored
    schema, a value that does not fit lands in a variant column instead, as it does when one
    pipeline loads everything.
    """
    probe = make_pipeline(destination=destination, dataset=dataset, pipeline_name="commbox_probe")
    try:
        with probe.destination_client() as client:
            stored = client.get_stored_schema(source.schema.name)  # type: ignore[attr-defined]
    except Exception as error:  # no dataset yet: this task creates it
        log.info("no stored schema to start from (%s)", type(error).__name__)
        return
    if stored is None:
        return
    schema = Schema.from_stored_schema(json.loads(stored.schema))
    schema.update_schema(source.schema)
    source.schema = schema


def build_reporting_views(destination: str, dataset: str | None) -> list[str]:
    """Load the SLA inputs and (re)create the views, in a pipeline of their own.

    The extract task's pipeline owns the raw tables' schema (`commbox`); the SLA inputs go in the
    views pipeline's schema so that no partial `commbox` schema is stored over it.
    """
    if destination == "bigquery":
        log.warning("the SLA views are not created on BigQuery by the DAG; create them from render_views()")
        return []
    pipeline = make_pipeline(destination=destination, dataset=dataset, pipeline_name=VIEWS_PIPELINE)
    load_sla_tables(pipeline, read_sla_config())
    views = build_views(pipeline)
    log.info("built %d views in commbox_reporting", len(views))
    return views
