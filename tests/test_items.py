"""Rows handed to dlt as arrow tables (`pipelines/commbox/items.py`): the rows holding declared
columns only go as one arrow table, typed as declared, the others as plain rows; a table loaded
either way is the same table, on DuckDB (parquet) and PostgreSQL (CSV)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dlt
import pyarrow as pa
import pytest

from pipelines.commbox import PRIMARY_KEYS
from pipelines.commbox.items import items_of
from pipelines.commbox.tables import TABLE_COLUMNS
from pipelines.ops.runner import preferred_file_format
from tests.helpers import make_test_pipeline, query

TABLES = tuple(PRIMARY_KEYS)


def _value(data_type: str, i: int) -> Any:
    return {
        "bigint": 1000 + i,
        "text": f"text {i}",
        "bool": i % 2 == 0,
        "timestamp": datetime(2024, 3, 1, tzinfo=UTC) + timedelta(minutes=i, microseconds=i),
        "date": date(1990, 1, 1) + timedelta(days=i),
    }[data_type]


def _rows(table: str, shape: str) -> list[dict[str, Any]]:
    """Ten rows of `table` with a value in every declared column (some NULL); `shape` adds an
    undeclared column to one row, or a value that does not fit its declared type."""
    rows = []
    for i in range(10):
        row = {
            name: None if i % 3 == 2 and name not in PRIMARY_KEYS[table] else _value(column["data_type"], i)
            for name, column in TABLE_COLUMNS[table].items()
        }
        rows.append(row)
    if shape == "with an undeclared column":
        rows[4]["content__subject"] = "Re: invoice"
    elif shape == "with a misfit value":
        text = next(
            n
            for n, c in TABLE_COLUMNS[table].items()
            if c["data_type"] == "text" and n not in PRIMARY_KEYS[table]
        )
        rows[5][text] = 7  # dlt's own coercion makes it "7"
    return rows


def _load(pipeline: dlt.Pipeline, table: str, rows: list[dict[str, Any]], *, as_items: bool) -> list[str]:
    """Load `rows` into `table` with the source's hints, through `items_of` or as plain rows;
    returns the kinds of the items handed to dlt."""
    kinds: list[str] = []

    @dlt.resource(
        name=table,
        columns=TABLE_COLUMNS[table],
        primary_key=PRIMARY_KEYS[table],
        write_disposition="merge",
        max_table_nesting=0,
    )
    def resource():
        for item in items_of(rows, table) if as_items else [rows]:
            kinds.append("arrow" if isinstance(item, pa.Table) else "rows")
            yield item

    pipeline.run(resource(), loader_file_format=preferred_file_format(pipeline))
    return kinds


def _table(pipeline: dlt.Pipeline, table: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The table's columns (name, type, nullable) and its rows without dlt's row columns."""
    with pipeline.sql_client() as client:
        schema = client.dataset_name
    columns = query(
        pipeline,
        "select column_name, data_type, is_nullable from information_schema.columns "
        f"where table_schema = '{schema}' and table_name = '{table}' order by column_name",
    )
    names = [name for name, *_ in columns if not name.startswith("_dlt")]
    rows = query(pipeline, f"select {', '.join(names)} from {table} order by {', '.join(names)}")
    return columns, rows


@pytest.fixture(params=["duckdb", "postgres"])
def destination(request):
    if request.param == "duckdb":
        return lambda tmp_path, name: make_test_pipeline(tmp_path, name=name)
    credentials = request.getfixturevalue("postgres_credentials")
    return lambda tmp_path, name: make_test_pipeline(
        tmp_path, name=name, destination=dlt.destinations.postgres(credentials), dataset=f"raw_{name}"
    )


@pytest.mark.parametrize(
    "shape", ["declared columns only", "with an undeclared column", "with a misfit value"]
)
@pytest.mark.parametrize("table", TABLES)
def test_a_table_loaded_from_arrow_items_equals_the_table_loaded_from_plain_rows(
    table, shape, destination, tmp_path, caplog
):
    rows = _rows(table, shape)
    plain = destination(tmp_path, "plain")
    _load(plain, table, rows, as_items=False)
    arrow = destination(tmp_path, "arrow")
    with caplog.at_level(logging.WARNING):
        kinds = _load(arrow, table, rows, as_items=True)

    assert (
        kinds
        == {
            "declared columns only": ["arrow"],
            "with an undeclared column": ["arrow", "rows"],
            "with a misfit value": ["rows"],
        }[shape]
    )
    assert _table(arrow, table) == _table(plain, table)
    load_id = arrow.last_trace.last_load_info.loads_ids[0]
    assert query(arrow, f"select count(*), count(_dlt_id), count(distinct _dlt_id) from {table}") == [
        (10, 10, 10)
    ]
    assert query(arrow, f"select distinct _dlt_load_id from {table}") == [(load_id,)]
    # A field disagreeing with the resource's hints makes dlt warn on every batch.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_outside_an_extract_rows_stay_plain():
    rows = _rows("childs", "declared columns only")
    assert list(items_of(rows, "childs")) == [rows]


@pytest.mark.parametrize("sparse_first", [True, False])
def test_a_customer_shown_with_and_without_details_keeps_the_details(sparse_first, destination, tmp_path):
    # The list's variant A shows a conversation's customer by id only; another conversation in the
    # same load shows the whole block. The merge keeps one row per user: before, whichever came first
    # in the load's files, so loading the same range twice gave different tables.
    full = {name: _value(column["data_type"], 1) for name, column in TABLE_COLUMNS["users"].items()}
    sparse = {name: None for name in TABLE_COLUMNS["users"]} | {"user_id": full["user_id"]}
    full["content__vip"] = "yes"  # undeclared: a plain row, in another file than the arrow table
    pipeline = destination(tmp_path, "users")
    _load(pipeline, "users", [sparse, full] if sparse_first else [full, sparse], as_items=True)
    assert query(pipeline, "select user_id, unique_id, email, content__vip from users") == [
        (full["user_id"], full["unique_id"], full["email"], "yes")
    ]
