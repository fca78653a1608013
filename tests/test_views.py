"""The view renderer: the per-dialect rewrites, the BigQuery translation of every view, house rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlglot

from pipelines.commbox.views import DIALECTS, SQL_DIR, materializations, render_views, translate, view_files


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        ("select cb_epoch(t) from x", "duckdb", "EPOCH(t)"),
        ("select cb_epoch(t) from x", "postgres", "CAST(EXTRACT(epoch FROM t) AS DOUBLE PRECISION)"),
        ("select cb_epoch(t) from x", "bigquery", "UNIX_MICROS(t) / 1000000"),
        ("select cb_from_epoch(cb_epoch(t) + 60) from x", "bigquery", "TIMESTAMP_MICROS(CAST(ROUND((UNIX_MICROS(t) / 1000000 + 60) * 1000000) AS INT64))"),
        ("select cb_median(v) from x", "duckdb", "MEDIAN(v)"),
        ("select cb_median(v) from x", "postgres", "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY v)"),
        ("select cb_median(v) from x", "bigquery", "APPROX_QUANTILES(v, 100)[OFFSET(50)]"),
    ],
)  # fmt: skip
def test_portable_functions(sql, dialect, expected):
    assert "".join(expected.split()).lower() in "".join(translate(sql, dialect).split()).lower()


def test_unknown_portable_function_is_an_error():
    with pytest.raises(ValueError, match="cb_nope"):
        translate("select cb_nope(1)", "duckdb")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_view_translates_and_parses(dialect):
    views = render_views(dialect, "raw_x", "rep_y", as_of=datetime(2024, 3, 4, 9, tzinfo=UTC))
    assert {name for name, _ in views} == {p.stem for p in view_files()}
    for name, sql in views:
        tree = sqlglot.parse_one(sql, read=dialect)
        assert "cb_" not in sql.lower(), name
        schemas = {t.db for t in tree.find_all(sqlglot.exp.Table) if t.db}
        assert schemas <= {"raw_x", "rep_y"}, (name, schemas)


def test_views_are_created_after_their_dependencies():
    seen: set[str] = set()
    for path in view_files():
        refs = set(re.findall(r"commbox_reporting\.(\w+)", path.read_text()))
        assert refs <= seen, (path.stem, refs - seen)
        seen.add(path.stem)


@pytest.mark.parametrize("path", sorted(SQL_DIR.glob("*/*.sql")), ids=lambda p: p.stem)
def test_house_rules(path):
    text = path.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    code = re.sub(r"'[^']*'", "''", body)
    assert code == code.lower(), "lowercase SQL (string literals aside)"
    assert body.rstrip().endswith("select * from final")
    # no baked-in "now", no interval arithmetic, no dialect-specific calendars
    for banned in (
        "current_timestamp",
        "now",
        "current_date",
        "interval",
        "generate_series",
        "date_trunc",
        "dow",
    ):
        assert not re.search(rf"\b{banned}\b", body), banned
    if path.parent.name == "staging":
        assert " join " not in body and "group by" not in body, "staging only renames and casts"
        assert "commbox_raw." in body
    else:
        assert "commbox_raw." not in body, "only staging names raw tables"
    assert path.parent.name in ("staging", "intermediate", "marts")


def test_materializations_are_tables_or_views():
    kinds = materializations()
    assert set(kinds.values()) <= {"table", "view"}
    assert kinds["fct_sla_events"] == "table"
    assert kinds["agg_channel_sla_daily"] == "view"
