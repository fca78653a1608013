"""The items one table's rows are handed to dlt as: an arrow table for the rows that hold declared
columns only (`tables.py`), typed as declared, and the plain rows for the rest.

Why: dlt normalises plain rows one by one in Python (its JSON path) and writes them twice, as
extract JSONL and again as the loader's file. On scenario 1 of `make bench` that was a fifth of
the run's CPU and, run after the extract, most of the time between the last answer and the load
(bench/README.md, "Findings: CPU"). An arrow table goes to the loader's file as it is.

Rows that carry anything undeclared (`content__*`, `*_raw`, a field the API added) keep dlt's
inference and schema evolution (type detection, JSON columns, variant columns): they go as plain
rows, to the same table in the same load package. So do all rows of a batch whose values do not fit
the declared types, which `normalise.py` should never produce: nothing is lost, it costs speed only.

dlt adds `_dlt_load_id` and `_dlt_id` to plain rows only (its parquet normaliser adds them to arrow
tables only when configured to, which a library user's pipeline is not): the arrow table carries
both, so the tables keep their NOT NULL columns whichever way a row came.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from dlt.common.normalizers.utils import generate_dlt_ids
from dlt.common.schema.typing import C_DLT_ID, C_DLT_LOAD_ID
from dlt.common.storages.load_package import CurrentLoadPackageStateNotAvailable, load_package_state

from .tables import TABLE_COLUMNS

Row = dict[str, Any]

# The arrow type of each declared `data_type` (tables.py): what dlt's own parquet writer uses for
# them (timestamps to the microsecond, in UTC).
ARROW_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "text": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


# dlt's two row columns, which it adds to plain rows only.
ROW_FIELDS = (
    pa.field(C_DLT_LOAD_ID, pa.string(), nullable=False),
    pa.field(C_DLT_ID, pa.string(), nullable=False),
)


@functools.cache
def declared_schema(table: str) -> pa.Schema:
    """The declared columns of `table` as arrow fields, nullable as declared (a field that
    disagreed with the resource's hints would make dlt warn on every batch)."""
    return pa.schema(
        pa.field(name, ARROW_TYPES[column["data_type"]], nullable=column.get("nullable", True))
        for name, column in TABLE_COLUMNS[table].items()
    )


def items_of(rows: Sequence[Row], table: str) -> Iterator[Any]:
    """Yield `rows` of `table` as at most two dlt items: an arrow table of the rows holding only
    declared columns, then a list of the other rows as they are."""
    declared = TABLE_COLUMNS[table].keys()
    fitting: list[Row] = []
    other: list[Row] = []
    for row in rows:
        (fitting if row.keys() <= declared else other).append(row)
    if fitting:
        arrow = _as_arrow(fitting, declared_schema(table))
        if arrow is None:
            other = [*fitting, *other]
        else:
            yield arrow
    if other:
        yield other


def _as_arrow(rows: list[Row], schema: pa.Schema) -> pa.Table | None:
    """`rows` as an arrow table of `schema` and dlt's row columns; None outside a dlt extract (no
    load id to stamp) or when a value does not fit its declared type, so the rows go the plain way."""
    try:
        load_id = load_package_state()["load_id"]
    except CurrentLoadPackageStateNotAvailable:
        return None
    try:
        data = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    load_field, id_field = ROW_FIELDS
    data = data.append_column(load_field, pa.array([load_id] * len(rows), pa.string()))
    return data.append_column(id_field, pa.array(generate_dlt_ids(len(rows)), pa.string()))
