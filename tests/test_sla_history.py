"""SLA policy history, on DuckDB and on a real PostgreSQL server: changing `[sla]` applies from its
`effective_from` date and never rewrites the numbers before it; a clock is measured against the
policy (targets and business calendar) in force when it started.

March 2024 under version 1 (Mon-Fri 09:00-18:00 UTC, first response 60 minutes); from 2024-04-01
version 2 opens at 08:00 and wants a first response within 30 minutes. Worked by hand:
  9001  Tue 03-05 10:00 -> 10:45   45 business minutes, v1: met, and still met after the change
  9002  Wed 03-06 10:00 -> 10:20   20 minutes, met
  9102  Fri 03-29 17:50 -> Mon 04-01 09:50: started under v1, so 10 + 50 = 60 minutes against 60:
        met (v2 would count from 08:00: 10 + 110 = 120 against 30)
  9101  Tue 04-02 10:00 -> 10:45   45 minutes against v2's 30: breached
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import dlt
import pytest

from pipelines.reporting.sla import load_sla_config, policy_history
from pipelines.reporting.views import build_views
from tests.test_sla_known_answers import AGENT_A, SLA_CONFIG, Conversation, load_conversations

AS_OF = datetime(2024, 4, 30, tzinfo=UTC)
MARCH = [
    Conversation(9001, messages=[("c", "2024-03-05 10:00", None, 1), ("a", "2024-03-05 10:45", AGENT_A, 2)]),
    Conversation(9002, messages=[("c", "2024-03-06 10:00", None, 3), ("a", "2024-03-06 10:20", AGENT_A, 4)]),
]
LATE_REPLY_BEFORE = Conversation(9102, messages=[("c", "2024-03-29 17:50")])
LATE_REPLY = Conversation(9102, messages=[("c", "2024-03-29 17:50"), ("a", "2024-04-01 09:50")])
APRIL = [Conversation(9101, messages=[("c", "2024-04-02 10:00"), ("a", "2024-04-02 10:45")])]

VERSION_1 = SLA_CONFIG
VERSION_2 = copy.deepcopy(SLA_CONFIG)
VERSION_2["effective_from"] = "2024-04-01"
VERSION_2["default"]["first_response_minutes"] = 30
VERSION_2["default"]["business_hours"] = {day: "08:00-18:00" for day in ("mon", "tue", "wed", "thu", "fri")}


@pytest.fixture(params=["duckdb", "postgres"])
def pipeline(request: pytest.FixtureRequest, tmp_path) -> dlt.Pipeline:
    if request.param == "duckdb":
        destination = dlt.destinations.duckdb(str(tmp_path / "history.duckdb"))
    else:
        server = request.getfixturevalue("postgres_server")
        destination = dlt.destinations.postgres(server.loader_url(server.create_database()))
    return dlt.pipeline(
        pipeline_name=f"sla_history_{request.param}",
        destination=destination,
        dataset_name="commbox_raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def _rows(pipeline: dlt.Pipeline, sql: str) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client, client.execute_query(sql) as cursor:
        names = [d[0] for d in cursor.description]
        return [
            {
                name: float(v)
                if isinstance(v, Decimal)
                else v.astimezone(UTC)
                if isinstance(v, datetime)
                else v
                for name, v in zip(names, row, strict=True)
            }
            for row in cursor.fetchall()
        ]


def _events(pipeline: dlt.Pipeline) -> dict[tuple[int, str, int], dict[str, Any]]:
    rows = _rows(pipeline, "select * from commbox_reporting.fct_sla_events")
    return {(row["object_id"], row["metric"], row["clock_number"]): row for row in rows}


def _march_daily(pipeline: dlt.Pipeline) -> list[dict[str, Any]]:
    rows = _rows(pipeline, "select * from commbox_reporting.agg_channel_sla_daily")
    return sorted((r for r in rows if r["local_date"] < date(2024, 3, 29)), key=lambda r: r["local_date"])


def test_changing_the_targets_never_rewrites_last_month(pipeline):
    load_conversations(pipeline, [*MARCH, LATE_REPLY_BEFORE], sla=VERSION_1)
    build_views(pipeline, as_of=AS_OF)
    march_before = {k: v for k, v in _events(pipeline).items() if k[0] in (9001, 9002)}
    daily_before = _march_daily(pipeline)
    assert march_before[(9001, "first_response", 1)]["state"] == "met"
    assert daily_before

    for _ in range(2):  # a rebuild with the same [sla] adds no version and changes nothing
        load_conversations(pipeline, [*MARCH, LATE_REPLY, *APRIL], sla=VERSION_2)
        build_views(pipeline, as_of=AS_OF)
        events = _events(pipeline)
        for key, before in march_before.items():
            changed = {c: (before[c], events[key][c]) for c in before if events[key][c] != before[c]}
            assert not changed, (key, changed)
        assert {k for k in events if k[0] in (9001, 9002)} == set(march_before)
        assert _march_daily(pipeline) == daily_before

        late = events[(9102, "first_response", 1)]
        assert (late["policy_key"], late["business_seconds"], late["state"]) == ("1", 3600, "met")
        april = events[(9101, "first_response", 1)]
        assert (april["policy_key"], april["business_seconds"], april["target_seconds"], april["state"]) == (
            "1@2024-04-01",
            2700,
            1800,
            "breached",
        )
        versions = _rows(
            pipeline,
            "select policy_key, effective_from_at, effective_to_at from commbox_raw.sla_policies "
            "where policy_name = '1' order by effective_from_at",
        )
        april_first = datetime(2024, 4, 1, tzinfo=UTC)
        assert [(v["policy_key"], v["effective_to_at"]) for v in versions] == [
            ("1", april_first),
            ("1@2024-04-01", None),
        ]


def test_history_keeps_the_past_and_replaces_what_a_correction_covers():
    v1 = load_sla_config(VERSION_1)
    v2 = load_sla_config(VERSION_2)
    today = date(2024, 6, 1)
    assert [v.effective_from for v in policy_history([], v2, today)] == [None]  # the first reaches back
    stored = [(None, v1.definition)]
    assert [v.effective_from for v in policy_history(stored, v2, today)] == [None, date(2024, 4, 1)]
    # unchanged: nothing added, whatever the date
    stored = [(None, v1.definition), (date(2024, 4, 1), v2.definition)]
    assert [v.effective_from for v in policy_history(stored, v2, today)] == [None, date(2024, 4, 1)]
    # a change without a date applies from today
    v3 = load_sla_config({**VERSION_1, "default": {**VERSION_1["default"], "resolution_minutes": 600}})
    assert [v.effective_from for v in policy_history(stored, v3, today)] == [None, date(2024, 4, 1), today]
    # a correction dated before a stored version replaces it, never what came before its date
    v4 = load_sla_config(
        {
            **VERSION_2,
            "effective_from": "2024-03-15",
            "default": {**VERSION_2["default"], "next_response_minutes": 45},
        }
    )
    history = policy_history(stored, v4, today)
    assert [v.effective_from for v in history] == [None, date(2024, 3, 15)]
    assert history[0].config.default.first_response_seconds == 3600


def test_a_bad_effective_from_names_the_key():
    with pytest.raises(ValueError, match=r"sla\.effective_from"):
        load_sla_config({**VERSION_1, "effective_from": "next monday"})
