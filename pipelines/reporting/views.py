"""Render the SQL views in `sql/` for a warehouse and create them.

The views are written once, in the PostgreSQL dialect that DuckDB also reads, lowercase, one view per
file (`sql/staging`, `sql/intermediate`, `sql/marts`). Each is parsed with sqlglot and generated for
the target dialect; the few things that differ between warehouses are written as three portable
functions and rewritten here, in one place (`DIALECT_FUNCTIONS`):

- `cb_epoch(ts)`: seconds since 1970 of a `timestamptz`, as a double. PostgreSQL's
  `extract(epoch from ts)` on a timestamptz is absolute; going through `timestamp` would make it
  depend on the session time zone, so nothing here ever does.
- `cb_from_epoch(seconds)`: back to a `timestamptz` (no `interval` arithmetic: BigQuery's
  `INTERVAL (col) SECOND` loses the column in translation).
- `cb_median(x)`: the median aggregate (`median`, `percentile_cont ... within group`, and an
  approximate quantile on BigQuery, which has no exact median aggregate).

Plus `cb_as_of()`, replaced when rendering by the build's "now" (a literal) or NULL (= the end of the
loaded data). Views refer to raw tables as `commbox_raw.<table>` and to each other as
`commbox_reporting.<view>`; both schema names are replaced with the configured ones. No view uses
dates series, weekdays or week truncation: time zones and calendars come precomputed from
`pipelines/reporting/sla.py`.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

logger = logging.getLogger("commbox.views")

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
LAYERS = ("staging", "intermediate", "marts")
SOURCE_DIALECT = "postgres"
RAW_PLACEHOLDER = "commbox_raw"
SCHEMA_PLACEHOLDER = "commbox_reporting"
DIALECTS = ("duckdb", "postgres", "bigquery")

# Each template is parsed in its own dialect; `__a0` is the function's argument.
DIALECT_FUNCTIONS: dict[str, dict[str, str]] = {
    "duckdb": {
        "cb_epoch": "epoch(__a0)",
        "cb_from_epoch": "to_timestamp(__a0)",
        "cb_median": "median(__a0)",
    },
    "postgres": {
        "cb_epoch": "cast(extract(epoch from __a0) as double precision)",
        "cb_from_epoch": "to_timestamp(__a0)",
        "cb_median": "percentile_cont(0.5) within group (order by __a0)",
    },
    "bigquery": {
        "cb_epoch": "unix_micros(__a0) / 1000000",
        "cb_from_epoch": "timestamp_micros(cast(round(__a0 * 1000000) as int64))",
        "cb_median": "approx_quantiles(__a0, 100)[offset(50)]",
    },
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Deep chains of views are inlined into every query that reads them, so a view read by several
# others is planned (and computed) many times over. The few that fan out say `-- materialized: table`
# in their header and are rebuilt as tables by every build_views() call.
_MATERIALIZED = re.compile(r"^--\s*materialized:\s*table\s*$", re.MULTILINE)


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
    return sqlglot.parse_one(DIALECT_FUNCTIONS[dialect][name], read=dialect)


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
    """Every view file, staging first, in a dependency-respecting order."""
    files = {path.stem: path for layer in LAYERS for path in sorted((SQL_DIR / layer).glob("*.sql"))}
    deps = {name: _dependencies(path.read_text()) & set(files) for name, path in files.items()}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"circular view dependency through {name}")
        visiting.add(name)
        for dep in sorted(deps[name]):
            visit(dep)
        visiting.discard(name)
        ordered.append(name)

    for name in files:
        visit(name)
    return [files[name] for name in ordered]


def _dependencies(sql: str) -> set[str]:
    tree = sqlglot.parse_one(_strip_comments(sql), read=SOURCE_DIALECT)
    return {table.name for table in tree.find_all(exp.Table) if table.db == SCHEMA_PLACEHOLDER}


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def _as_of_literal(as_of: datetime | None) -> str:
    if as_of is None:
        return "cast(null as timestamptz)"
    aware = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return f"cast('{aware.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00' as timestamptz)"


def _qualify(tree: exp.Expression, raw_dataset: str, schema: str) -> exp.Expression:
    for table in tree.find_all(exp.Table):
        if table.db == RAW_PLACEHOLDER:
            table.set("db", exp.to_identifier(raw_dataset))
        elif table.db == SCHEMA_PLACEHOLDER:
            table.set("db", exp.to_identifier(schema))
    return tree


def materializations() -> dict[str, str]:
    """Each view's kind: 'table' when its file says `-- materialized: table`, else 'view'."""
    return {path.stem: "table" if _MATERIALIZED.search(path.read_text()) else "view" for path in view_files()}


