"""Render the dbt models in `sql/` without dbt: the small part of dbt's Jinja the models use.

`sql/` is a dbt package (docs/dbt.md), and `commbox-etl views` builds the same files without dbt
installed. A model may use only these calls, each alone inside `{{ ... }}` with literal arguments:

- `config(materialized='table')`: renders nothing; the runner reads the materialisation from it.
- `ref('model')`, `source('commbox', 'table')`: a schema-qualified name.
- the macros of `sql/macros/cross_db.sql` (`cb_epoch`, `cb_from_epoch`, `cb_median`,
  `cb_type_timestamp`, `cb_type_string`, `cb_type_float`, `cb_type_boolean`), dispatched by dialect
  exactly as dbt's `adapter.dispatch` does: the `<dialect>__` body, else the `default__` one. The
  bodies are read from that file, so dbt and the runner cannot drift apart.
- `cb_as_of()` and `cb_custom_fields('alias')` of `sql/macros/commbox.sql`, from the runner's `as_of`
  and `custom_fields` instead of dbt vars.

Anything else (`{% ... %}` blocks, other calls, expressions) is refused with the model's name, so a
model that dbt would render differently never builds silently. Jinja comments `{# ... #}` are dropped.

Two renderings: `dialect=None` keeps the portable functions as calls (`cb_epoch(x)`) and the types in
PostgreSQL spelling, which `views.translate()` rewrites with sqlglot (the runner's path); a dialect
gives what `dbt compile` gives for that adapter (the tests compare the two, and check BigQuery's).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
LAYERS = ("staging", "intermediate", "marts")
SOURCE_NAME = "commbox"
# The dialect the portable rendering is written in (and that dbt's `default__` bodies are).
PORTABLE_DIALECT = "postgres"
PORTABLE_FUNCTIONS = ("cb_epoch", "cb_from_epoch", "cb_median")
TYPE_MACROS = ("cb_type_timestamp", "cb_type_string", "cb_type_float", "cb_type_boolean")
MATERIALIZATIONS = ("view", "table")
CUSTOM_FIELD = re.compile(r"^content__[a-z0-9_]+$")

_CALL = re.compile(r"\{\{-?\s*(\w+)\s*\((.*?)\)\s*-?\}\}", re.DOTALL)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_DISPATCHED = re.compile(
    r"\{%-?\s*macro\s+(\w+?)__(cb_\w+)\s*\((\w*)\)\s*-?%\}(.*?)\{%-?\s*endmacro\s*-?%\}", re.DOTALL
)
_ARGUMENT = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class TemplateError(ValueError):
    """A model uses Jinja the runner does not render (or renders a call with bad arguments)."""


@dataclass(frozen=True)
class Model:
    """One model file: its name, layer, materialisation and the models and raw tables it reads."""

    name: str
    layer: str
    path: Path
    materialized: str
    refs: frozenset[str]
    sources: frozenset[str]


@cache
def dispatched_macros(sql_dir: Path | None = None) -> dict[str, dict[str, str]]:
    """The per-adapter bodies of the dispatched macros: `{macro: {adapter or 'default': body}}`.

    A body's argument (`{{ expr }}`) is replaced by `__a0`, the placeholder `views.translate()`
    substitutes.
    """
    macros: dict[str, dict[str, str]] = {}
    for path in sorted(((sql_dir or SQL_DIR) / "macros").glob("*.sql")):
        for adapter, name, argument, body in _DISPATCHED.findall(path.read_text()):
            if argument:
                body = body.replace("{{ " + argument + " }}", "__a0")
            if "{{" in body or "{%" in body:
                raise TemplateError(f"{path.name}: {adapter}__{name} must be plain SQL with its one argument")
            macros.setdefault(name, {})[adapter] = body.strip()
    missing = [name for name in (*PORTABLE_FUNCTIONS, *TYPE_MACROS) if "default" not in macros.get(name, {})]
    if missing:
        raise TemplateError(f"sql/macros: no default__ body for {missing}")
    return macros


def macro_body(name: str, dialect: str, sql_dir: Path | None = None) -> str:
    """The body dbt's `adapter.dispatch` picks for `dialect`: its own, else the default."""
    bodies = dispatched_macros(sql_dir)[name]
    return bodies.get(dialect, bodies["default"])


def _arguments(call: str, raw: str, where: str) -> tuple[list[str], dict[str, str]]:
    try:
        node = ast.parse(f"f({raw})", mode="eval").body
        assert isinstance(node, ast.Call)
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
    except (SyntaxError, ValueError, AssertionError):
        raise TemplateError(f"{where}: {call}({raw}) takes literal arguments only") from None
    if not all(isinstance(a, str) for a in [*args, *kwargs.values()]):
        raise TemplateError(f"{where}: {call}({raw}) takes string arguments")
    return args, kwargs


def as_of_literal(as_of: datetime | None, timestamp_type: str) -> str:
    """`cb_as_of()` rendered: the UTC literal of `as_of`, or NULL (= the end of the loaded data)."""
    if as_of is None:
        return f"cast(null as {timestamp_type})"
    aware = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return f"cast('{aware.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00' as {timestamp_type})"


