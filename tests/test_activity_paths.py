"""Activities by the cheapest path this run has verified (pipelines/commbox/activity_paths.py).

Real HTTP against the simulator, real DuckDB: the list's activity log or one answer for every type
is used only after it gave the per-type rows on this run's own conversations; every reading of the
docs that gives other rows makes the run fall back, and the loaded rows equal the truth either way.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from pipelines.commbox.activity_paths import CHECK_CHUNK
from tests.helpers import assert_equals_truth, load, make_test_pipeline, query

TYPES = (2, 6)
LIST_LOG_OUT = (
    "activities: the list's activity log (includeActivityLog) differs from the per-type answers, not used"
)
ALL_TYPES_OUT = (
    "activities: every type in one answer (no activityType) differs from the per-type answers, not used"
)


def _get(sim: Any, path: str, **params: Any) -> Any:
    answer = requests.get(
        sim.base_url + path, params=params, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=10
    )
    return answer.status_code, answer.json().get("data")


def _busiest(sim: Any) -> tuple[int, int, list[dict[str, Any]]]:
    """The stream, id and truth activities of the conversation with the most activities."""
    by_object: dict[int, list[dict[str, Any]]] = {}
    for activity in sim.truth.activities():
        by_object.setdefault(activity["object_id"], []).append(activity)
    object_id = max(by_object, key=lambda key: len(by_object[key]))
    stream_id = next(o["stream_id"] for o in sim.truth.objects() if o["object_id"] == object_id)
    return stream_id, object_id, by_object[object_id]


def _listed_log(sim: Any, stream_id: int, object_id: int, created: Any) -> Any:
    start = int(created.timestamp())
    _, items = _get(
        sim,
        f"/streams/{stream_id}/objects",
        unixStartTime=start,
        unixEndTime=start + 1,
        includeActivityLog="true",
    )
    item = next(item for item in items if int(item.get("objectId", item.get("id"))) == object_id)
    return item.get("activities", "absent")


def test_the_simulator_serves_each_reading_of_the_activity_docs(sim):
    stream_id, object_id, truth = _busiest(sim)
    created = next(o["created_at"] for o in sim.truth.objects() if o["object_id"] == object_id)
    assert len(truth) > 3
    assert len(_listed_log(sim, stream_id, object_id, created)) == len(truth)
    status, every = _get(sim, f"/objects/{object_id}/activities")
    assert status == 200 and len(every) == len(truth)

    sim.configure(list_activity_log="ignored")
    assert _listed_log(sim, stream_id, object_id, created) == "absent"
    sim.configure(list_activity_log="newest", list_activity_log_newest=3)
    newest = _listed_log(sim, stream_id, object_id, created)
    assert [item["createdTime"] for item in newest] == [item["createdTime"] for item in every[-3:]]

    sim.configure(activities_untyped="refused")
    assert _get(sim, f"/objects/{object_id}/activities")[0] == 400
    sim.configure(activities_untyped="one_type", activities_untyped_type=6)
    status, one = _get(sim, f"/objects/{object_id}/activities")
    assert status == 200 and {item["type"] for item in one} == {6}
    assert _get(sim, f"/objects/{object_id}/activities", activityType=2)[1]  # asked for: still served


def _record_targets(sim: Any) -> list[str]:
    """Every request target the simulator is sent from now on (its server's handler, wrapped)."""
    seen: list[str] = []
    server = sim._server
    original = server.handler

    def recording(method: str, target: str, *args: Any) -> Any:
        seen.append(target)
        return original(method, target, *args)

    server.handler = recording
    return seen


def _activity_rows(pipeline: Any) -> list[tuple[Any, ...]]:
    """Every loaded activity column but dlt's own, ordered: what two runs must agree on."""
    names = [
        name
        for (name,) in query(
            pipeline,
            "select column_name from information_schema.columns where table_name = 'activities' "
            "and column_name not like '_dlt%' order by column_name",
        )
    ]
    return query(pipeline, f"select {', '.join(names)} from activities order by activity_id")


def test_the_list_log_replaces_the_activity_requests_once_verified(sim_factory, tmp_path):
    sim = sim_factory()
    per_type = make_test_pipeline(tmp_path / "per_type")
    load(per_type, sim, activity_paths="per_type", advance=600)
    assert sim.stats()["requests"]["activities"] == len(TYPES) * len(sim.truth.objects())

    sim.reset_stats()
    auto = make_test_pipeline(tmp_path / "auto")
    summary = load(auto, sim, advance=0)
    requests = sim.stats()["requests"]
    assert_equals_truth(auto, sim)
    assert _activity_rows(auto) == _activity_rows(per_type)
    # Only the conversations read per type while checking cost activity requests: a chunk in each
    # batch that started before the verdict (dlt runs the fan-out batches in parallel).
    assert requests["activities"] <= len(TYPES) * len(sim.truth.objects()) // 10
    assert requests["transcript"] == len(sim.truth.objects())
    assert not any(key.startswith("activities:") for key in summary.warnings)
    columns = {name for (name,) in query(auto, "select column_name from information_schema.columns")}
    assert "activity_log" not in columns


@pytest.mark.parametrize(
    ("switches", "dropped", "per_conversation"),
    [
        ({"list_activity_log": "ignored"}, {LIST_LOG_OUT}, 1),
        ({"list_activity_log": "newest", "list_activity_log_newest": 3}, {LIST_LOG_OUT}, 1),
        ({"list_activity_log": "ignored", "activities_untyped": "refused"}, {LIST_LOG_OUT, ALL_TYPES_OUT}, 2),
        (
            {"list_activity_log": "ignored", "activities_untyped": "one_type", "activities_untyped_type": 2},
            {LIST_LOG_OUT, ALL_TYPES_OUT},
            2,
        ),
        ({"list_activity_log": "newest", "activities_untyped": "one_type"}, {LIST_LOG_OUT, ALL_TYPES_OUT}, 2),
    ],
    ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None,
)
def test_a_path_that_gives_other_rows_is_dropped_and_the_rows_equal_truth(
    sim_factory, tmp_path, switches, dropped, per_conversation
):
    sim = sim_factory(**switches)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert {key for key in summary.warnings if key.startswith("activities:")} == dropped
    conversations = len(sim.truth.objects())
    requests = sim.stats()["requests"]["activities"]
    # Every conversation by the path that held, plus the few checked per type before the verdict
    # (a chunk of CHECK_CHUNK in each fan-out batch that started before it; dlt runs them in parallel).
    assert per_conversation * conversations <= requests
    assert requests <= per_conversation * conversations + len(TYPES) * conversations // 10
    assert CHECK_CHUNK * len(TYPES) < len(TYPES) * conversations // 10


def test_changed_conversations_after_a_full_load_equal_truth_on_the_cheaper_path(sim_factory, tmp_path):
    sim = sim_factory(profile="docs")
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    touched = sim.mutate(status_changes=12, reassignments=12, messages=6)
    changed = set().union(*(set(ids) for ids in touched.values()))
    sim.reset_stats()
    load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert sim.stats()["requests"]["activities"] < len(TYPES) * len(changed)


def test_per_type_setting_never_asks_the_list_for_its_log(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    seen = _record_targets(sim)
    load(pipeline, sim, activity_paths="per_type")
    assert_equals_truth(pipeline, sim)
    assert not [target for target in seen if "includeActivityLog" in target]
    assert sim.stats()["requests"]["activities"] == len(TYPES) * len(sim.truth.objects())


def test_no_activity_of_the_configured_types_keeps_checking_per_type(sim, tmp_path):
    """A type the account never logs: nothing to compare, so every conversation is read per type
    and the list keeps being asked for its log (the run never got a verdict)."""
    pipeline = make_test_pipeline(tmp_path)
    seen = _record_targets(sim)
    summary = load(pipeline, sim, activity_types=[23])
    assert sim.stats()["requests"]["activities"] == len(sim.truth.objects())
    lists = [target for target in seen if "/objects?" in target]
    assert lists and all("includeActivityLog=true" in target for target in lists)
    assert not any(key.startswith("activities:") for key in summary.warnings)


def test_a_later_run_recalls_the_verdict_and_rechecks_only_a_conversation_or_two(sim_factory, tmp_path):
    sim = sim_factory()
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    sim.mutate(status_changes=12, reassignments=12, messages=6)
    sim.reset_stats()
    summary = load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    # per type beside the recalled path, until the re-checked conversations showed both types
    assert sim.stats()["requests"]["activities"] <= 2 * len(TYPES)
    assert not any(key.startswith("activities:") for key in summary.warnings)


@pytest.mark.parametrize(
    "switches",
    [{"list_activity_log": "ignored"}, {"list_activity_log": "newest", "list_activity_log_newest": 1}],
    ids=["log-ignored", "log-cut-to-newest"],
)
def test_a_recalled_verdict_the_account_no_longer_bears_out_is_dropped(sim_factory, tmp_path, switches):
    sim = sim_factory()
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    sim.configure(**switches)
    sim.mutate(status_changes=12, reassignments=12, messages=6)
    summary = load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert LIST_LOG_OUT in summary.warnings
    # the run went back to checking: the list's log is out, every type in one answer may have won
    kept = pipeline.state["sources"]["commbox"].get("activity_path") or {}
    assert kept.get("path") != "list_log"
