"""The dbt package in `sql/` rendered without dbt (pipelines/reporting/templates.py): what it renders,
what it refuses, BigQuery's rendering of every model, and the package's documentation.

tests/test_dbt.py proves, with real dbt on DuckDB and PostgreSQL, that this rendering is what
`dbt compile` gives; BigQuery has no account here, so its rendering is checked by parsing it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlglot import exp

from pipelines.reporting.templates import (
    SQL_DIR,
    TemplateError,
    check_custom_fields,
    dispatched_macros,
    models,
    render,
)

MODELS = models()
# The types BigQuery spells (as sqlglot reads them); the text check below catches PostgreSQL's
# spellings that sqlglot would read as the same types (timestamptz, varchar, double precision).
BIGQUERY_TYPES = {
    str(node.this.name)
    for node in sqlglot.parse_one(
        "select cast(a as string), cast(a as int64), cast(a as bigint), cast(a as float64), "
        "cast(a as bool), cast(a as timestamp), cast(a as date)",
        read="bigquery",
    ).find_all(exp.DataType)
}


def _render(text: str, dialect: str | None = None, **kwargs):
    return render(
        text,
        where="m",
        ref=lambda name: f"rep.{name}",
        source=lambda table: f"raw.{table}",
        dialect=dialect,
        **kwargs,
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_bigquery_rendering_parses_without_warnings(model, caplog):
    """What `dbt compile` gives on BigQuery (the `bigquery__` macro bodies) is BigQuery SQL: it parses
    strictly, sqlglot warns about nothing, and every type is spelt BigQuery's way."""
    sql, _ = render(
        model.path.read_text(),
        where=model.name,
        ref=lambda name: f"commbox_reporting.{name}",
        source=lambda table: f"commbox_raw.{table}",
        dialect="bigquery",
        custom_fields=["content__subject"],
    )
    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        tree = sqlglot.parse_one(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
        tree.sql(dialect="bigquery", unsupported_level=sqlglot.ErrorLevel.RAISE)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    types = {str(node.this.name) for node in tree.find_all(exp.DataType)}
    assert types <= BIGQUERY_TYPES, types - BIGQUERY_TYPES
    spelt = re.sub(r"'[^']*'", "''", sql.lower())
    for postgres_only in ("timestamptz", "varchar", "double precision", "boolean", "::", "percentile_cont"):
        assert postgres_only not in spelt, postgres_only
    assert not [node for node in tree.find_all(exp.Anonymous) if str(node.name).lower().startswith("cb_")]


def test_portable_rendering_keeps_the_functions_for_sqlglot():
    sql, config = _render(
        "{{ config(materialized='table') }}\nselect {{ cb_epoch('a.t + 1') }}, "
        "cast(x as {{ cb_type_timestamp() }}), {{ cb_as_of() }} from {{ ref('stg_x') }} "
        "join {{ source('commbox', 'objects') }} on true"
    )
    assert config == {"materialized": "table"}
    assert "cb_epoch(a.t + 1)" in sql and "as timestamptz" in sql and "cast(null as timestamptz)" in sql
    assert "rep.stg_x" in sql and "raw.objects" in sql


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("duckdb", "epoch((a.t + 1))"),
        ("postgres", "cast(extract(epoch from (a.t + 1)) as double precision)"),
        ("bigquery", "(unix_micros((a.t + 1)) / 1000000)"),
    ],
)
def test_dialect_rendering_dispatches_like_dbt(dialect, expected):
    """The adapter's own body, else `default__`, as `adapter.dispatch` picks."""
    sql, _ = _render("select {{ cb_epoch('a.t + 1') }}", dialect)
    assert sql == f"select {expected}"


@pytest.mark.parametrize(
    "text",
    [
        "{% if true %}select 1{% endif %}",
        "select {{ var('commbox_as_of') }}",
        "select * from {{ ref(name) }}",
        "select * from {{ source('zendesk', 'tickets') }}",
        "{{ config(materialized='incremental') }}select 1",
        "{{ config(schema='x') }}select 1",
        "select {{ cb_epoch('a', 'b') }}",
        "select {{ 1 + 1 }}",
    ],
)
def test_jinja_the_runner_cannot_render_is_refused(text):
    with pytest.raises(TemplateError, match=r"^m: "):
        _render(text)


def test_custom_fields_are_listed_with_trailing_commas():
    sql, _ = _render(
        "select\n  {{ cb_custom_fields('o') }}\n  o.id\nfrom x", custom_fields=["content__a", "content__b"]
    )
    assert re.sub(r"\s+", " ", sql) == "select o.content__a, o.content__b, o.id from x"


@pytest.mark.parametrize(
    "fields", [["subject"], ["content__Subject"], ["content__a; drop table x"], "content__a"]
)
def test_custom_fields_must_be_content_columns(fields):
    with pytest.raises(ValueError, match=r"reporting\.custom_fields"):
        check_custom_fields(fields)


def test_every_dispatched_macro_has_a_default_and_a_bigquery_body():
    macros = dispatched_macros()
    assert {"cb_epoch", "cb_from_epoch", "cb_median", "cb_type_timestamp"} <= set(macros)
    for name, bodies in macros.items():
        assert {"default", "bigquery"} <= set(bodies), name


def test_models_follow_the_dbt_layout():
    """source() only in staging, ref() everywhere else; models come after what they ref."""
    seen: set[str] = set()
    for model in MODELS:
        if model.layer == "staging":
            assert model.sources and not model.refs, model.name
        else:
            assert model.refs and not model.sources, model.name
        assert model.refs <= seen, model.name
        seen.add(model.name)


def _schema_files() -> dict[str, dict]:
    documented: dict[str, dict] = {}
    for path in SQL_DIR.glob("*/*.yml"):
        for entry in yaml.safe_load(path.read_text()).get("models", []):
            documented[entry["name"]] = {**entry, "_layer": Path(path).parent.name}
    return documented


def _final_columns(model) -> list[str]:
    sql, _ = render(
        model.path.read_text(), where=model.name, ref=lambda name: name, source=lambda table: table
    )
    tree = sqlglot.parse_one(sql, read="postgres")
    final = next(cte for cte in tree.find_all(exp.CTE) if cte.alias == "final")
    return [projection.alias_or_name for projection in final.this.expressions]


def test_every_model_is_described_in_its_layers_yml():
    documented = _schema_files()
    assert set(documented) == {model.name for model in MODELS}
    for model in MODELS:
        entry = documented[model.name]
        assert entry["_layer"] == model.layer, model.name
        assert entry.get("description", "").strip(), model.name


@pytest.mark.parametrize("model", [m for m in MODELS if m.layer == "marts"], ids=lambda m: m.name)
def test_every_mart_column_is_described(model):
    """The reports read the marts: each of their columns has a description, and the yml names no
    column the model does not have."""
    entry = _schema_files()[model.name]
    described = {column["name"]: column.get("description", "") for column in entry.get("columns", [])}
    assert set(described) == set(_final_columns(model))
    assert all(text.strip() for text in described.values()), [
        n for n, t in described.items() if not t.strip()
    ]