def check_custom_fields(fields: Sequence[str]) -> list[str]:
    """The custom-field allow-list, validated: `content__*` column names, each once."""
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
        raise ValueError(
            f"reporting.custom_fields: expected a list of content__* column names, got {fields!r}"
        )
    bad = [f for f in fields if not CUSTOM_FIELD.match(f)]
    if bad:
        raise ValueError(
            f"reporting.custom_fields: {bad} are not content__* column names (lowercase, as loaded)"
        )
    return list(dict.fromkeys(fields))


def render(
    text: str,
    *,
    where: str,
    ref: Callable[[str], str],
    source: Callable[[str], str],
    dialect: str | None = None,
    as_of: datetime | None = None,
    custom_fields: Sequence[str] = (),
    sql_dir: Path | None = None,
) -> tuple[str, dict[str, str]]:
    """Render one model's text.

    Args:
        text: the model file's contents.
        where: the model's name, for errors.
        ref: maps a model name to the relation to read.
        source: maps a raw table name to the relation to read.
        dialect: None for the portable rendering (`cb_*` calls kept for sqlglot); "duckdb",
            "postgres" or "bigquery" for what `dbt compile` produces on that adapter.
        as_of: the build's "now" (`cb_as_of()`); None = the end of the loaded data.
        custom_fields: the `content__*` columns `cb_custom_fields()` lists.
        sql_dir: the package (default: the repository's `sql/`).

    Returns:
        The SQL and the model's `config()` keywords.

    Raises:
        TemplateError: on Jinja the runner does not render.
    """
    config: dict[str, str] = {}
    fields = check_custom_fields(custom_fields)
    body_dialect = dialect or PORTABLE_DIALECT

    def call(match: re.Match[str]) -> str:
        name, raw = match.group(1), match.group(2)
        args, kwargs = _arguments(name, raw, where)
        if name == "config":
            if args or set(kwargs) - {"materialized"}:
                raise TemplateError(f"{where}: config() takes materialized= only, got {raw}")
            if kwargs.get("materialized", "view") not in MATERIALIZATIONS:
                raise TemplateError(f"{where}: materialized must be one of {MATERIALIZATIONS}")
            config.update(kwargs)
            return ""
        if kwargs:
            raise TemplateError(f"{where}: {name}() takes no keyword arguments")
        if name == "ref" and len(args) == 1:
            return ref(args[0])
        if name == "source" and len(args) == 2:
            if args[0] != SOURCE_NAME:
                raise TemplateError(
                    f"{where}: unknown source {args[0]!r}; the package's source is {SOURCE_NAME!r}"
                )
            return source(args[1])
        if name in PORTABLE_FUNCTIONS and len(args) == 1:
            if dialect is None:
                return f"{name}({args[0]})"
            return macro_body(name, dialect, sql_dir).replace("__a0", args[0])
        if name in TYPE_MACROS and not args:
            return macro_body(name, body_dialect, sql_dir)
        if name == "cb_as_of" and not args:
            return as_of_literal(as_of, macro_body("cb_type_timestamp", body_dialect, sql_dir))
        if name == "cb_custom_fields" and len(args) == 1:
            return "".join(f"{args[0]}.{field},\n        " for field in fields)
        raise TemplateError(f"{where}: the runner does not render {{{{ {name}({raw}) }}}}")

    rendered = _CALL.sub(call, _COMMENT.sub("", text))
    leftover = re.search(r"\{\{|\{%|\}\}|%\}", rendered)
    if leftover:
        line = rendered[: leftover.start()].count("\n") + 1
        raise TemplateError(f"{where}: line {line}: Jinja the runner does not render ({leftover.group(0)})")
    return rendered, config


@cache
def models(sql_dir: Path | None = None) -> tuple[Model, ...]:
    """Every model of the package, in an order where each comes after the models it refs."""
    found: dict[str, Model] = {}
    for layer in LAYERS:
        for path in sorted(((sql_dir or SQL_DIR) / layer).glob("*.sql")):
            refs: set[str] = set()
            sources: set[str] = set()

            def ref(name: str, refs: set[str] = refs) -> str:
                refs.add(name)
                return name

            def source(table: str, sources: set[str] = sources) -> str:
                sources.add(table)
                return table

            _, config = render(path.read_text(), where=path.stem, ref=ref, source=source, sql_dir=sql_dir)
            found[path.stem] = Model(
                path.stem,
                layer,
                path,
                config.get("materialized", "view"),
                frozenset(refs),
                frozenset(sources),
            )
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, via: str) -> None:
        if name not in found:
            raise TemplateError(f"{via}: ref({name!r}) names no model")
        if name in ordered:
            return
        if name in visiting:
            raise TemplateError(f"circular ref() through {name}")
        visiting.add(name)
        for dep in sorted(found[name].refs):
            visit(dep, name)
        visiting.discard(name)
        ordered.append(name)

    for name in found:
        visit(name, name)
    return tuple(found[name] for name in ordered)
