"""The README tells the truth: its TOML parses and is read, its commands and tables exist."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS, build_parser
from pipelines.commbox import commbox_source
from pipelines.commbox.tables import TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, re.DOTALL)
SOURCE_PARAMETERS = set(inspect.signature(commbox_source).parameters) - {"backfill", "end_date"}


@pytest.mark.parametrize("path", sorted((ROOT / ".dlt").glob("*.toml")), ids=lambda p: p.name)
def test_committed_toml_parses(path):
    tomllib.loads(path.read_text())


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_readme_toml_parses(block):
    tomllib.loads(block)


def _source_keys(document: dict) -> set[str]:
    return set(document.get("sources", {}).get("commbox", {}))


def test_every_source_key_shown_is_read_by_the_source():
    shown = set().union(*(_source_keys(tomllib.loads(block)) for block in TOML_BLOCKS))
    shown |= _source_keys(tomllib.loads((ROOT / ".dlt/config.toml").read_text()))
    assert shown, "the README shows no [sources.commbox] keys"
    assert shown - SOURCE_PARAMETERS - {"api_key"} == set()


def test_every_source_setting_is_documented():
    config = _source_keys(tomllib.loads((ROOT / ".dlt/config.toml").read_text()))
    secrets = _source_keys(tomllib.loads((ROOT / ".dlt/example.secrets.toml").read_text()))
    assert SOURCE_PARAMETERS - config - secrets == set()
    for key in SOURCE_PARAMETERS:
        assert key in README, key


def test_every_command_is_documented():
    for command in COMMANDS:
        assert f"commbox-etl {command}" in README, command
    assert set(COMMANDS) == set(build_parser()._subparsers._group_actions[0].choices)


def test_every_table_is_documented():
    for table in TABLE_COLUMNS:
        assert f"`{table}`" in README, table


def test_every_make_target_shown_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make ([a-z][a-z-]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


STAGED_AS = {"childs": "messages"}  # the staging layer speaks of messages, the API of childs
UNSTAGED = {"bad_records", "holes"}  # rejects kept raw and read holes: for inspection, not reporting


def test_every_resource_has_a_staging_view_documented_in_the_readme():
    for table in set(TABLE_COLUMNS) - UNSTAGED:
        view = f"stg_commbox__{STAGED_AS.get(table, table)}"
        assert (ROOT / "sql" / "staging" / f"{view}.sql").exists(), view
        assert f"`{view}`" in README, view


def test_every_view_is_documented():
    for path in (ROOT / "sql").rglob("*.sql"):
        assert path.stem in README, path.stem
