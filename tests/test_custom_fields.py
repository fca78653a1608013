"""Custom fields: `content__*` columns of the raw objects table reach `fct_conversations` through
`stg_commbox__objects` when allow-listed (`[reporting] custom_fields`; dbt: var commbox_custom_fields,
tested with real dbt in tests/test_dbt.py), and a bad allow-list is one line naming the key, exit 2."""

from __future__ import annotations

import pytest

from pipelines.cli import main
from tests.helpers import load, make_test_pipeline, query


@pytest.fixture
def loaded(sim_factory, tmp_path, monkeypatch):
    """A DuckDB warehouse loaded from the simulator, which `commbox-etl views` finds."""
    sim = sim_factory(conversations=60)
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.chdir(tmp_path)
    return pipeline, ["views", "--pipelines-dir", str(tmp_path / "pipelines")]


def _columns(pipeline, table: str) -> set[str]:
    return {
        row[0]
        for row in query(
            pipeline,
            "select column_name from information_schema.columns "
            f"where table_schema = 'commbox_reporting' and table_name = '{table}'",
        )
    }


def test_allow_listed_fields_reach_the_conversations_mart(loaded, monkeypatch):
    pipeline, views = loaded
    monkeypatch.setenv("REPORTING__CUSTOM_FIELDS", '["content__subject", "content__origin_url"]')
    assert main(views) == 0
    for model in ("stg_commbox__objects", "fct_conversations"):
        assert {"content__subject", "content__origin_url"} <= _columns(pipeline, model), model
    mismatched, carried = query(
        pipeline,
        "select count(*) filter (where fct.content__subject is distinct from raw.content__subject), "
        "count(fct.content__subject) "
        "from commbox_reporting.fct_conversations as fct "
        "join commbox_raw.objects as raw on raw.object_id = fct.object_id",
    )[0]
    assert mismatched == 0 and carried > 0


def test_without_an_allow_list_no_custom_field_is_carried(loaded):
    pipeline, views = loaded
    assert main(views) == 0
    assert not [c for c in _columns(pipeline, "fct_conversations") if c.startswith("content")]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('["subject"]', "not content__* column names"),
        ('["content__Subject"]', "not content__* column names"),
        ("content__subject", "expected a list"),
        ('["content__no_such_field"]', "not columns of commbox_raw.objects"),
    ],
)
def test_a_bad_allow_list_is_one_line_naming_the_key(loaded, monkeypatch, capsys, value, says):
    _, views = loaded
    monkeypatch.setenv("REPORTING__CUSTOM_FIELDS", value)
    assert main(views) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reporting.custom_fields" in err and says in err, err
    assert "Traceback" not in err
