"""Render the dbt models in `sql/` for a warehouse and create them, without dbt.

`sql/` is a dbt package (docs/dbt.md); `pipelines/reporting/templates.py` renders the small part of
dbt's Jinja its models use (`ref`, `source`, `config` and the package's macros). The runner renders
each model in its portable form: PostgreSQL, which DuckDB also reads, with the few things that differ
between warehouses left as three portable functions, which are rewritten here by sqlglot for the
target dialect from the bodies of the dbt macros of the same name (`sql/macros/cross_db.sql`, read
into `DIALECT_FUNCTIONS`), so dbt and the runner cannot disagree:

- `cb_epoch(ts)`: seconds since 1970 of a `timestamptz`, as a double. PostgreSQL's
  `extract(epoch from ts)` on a timestamptz is absolute; going through `timestamp` would make it
  depend on the session time zone, so nothing here ever does.
- `cb_from_epoch(seconds)`: back to a `timestamptz` (no `interval` arithmetic: BigQuery's
  `INTERVAL (col) SECOND` loses the column in translation).
- `cb_median(x)`: the median aggregate (`median`, `percentile_cont ... within group`, and an
  approximate quantile on BigQuery, which has no exact median aggregate).

`cb_as_of()` becomes the build's "now" (a literal) or NULL (= the end of the loaded data), and
`cb_custom_fields()` the `[reporting] custom_fields` allow-list. Models refer to raw tables with
`source('commbox', ...)` and to each other with `ref(...)`; both resolve to the configured schemas.
No model uses dates series, weekdays or week truncation: time zones and calendars come precomputed
from `pipelines/reporting/sla.py`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from ..commbox.config import ConfigError
from ..commbox.settings import DUCKDB_MEMORY_LIMIT, DUCKDB_VIEWS_MEMORY_LIMIT, DUCKDB_VIEWS_THREADS
from .templates import (
    LAYERS,  # noqa: F401 (re-exported: the model layout, read from here by older callers)
    PORTABLE_FUNCTIONS,
    SQL_DIR,  # noqa: F401 (re-exported)
    check_custom_fields,
    dispatched_macros,
    models,
    render,
)

logger = logging.getLogger("commbox.views")

SOURCE_DIALECT = "postgres"
RAW_PLACEHOLDER = "commbox_raw"
SCHEMA_PLACEHOLDER = "commbox_reporting"
DIALECTS = ("duckdb", "postgres", "bigquery")
# The dlt schema the SLA inputs and the empty raw tables are loaded under (see inputs_pipeline()).
INPUTS_SCHEMA = "commbox_sla"


def _dialect_functions() -> dict[str, dict[str, str]]:
    """Each portable function's template per dialect: the dbt macro's body for that adapter, else
    its `default__` body (`adapter.dispatch`'s rule). `__a0` is the function's argument."""
    macros = dispatched_macros()
    return {
        dialect: {name: macros[name].get(dialect, macros[name]["default"]) for name in PORTABLE_FUNCTIONS}
        for dialect in DIALECTS
    }


# Each template is parsed in its own dialect.
DIALECT_FUNCTIONS: dict[str, dict[str, str]] = _dialect_functions()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}; expected one of {DIALECTS}")
    return dialect


def _check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a plain SQL identifier")
    return name


@cache
def _template(dialect: str, name: str) -> exp.Expression:
    tree = sqlglot.parse_one(DIALECT_FUNCTIONS[dialect][name], read=dialect)
    # The macros wrap their argument in parentheses for dbt's textual substitution; here the argument
    # is a tree, wrapped only when it needs to be (below).
    for paren in list(tree.find_all(exp.Paren)):
        if isinstance(paren.this, exp.Column) and paren.this.name == "__a0":
            paren.replace(paren.this)
    return tree


def _rewrite_functions(tree: exp.Expression, dialect: str) -> exp.Expression:
    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and str(node.name).lower() in DIALECT_FUNCTIONS[dialect]:
            name = str(node.name).lower()
            if len(node.expressions) != 1:
                raise ValueError(f"{name}() takes exactly one argument")
            argument = node.expressions[0]
            replacement = _template(dialect, name).copy()
            for column in list(replacement.find_all(exp.Column)):
                if column.name == "__a0":
                    # keep precedence: `(a + b) * 1000000`, never `a + b * 1000000`
                    wrapped = argument.copy()
                    if isinstance(wrapped, exp.Binary):
                        wrapped = exp.Paren(this=wrapped)
                    column.replace(wrapped)
            return replacement
        return node

    # A replacement's argument may hold another portable function: rewrite until none is left.
    for _ in range(10):
        before = tree.sql(dialect=SOURCE_DIALECT)
        tree = tree.transform(rewrite)
        if tree.sql(dialect=SOURCE_DIALECT) == before:
            break
    return tree


@lru_cache(maxsize=512)
def translate(sql: str, dialect: str) -> str:
    """Translate one view body (PostgreSQL dialect with the `cb_*` functions) for `dialect`.

    Args:
        sql: the SELECT statement as written in `sql/`.
        dialect: "duckdb", "postgres" or "bigquery".

    Returns:
        The statement in the target dialect, with the portable functions rewritten.
    """
    _check_dialect(dialect)
    tree = sqlglot.parse_one(sql, read=SOURCE_DIALECT)
    tree = _rewrite_functions(tree, dialect)
    leftover = {
        str(node.name).lower()
        for node in tree.find_all(exp.Anonymous)
        if str(node.name).lower().startswith("cb_")
    }
    if leftover:
        raise ValueError(f"unknown portable function(s) {sorted(leftover)}")
    return tree.sql(dialect=dialect, pretty=True)


def view_files() -> list[Path]:
    """Every model file, staging first, each after the models it refs."""
    return [model.path for model in models()]


def _qualify(tree: exp.Expression, raw_dataset: str, schema: str) -> exp.Expression:
    for table in tree.find_all(exp.Table):
        if table.db == RAW_PLACEHOLDER:
            table.set("db", exp.to_identifier(raw_dataset))
        elif table.db == SCHEMA_PLACEHOLDER:
            table.set("db", exp.to_identifier(schema))
    return tree


def materializations() -> dict[str, str]:
    """Each model's kind: 'table' when it says `{{ config(materialized='table') }}`, else 'view'.

    Deep chains of views are inlined into every query that reads them, so a view read by several
    others is planned (and computed) many times over; the few that fan out are tables, rebuilt by
    every build_views() call (and by every `dbt build`).
    """
    return {model.name: model.materialized for model in models()}


def render_views(
    dialect: str,
    raw_dataset: str = RAW_PLACEHOLDER,
    schema: str = SCHEMA_PLACEHOLDER,
    as_of: datetime | None = None,
    custom_fields: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Every view as `(name, select statement)` for `dialect`, in creation order.

    Args:
        dialect: "duckdb", "postgres" or "bigquery".
        raw_dataset: the dataset/schema holding the raw tables.
        schema: the dataset/schema the views live in.
        as_of: the build's "now" for clocks still running; None = the end of the loaded data.
        custom_fields: the `content__*` columns carried into stg_commbox__objects and fct_conversations.
    """
    _check_dialect(dialect)
    _check_identifier(raw_dataset, "raw dataset")
    _check_identifier(schema, "schema")
    rendered = []
    for model in models():
        sql, _ = render(
            model.path.read_text(),
            where=model.name,
            ref=lambda name: f"{SCHEMA_PLACEHOLDER}.{name}",
            source=lambda table: f"{RAW_PLACEHOLDER}.{table}",
            as_of=as_of,
            custom_fields=custom_fields,
        )
        tree = _qualify(sqlglot.parse_one(sql, read=SOURCE_DIALECT), raw_dataset, schema)
        rendered.append((model.name, translate(tree.sql(dialect=SOURCE_DIALECT), dialect)))
    return rendered


def custom_fields_setting() -> list[str]:
    """`[reporting] custom_fields` (or `REPORTING__CUSTOM_FIELDS`): the allow-list of `content__*`
    columns of the raw objects table carried into the marts; empty when unset.

    Raises:
        ConfigError: when it is not a list of `content__*` column names (one line naming the key).
    """
    import dlt

    value = dlt.config.get("reporting.custom_fields")
    if value is None:
        return []
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(
                f"reporting.custom_fields: expected a list of content__* column names, got {value!r}"
            ) from None
    try:
        return check_custom_fields(list(value) if isinstance(value, (list, tuple)) else value)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _destination_dialect(pipeline: Any) -> str:
    destination_type = str(pipeline.destination.destination_type)
    dialect = destination_type.rsplit(".", 1)[-1]
    if dialect not in DIALECTS:
        raise ValueError(f"build_views creates views on {', '.join(DIALECTS)}, not on {dialect}")
    return dialect


def _table_columns(client: Any, dialect: str, schema: str) -> dict[str, dict[str, str]]:
    """`{table: {column: ''}}` plus each table's type under the key '' ('VIEW', 'BASE TABLE'...)."""
    if dialect == "bigquery":
        # BigQuery keeps INFORMATION_SCHEMA per dataset; the name is a checked plain identifier.
        tables = client.execute_sql(f"select table_name, table_type from {schema}.INFORMATION_SCHEMA.TABLES")
        columns = client.execute_sql(
            f"select table_name, column_name from {schema}.INFORMATION_SCHEMA.COLUMNS"
        )
    else:
        tables = client.execute_sql(
            "select table_name, table_type from information_schema.tables where table_schema = %s", schema
        )
        columns = client.execute_sql(
            "select table_name, column_name from information_schema.columns where table_schema = %s", schema
        )
    found: dict[str, dict[str, str]] = {str(name): {"": str(kind)} for name, kind in tables or []}
    for table, column in columns or []:
        found.setdefault(str(table), {})[str(column)] = ""
    return found


def inputs_pipeline(pipeline: Any) -> Any:
    """The pipeline that loads what the views need besides the data: the SLA inputs and the empty raw
    tables a load never produced.

    It is the data pipeline's destination, dataset and working folder under a name of its own
    (`<name>_sla`) and the schema `commbox_sla`: loaded under the data pipeline, these small loads
    became its last trace, so `dlt pipeline commbox trace` and `commbox-etl status` described them
    instead of the data run.
    """
    import dlt

    return dlt.pipeline(
        pipeline_name=f"{pipeline.pipeline_name}_sla",
        destination=pipeline.destination,
        dataset_name=pipeline.dataset_name,
        pipelines_dir=pipeline.pipelines_dir,
    )


def load_inputs(pipeline: Any, resources: Sequence[Any]) -> None:
    """Load `resources` into the pipeline's dataset through `inputs_pipeline()`, its trace scrubbed of
    secrets as the data run's is."""
    import dlt

    from ..commbox.redact import scrub_trace

    inputs = inputs_pipeline(pipeline)
    try:
        inputs.run(resources, schema=dlt.Schema(INPUTS_SCHEMA)).raise_on_failed_jobs()
    finally:
        scrub_trace(inputs)


def _materialize_missing_raw_tables(pipeline: Any, existing: set[str]) -> None:
    """Create, empty, the raw tables a load never produced (transcripts switched off, no activity types,
    no rejects yet), so every staging view has a table to read."""
    import dlt

    from ..commbox.tables import TABLE_COLUMNS

    missing = [table for table in TABLE_COLUMNS if table not in existing]
    if missing:
        logger.info("creating empty raw tables %s", ", ".join(missing))
        load_inputs(
            pipeline,
            [
                dlt.resource([dlt.mark.materialize_table_schema()], name=table, columns=TABLE_COLUMNS[table])
                for table in missing
            ],
        )


def check_buildable(pipeline: Any) -> None:
    """Render every model for the pipeline's destination with the configured custom fields, so that a
    run whose views could not be built refuses before it loads anything.

    Raises:
        ConfigError: one line naming the setting (`reporting.custom_fields`) or the destination.
    """
    fields = custom_fields_setting()
    try:
        render_views(_destination_dialect(pipeline), pipeline.dataset_name, SCHEMA_PLACEHOLDER, None, fields)
    except ValueError as error:
        name = pipeline.destination.destination_name
        raise ConfigError(f"views: cannot be built on {name} ({error}); run with --no-views") from None


# What the models are created with on DuckDB, where the pipeline's own load settings are in force
# (`memory_limit` = `DUCKDB_MEMORY_LIMIT`, DuckDB's default threads): the tables over every
# conversation need more working memory than a load, and each DuckDB thread holds its own share of a
# join or window, so one thread under a somewhat larger limit builds them where the default threads
# under the load's limit ran out of memory (bench/README.md, "Findings: memory"). A user whose
# `global_config` sets either setting has chosen for the machine: the views keep those settings.
DUCKDB_VIEWS_SETTINGS: dict[str, Any] = {
    "memory_limit": DUCKDB_VIEWS_MEMORY_LIMIT,
    "threads": DUCKDB_VIEWS_THREADS,
}


@contextmanager
def _duckdb_views_settings(client: Any, dialect: str) -> Iterator[dict[str, Any]]:
    """Apply `DUCKDB_VIEWS_SETTINGS` to the DuckDB database `client` is connected to while the models
    are created, and put back what was there after (the settings are the database's, shared by any
    other connection to it). Yields the settings applied: none on other warehouses, none when the
    connection's `global_config` sets them otherwise than the pipeline does."""
    configured = dict(getattr(getattr(client, "credentials", None), "global_config", None) or {})
    own = (
        configured.get("memory_limit", DUCKDB_MEMORY_LIMIT) == DUCKDB_MEMORY_LIMIT
        and "threads" not in configured
    )
    applied = dict(DUCKDB_VIEWS_SETTINGS) if dialect == "duckdb" and own else {}
    before = {key: client.execute_sql(f"select current_setting('{key}')")[0][0] for key in applied}
    for key, value in applied.items():
        client.execute_sql(f"set {key} = '{value}'")
    try:
        yield applied
    finally:
        for key, value in before.items():
            client.execute_sql(f"set {key} = '{value}'")


@contextmanager
def reading_views(pipeline: Any) -> Iterator[Any]:
    """A client on the pipeline's warehouse with the models' DuckDB settings (`DUCKDB_VIEWS_SETTINGS`)
    while it is open: most models are views over every conversation, so reading one runs its query,
    which under the load's limit ran out of memory at 100,000 conversations (`make bench`)."""
    with pipeline.sql_client() as client, _duckdb_views_settings(client, _destination_dialect(pipeline)):
        yield client


def build_views(
    pipeline: Any,
    *,
    raw_dataset: str | None = None,
    schema: str = SCHEMA_PLACEHOLDER,
    as_of: datetime | None = None,
    custom_fields: Sequence[str] | None = None,
) -> list[str]:
    """Create (or replace) every model of `sql/` on the pipeline's destination, as dbt would.

    Models are dropped and recreated in dependency order, so a changed column list never trips
    PostgreSQL's `create or replace view` rules. Views read the raw tables at query time; the few
    models configured `materialized='table'` are rebuilt by every call.

    Args:
        pipeline: a dlt pipeline with a duckdb, postgres or bigquery destination.
        raw_dataset: the raw dataset; defaults to the pipeline's `dataset_name`.
        schema: the schema to create the views in.
        as_of: "now" for running clocks; None = the end of the loaded data (deterministic).
        custom_fields: the `content__*` columns carried into the marts; None reads
            `[reporting] custom_fields` (`custom_fields_setting()`).

    Returns:
        The names of the views created, in creation order.

    Raises:
        ConfigError: a custom field that is not a `content__*` column of the raw objects table.
    """
    dialect = _destination_dialect(pipeline)
    raw = raw_dataset or pipeline.dataset_name
    _check_identifier(raw, "raw dataset")
    _check_identifier(schema, "schema")
    fields = custom_fields_setting() if custom_fields is None else check_custom_fields(custom_fields)
    with pipeline.sql_client() as client:
        raw_tables = _table_columns(client, dialect, raw)
    if raw == pipeline.dataset_name:
        _materialize_missing_raw_tables(pipeline, set(raw_tables))
    missing_fields = [field for field in fields if field not in raw_tables.get("objects", {})]
    if missing_fields:
        raise ConfigError(
            f"reporting.custom_fields: {missing_fields} are not columns of {raw}.objects "
            "(a custom field appears once a loaded conversation carries it)"
        )
    views = render_views(dialect, raw, schema, as_of, fields)
    kinds = materializations()
    # BigQuery's DROP takes no CASCADE; dropping in reverse creation order needs none anyway.
    cascade = "" if dialect == "bigquery" else " cascade"
    with pipeline.sql_client() as client, _duckdb_views_settings(client, dialect):
        client.execute_sql(f"create schema if not exists {schema}")
        existing = {name: columns[""] for name, columns in _table_columns(client, dialect, schema).items()}
        for name, _ in reversed(views):
            if name in existing:
                kind = "view" if existing[name].upper() == "VIEW" else "table"
                client.execute_sql(f"drop {kind} if exists {schema}.{name}{cascade}")
        for name, select in views:
            kind = kinds[name]
            logger.debug("creating %s %s.%s", kind, schema, name)
            client.execute_sql(f"create {kind} {schema}.{name} as\n{select}")
    logger.info("created %d views in %s", len(views), schema)
    return [name for name, _ in views]
