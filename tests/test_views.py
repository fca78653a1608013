"""The view renderer: the per-dialect rewrites, the BigQuery translation of every view, house rules;
the reconciliation with the simulator's own first/last response times."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlglot

from pipelines.commbox_sim.config import PROFILES
from pipelines.ops.runner import build_reporting_views
from pipelines.ops.status import read_status, render_status
from pipelines.reporting.views import DIALECTS, SQL_DIR, materializations, render_views, translate, view_files
from tests.helpers import load, make_test_pipeline, query


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        ("select cb_epoch(t) from x", "duckdb", "EPOCH(t)"),
        ("select cb_epoch(t) from x", "postgres", "CAST(EXTRACT(epoch FROM t) AS DOUBLE PRECISION)"),
        ("select cb_epoch(t) from x", "bigquery", "UNIX_MICROS(t) / 1000000"),
        ("select cb_from_epoch(cb_epoch(t) + 60) from x", "bigquery", "TIMESTAMP_MICROS(CAST(ROUND(((UNIX_MICROS(t) / 1000000) + 60) * 1000000) AS INT64))"),
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
        refs = set(re.findall(r"\{\{ ref\('(\w+)'\) \}\}", path.read_text()))
        assert refs <= seen, (path.stem, refs - seen)
        seen.add(path.stem)


@pytest.mark.parametrize(
    "path", sorted(p for p in SQL_DIR.glob("*/*.sql") if p.parent.name != "macros"), ids=lambda p: p.stem
)
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
        assert "{{ source('commbox', " in body
    else:
        assert "source(" not in body, "only staging names raw tables"
        assert "{{ ref('" in body, "models read each other through ref()"
    assert path.parent.name in ("staging", "intermediate", "marts")


def test_materializations_are_tables_or_views():
    kinds = materializations()
    assert set(kinds.values()) <= {"table", "view"}
    assert kinds["fct_sla_events"] == "table"
    assert kinds["agg_channel_sla_daily"] == "view"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_first_replies_agree_with_the_simulators_first_response_time(sim_factory, tmp_path, profile):
    """The simulator's firstResponseTime/lastResponseTime are its first/last human agent message
    (bots left out, an outbound first message included), as the reconciliation reads CommBox's: on a
    full load and after new messages, reopenings and reassignments, nothing disagrees."""
    sim = sim_factory(profile=profile)
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    sim.mutate(new=5, messages=15, closures=3, reassignments=3, reopen=2)
    load(pipeline, sim)
    assert build_reporting_views(pipeline)
    counts = {
        (kind, agreement): n
        for kind, agreement, n in query(
            pipeline,
            "select 'first', first_response_agreement, count(*) "
            "from commbox_reporting.fct_first_response_reconciliation group by first_response_agreement "
            "union all select 'last', last_response_agreement, count(*) "
            "from commbox_reporting.fct_first_response_reconciliation group by last_response_agreement",
        )
    }
    assert counts.get(("first", "disagree"), 0) == 0 and counts.get(("last", "disagree"), 0) == 0
    # every conversation is compared, and a sender left unknown is reported as such, not hidden
    (unknown_messages,) = query(
        pipeline,
        "select count(*) from commbox_reporting.int_messages_classified where sender_side = 'unknown'",
    )[0]
    conversations = len(sim.truth.objects())
    for kind in ("first", "last"):
        assert sum(n for (k, _), n in counts.items() if k == kind) == conversations
        if unknown_messages == 0:
            assert counts[(kind, "agree")] == conversations
    with_responses = query(
        pipeline,
        "select count(*) from commbox_reporting.fct_first_response_reconciliation "
        "where commbox_first_response_at is not null and is_in_agreement",
    )[0][0]
    assert with_responses > conversations / 2  # the agreement is about real replies, not NULL = NULL
    status = read_status(pipeline)
    assert status.reconciliation is not None and status.reconciliation.first_response.disagree == 0
    assert re.search(
        r"first replies vs CommBox firstResponseTime: [\d,]+ agree, 0 disagree", render_status(status)
    )


def sla_figures(pipeline) -> list[tuple]:
    """Every SLA clock the marts measured, as comparable rows."""
    return query(
        pipeline,
        "select object_id, metric, state, started_at, stopped_at, business_seconds "
        "from commbox_reporting.fct_sla_events order by object_id, metric, started_at",
    )


def test_sla_figures_are_the_same_whatever_shape_the_api_answers_in(sim_factory, tmp_path):
    """One account served in its default shape and exactly as the vendor documents it (list messages
    without a sender, null fields left out): the senders are found, so every SLA clock is the same."""
    figures = {}
    for profile in ("default", "docs"):
        sim = sim_factory(profile=profile, clock_running=False)  # both measured at the same now
        pipeline = make_test_pipeline(tmp_path / profile)
        load(pipeline, sim)
        assert build_reporting_views(pipeline, as_of=sim.clock.now())
        figures[profile] = sla_figures(pipeline)
    assert figures["docs"] == figures["default"]
    assert figures["default"] and not any(row[2] == "undetermined" for row in figures["default"])