def render_views(
    dialect: str,
    raw_dataset: str = RAW_PLACEHOLDER,
    schema: str = SCHEMA_PLACEHOLDER,
    as_of: datetime | None = None,
) -> list[tuple[str, str]]:
    """Every view as `(name, select statement)` for `dialect`, in creation order.

    Args:
        dialect: "duckdb", "postgres" or "bigquery".
        raw_dataset: the dataset/schema holding the raw tables.
        schema: the dataset/schema the views live in.
        as_of: the build's "now" for clocks still running; None = the end of the loaded data.
    """
    _check_dialect(dialect)
    _check_identifier(raw_dataset, "raw dataset")
    _check_identifier(schema, "schema")
    as_of_sql = sqlglot.parse_one(_as_of_literal(as_of), read=SOURCE_DIALECT)
    rendered = []
    for path in view_files():
        tree = sqlglot.parse_one(path.read_text(), read=SOURCE_DIALECT)
        tree = tree.transform(
            lambda node: (
                as_of_sql.copy()
                if isinstance(node, exp.Anonymous) and str(node.name).lower() == "cb_as_of"
                else node
            )
        )
        tree = _qualify(tree, raw_dataset, schema)
        rendered.append((path.stem, translate(tree.sql(dialect=SOURCE_DIALECT), dialect)))
    return rendered


def _destination_dialect(pipeline: Any) -> str:
    destination_type = str(pipeline.destination.destination_type)
    dialect = destination_type.rsplit(".", 1)[-1]
    if dialect not in ("duckdb", "postgres"):
        raise ValueError(
            f"build_views creates views on duckdb and postgres; for {dialect} use render_views() output"
        )
    return dialect


def _materialize_missing_raw_tables(pipeline: Any) -> None:
    """Create, empty, the raw tables a load never produced (transcripts switched off, no activity types,
    no rejects yet), so every staging view has a table to read."""
    import dlt

    from ..commbox.tables import TABLE_COLUMNS

    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            "select table_name from information_schema.tables where table_schema = %s", pipeline.dataset_name
        )
        existing = {str(row[0]) for row in rows or []}
    missing = [table for table in TABLE_COLUMNS if table not in existing]
    if missing:
        logger.info("creating empty raw tables %s", ", ".join(missing))
        pipeline.run(
            [
                dlt.resource([dlt.mark.materialize_table_schema()], name=table, columns=TABLE_COLUMNS[table])
                for table in missing
            ]
        )


def build_views(
    pipeline: Any,
    *,
    raw_dataset: str | None = None,
    schema: str = SCHEMA_PLACEHOLDER,
    as_of: datetime | None = None,
) -> list[str]:
    """Create (or replace) every reporting view on the pipeline's destination.

    Views are dropped (cascade) and recreated in dependency order, so a changed column list never
    trips PostgreSQL's `create or replace view` rules. Nothing is materialised: the views read the
    raw tables at query time.

    Args:
        pipeline: a dlt pipeline with a duckdb or postgres destination.
        raw_dataset: the raw dataset; defaults to the pipeline's `dataset_name`.
        schema: the schema to create the views in.
        as_of: "now" for running clocks; None = the end of the loaded data (deterministic).

    Returns:
        The names of the views created, in creation order.
    """
    dialect = _destination_dialect(pipeline)
    raw = raw_dataset or pipeline.dataset_name
    if raw == pipeline.dataset_name:
        _materialize_missing_raw_tables(pipeline)
    views = render_views(dialect, raw, schema, as_of)
    with pipeline.sql_client() as client:
        client.execute_sql(f"create schema if not exists {schema}")
        existing = {
            str(row[0]): str(row[1])
            for row in client.execute_sql(
                "select table_name, table_type from information_schema.tables where table_schema = %s",
                schema,
            )
            or []
        }
        for name, _ in reversed(views):
            if name in existing:
                kind = "view" if existing[name].upper() == "VIEW" else "table"
                client.execute_sql(f"drop {kind} if exists {schema}.{name} cascade")
        kinds = materializations()
        for name, select in views:
            kind = kinds[name]
            logger.debug("creating %s %s.%s", kind, schema, name)
            client.execute_sql(f"create {kind} {schema}.{name} as\n{select}")
    logger.info("created %d views in %s", len(views), schema)
    return [name for name, _ in views]
