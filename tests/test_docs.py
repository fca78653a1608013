"""The README and every page under docs/ tell the truth.

Each page is checked the same way (parametrised over the files, so a new page is covered the day it
is added): its TOML parses and shows only keys the code reads, its commands parse with the real
command-line parsers, its `make` targets exist, its relative links (and their anchors) resolve, and
every repository path and `pipelines.` name it gives exists. The consistency checks then make sure
nothing the code offers is left undocumented: every setting, command, option, table and view.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import COMMANDS, build_parser
from pipelines.commbox import commbox_source
from pipelines.commbox.tables import TABLE_COLUMNS
from pipelines.commbox_sim.cli import build_parser as build_simulator_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
TEXT = {page: page.read_text() for page in PAGES}
EVERYTHING = "\n".join(TEXT.values())
SOURCE_PARAMETERS = set(inspect.signature(commbox_source).parameters) - {"backfill", "end_date"}
README_LIMIT = 12 * 1024

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
SHELL = {"sh", "bash", "shell", "console", "cron"}
# A shell word that ends the command a line shows (a redirection, a pipe, a second command).
SHELL_END = re.compile(r"^(\d?>|>>|\||\|\||&&|;|&)")
REPO_PATH = re.compile(r"(?<![\w./~-])((?:pipelines|tests|sql|dags|bench|docs)/[\w./-]*[\w/])")
DOTTED = re.compile(r"(?<![\w./])pipelines(?:\.[A-Za-z_]\w*)+")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _prose(text: str) -> str:
    """The page without its fenced blocks: where inline code, links and headings are."""
    return FENCE.sub("", text)


def _blocks(text: str, languages: set[str]) -> list[str]:
    return [body for language, body in FENCE.findall(text) if language in languages]


def _code_lines(text: str) -> list[str]:
    """Every line a reader may copy: inline code spans, shell blocks, and `$ ` prompts in any block."""
    lines = re.findall(r"`([^`\n]+)`", _prose(text))
    lines += [line for block in _blocks(text, SHELL) for line in block.splitlines()]
    lines += [
        line[2:] for _, block in FENCE.findall(text) for line in block.splitlines() if line.startswith("$ ")
    ]
    return lines


def _argv(shown: str) -> list[str]:
    """The arguments a shown command passes: `[--days 7]` taken as given, `a|b|c` as its first choice."""
    argv = []
    for word in shlex.split(shown.replace("[", " ").replace("]", " "), comments=True):
        if SHELL_END.match(word):
            break
        argv.append(word.split("|")[0] if "|" in word else word)
    return argv


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """(parser, argv) of every `commbox-etl ...` and `python -m pipelines.commbox_sim ...` shown."""
    found = []
    for line in _code_lines(text):
        for match in re.finditer(
            r"(?<![\w.-])commbox-etl +((?:--log-level +\S+ +)?[a-z][a-z-]*(?:\s.*)?)$", line
        ):
            found.append(("commbox-etl", _argv(match.group(1))))
        for match in re.finditer(r"python -m pipelines\.commbox_sim((?: .*)?)$", line):
            found.append(("simulator", _argv(match.group(1))))
    return found


def _parse(kind: str, argv: list[str]) -> None:
    """Parse as `commbox-etl` would: everything after `simulate` goes to the simulator's parser."""
    if kind == "simulator":
        build_simulator_parser().parse_args(argv)
        return
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "simulate":
        build_simulator_parser().parse_args(rest)
    elif rest:
        raise SystemExit(f"unrecognized arguments: {' '.join(rest)}")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.MULTILINE)}


def _sla_loader() -> Any:
    """`load_sla_config`, wherever the SLA configuration lives (it is moving to `pipelines.reporting`)."""
    for module in ("pipelines.reporting.sla", "pipelines.commbox.sla"):
        if importlib.util.find_spec(module) is not None:
            return importlib.import_module(module).load_sla_config
    raise AssertionError("no module defines load_sla_config")


def _resolves(name: str) -> bool:
    """Whether a dotted `pipelines.` name is a module or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        target: Any = importlib.import_module(module_name)
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


TOML_BLOCKS = [(page, block) for page in PAGES for block in _blocks(TEXT[page], {"toml"})]


# ------------------------------------------------------------------------ every page


@pytest.mark.parametrize("path", sorted((ROOT / ".dlt").glob("*.toml")), ids=lambda p: p.name)
def test_committed_toml_parses(path):
    tomllib.loads(path.read_text())


def test_committed_sla_configuration_is_valid():
    _sla_loader()(tomllib.loads((ROOT / ".dlt/config.toml").read_text())["sla"])


@pytest.mark.parametrize(
    ("page", "block"),
    TOML_BLOCKS,
    ids=[f"{_page_id(page)}:{block.splitlines()[0][:30]}" for page, block in TOML_BLOCKS],
)
def test_toml_shown_parses_and_every_key_is_read(page, block):
    document = tomllib.loads(block)
    shown = set(document.get("sources", {}).get("commbox", {}))
    assert shown - SOURCE_PARAMETERS == set(), f"{_page_id(page)} shows keys the source does not read"
    if "sla" in document:
        _sla_loader()(document["sla"])  # raises on an unknown key or a bad value


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_environment_variables_shown_are_settings(page):
    sla = tomllib.loads((ROOT / ".dlt/config.toml").read_text())["sla"]
    for name in re.findall(r"\bSOURCES__COMMBOX__([A-Z_]+)", TEXT[page]):
        assert name.lower() in SOURCE_PARAMETERS, name
    for name in re.findall(r"\bSLA__([A-Z0-9_]+)", TEXT[page]):
        key = name.split("__")[-1].lower()
        assert key in sla["default"] or key in sla["statuses"], name


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_command_shown_parses(page, capsys):
    for kind, argv in _commands(TEXT[page]):
        try:
            _parse(kind, argv)
        except SystemExit as refused:
            reason = capsys.readouterr().err.strip().splitlines()[-1:] or [str(refused)]
            pytest.fail(f"{_page_id(page)}: {kind} {shlex.join(argv)}: {reason[0]}")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_make_target_shown_exists(page):
    makefile = (ROOT / "Makefile").read_text()
    for line in _code_lines(TEXT[page]):
        for target in re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", line):
            assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"{_page_id(page)}: make {target}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", _prose(TEXT[page])):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{_page_id(page)}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{_page_id(page)}: {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_repository_path_and_name_exists(page):
    """A module that moves shows up here: the page still names its old place."""
    for path in REPO_PATH.findall(TEXT[page]):
        assert (ROOT / path).exists(), f"{_page_id(page)} names {path}"
    for name in DOTTED.findall(TEXT[page]):
        assert _resolves(name), f"{_page_id(page)} names {name}"


# ------------------------------------------------------------------------ the README


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.encode()) <= README_LIMIT
    first = FENCE.search(text)
    assert first and "make run" in first.group(2) and "make test" in first.group(2)
    assert "](docs/img/sla-report.png)" in text
    shown = [tomllib.loads(block) for page, block in TOML_BLOCKS if page == README]
    keys = set().union(*(document.get("sources", {}).get("commbox", {}) for document in shown))
    assert {"base_url", "start_date", "api_key"} <= keys, "the README shows the main configuration"


def test_readme_links_every_docs_page():
    for page in sorted(DOCS.rglob("*.md")):
        assert f"](docs/{page.relative_to(DOCS)})" in TEXT[README], page.name


# ------------------------------------------------------------------------ nothing left undocumented


def test_every_source_setting_is_documented():
    config = set(tomllib.loads((ROOT / ".dlt/config.toml").read_text())["sources"]["commbox"])
    secrets = set(tomllib.loads((ROOT / ".dlt/example.secrets.toml").read_text())["sources"]["commbox"])
    assert SOURCE_PARAMETERS - config - secrets == set()
    assert (config | secrets) - SOURCE_PARAMETERS == set()
    reference = (DOCS / "configuration.md").read_text()
    for key in SOURCE_PARAMETERS:
        assert f"`{key}`" in reference or f"\n{key} = " in reference, key


def test_every_command_is_documented():
    for command in COMMANDS:
        assert f"commbox-etl {command}" in TEXT[README], command
    assert set(COMMANDS) == set(build_parser()._subparsers._group_actions[0].choices)


def test_every_option_is_documented():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    options = {o for action in parser._actions for o in action.option_strings}
    for name, command in commands.items():
        if name != "simulate":  # its flags are the simulator's, documented with its switches
            options |= {o for action in command._actions for o in action.option_strings}
    for option in options - {"-h", "--help"}:
        assert re.search(rf"{option}(?![\w-])", EVERYTHING), option


def test_every_table_is_documented():
    contract = (DOCS / "raw_tables.md").read_text()
    for table in TABLE_COLUMNS:
        assert f"`{table}`" in TEXT[README], table
        assert f"`{table}`" in contract, table


STAGED_AS = {"childs": "messages"}  # the staging layer speaks of messages, the API of childs
UNSTAGED = {"bad_records", "holes"}  # rejects kept raw and read holes: for inspection, not reporting


def test_every_resource_has_a_staging_view_documented():
    for table in set(TABLE_COLUMNS) - UNSTAGED:
        view = f"stg_commbox__{STAGED_AS.get(table, table)}"
        assert (ROOT / "sql" / "staging" / f"{view}.sql").exists(), view
        assert f"`{view}`" in EVERYTHING, view


def test_every_view_is_documented():
    for layer in ("staging", "intermediate", "marts"):
        for path in (ROOT / "sql" / layer).glob("*.sql"):
            assert path.stem in EVERYTHING, path.stem
    for path in (ROOT / "sql" / "marts").glob("*.sql"):
        assert f"`{path.stem}`" in TEXT[README], path.stem
