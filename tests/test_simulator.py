"""The CommBox simulator over real HTTP: vendor contract, paging/window semantics, determinism, truth."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines.commbox_sim import QUIRKS, SimConfig, Simulator
from pipelines.commbox_sim.config import PROFILES

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


# ---------------------------------------------------------------------- helpers
def get(sim: Simulator, path: str, **params: Any) -> requests.Response:
    return requests.get(
        sim.base_url + path, params=params, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=30
    )


def whole_history(sim: Simulator) -> dict[str, int]:
    end = int(sim.clock.now().timestamp()) + 86_400
    return {"unixStartTime": 0, "unixEndTime": end}


def list_all(sim: Simulator, stream_id: int, **params: Any) -> list[dict]:
    """Every page until an empty one."""
    base = sim.config.page_base
    out: list[dict] = []
    page = base
    while True:
        r = get(sim, f"/streams/{stream_id}/objects", pageNumber=page, **params)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if not data:
            return out
        out.extend(data)
        page += 1


def oid(item: dict) -> int:
    return int(item.get("objectId", item.get("id")))


def stream_ids(sim: Simulator) -> list[int]:
    return [s["stream_id"] for s in sim.truth.streams()]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------------- contract
# Key sets of the vendor's example responses, extracted by tests/contract/extract_vendor_keys.py
# and committed, so these tests run the same on a clone without the vendor documents.
VENDOR_KEYS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "contract/vendor_keys.json").read_text()
)["endpoints"]
# Variant B of the list example documents a social post; no profile serves one in the exact shape.
UNSERVED_IN_DOCS = {"/streams/{STREAM_ID}/objects": {"data.user.identity"}}
# What the other profiles carry beyond the examples, on purpose: list childs with their sender
# (``user``), Get Object's childs beside ``user`` as well as inside it, and the list fields
# (firstResponseTime...) on Get Object too.
_CHILD_USER = {
    "user": {"id", "managerId", "isManager", "identity"},
    "user.identity": {
        "id",
        "streamProviderId",
        "streamProviderType",
        "firstName",
        "lastName",
        "thumbnailUrl",
    },
}
DEFAULT_EXTRAS: dict[str, dict[str, set[str]]] = {
    "/streams/{STREAM_ID}/objects": {
        "data.childs": {"user"},
        **{f"data.childs.{k}": v for k, v in _CHILD_USER.items()},
    },
    "/streams/{STREAM_ID}/objects/{OBJECT_ID}": {
        "data": {"childs", "firstResponseTime", "lastResponseTime", "priorityTime", "lastAssignedManagerId", "numTags"},
        "data.user.childs": {"streamProviderId"},
        "data.childs": {"id", "object_id", "content", "message", "createdTime", "streamProviderId",
                        "streamProviderType", "user"},
        **{f"data.childs.{k}": v for k, v in _CHILD_USER.items()},
    },
}  # fmt: skip


def served_dicts(
    value: Any, path: str = "", out: dict[str, list[dict]] | None = None
) -> dict[str, list[dict]]:
    """Every dict in ``value`` by dotted path from the envelope; lists are transparent, as in the fixture."""
    out = {} if out is None else out
    if isinstance(value, list):
        for v in value:
            served_dicts(v, path, out)
    elif isinstance(value, dict):
        out.setdefault(path, []).append(value)
        for key, v in value.items():
            served_dicts(v, f"{path}.{key}" if path else key, out)
    return out


def has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    return False


def _sample(sim: Simulator, endpoint: str) -> list[dict]:
    """Envelopes served for one endpoint across a sample of the account."""
    objs = sim.truth.objects()
    if endpoint == "/streams/{STREAM_ID}/objects":
        return [
            get(sim, f"/streams/{s}/objects", includeChilds="true", pageSize=100, **whole_history(sim)).json()
            for s in stream_ids(sim)
        ] + [
            get(
                sim,
                f"/streams/{s}/objects",
                includeChilds="true",
                pageSize=100,
                pageNumber=2,
                **whole_history(sim),
            ).json()
            for s in stream_ids(sim)
        ]
    if endpoint == "/streams/{STREAM_ID}/objects/{OBJECT_ID}":
        return [
            get(sim, f"/streams/{o['stream_id']}/objects/{o['object_id']}", includeChilds="true").json()
            for o in objs[:80]
        ]
    if endpoint == "/streams/{STREAM_ID}/objects/{OBJECT_ID}/transcript":
        return [
            get(sim, f"/streams/{o['stream_id']}/objects/{o['object_id']}/transcript").json()
            for o in objs[:40]
        ]
    if endpoint == "/objects/{OBJECT_ID}/activities":
        return [get(sim, f"/objects/{o['object_id']}/activities").json() for o in objs[:40]]
    if endpoint == "/users/{USER_ID}":
        return [get(sim, f"/users/{o['user_id']}").json() for o in objs[:40]]
    if endpoint == "/stats/streamsSLAExceptions":
        sim.mutate(new=3)  # unanswered for 50 minutes: SLA-critical under the 60-minute target
        sim.clock.advance(50 * 60)
    if endpoint == "/streams/{STREAM_ID}/streamavailability":
        return [
            get(sim, f"/streams/{s}/streamavailability", ignoreAutomationExsistance="true").json()
            for s in stream_ids(sim)
        ]
    return [get(sim, endpoint).json()]


CONTRACT_ENDPOINTS = [
    "/streams/{STREAM_ID}/objects",
    "/streams/{STREAM_ID}/objects/{OBJECT_ID}",
    "/streams/{STREAM_ID}/objects/{OBJECT_ID}/transcript",
    "/objects/{OBJECT_ID}/activities",
    "/managers",
    "/users/{USER_ID}",
    "/stats/streams",
    "/stats/streamsSLAExceptions",
    "/streams/{STREAM_ID}/streamavailability",
    "/core/systemstatus",
]


def _check_exact(endpoint: str, served: dict[str, list[dict]]) -> None:
    documented = VENDOR_KEYS[endpoint]["shapes"]
    assert set(documented) - set(served) == UNSERVED_IN_DOCS.get(endpoint, set())
    for path, dicts in served.items():
        assert path in documented, f"{endpoint}: {path!r} is not in the vendor's example"
        for d in dicts:
            assert any(set(d) == set(keys) for keys in documented[path]), (endpoint, path, sorted(d))


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("endpoint", CONTRACT_ENDPOINTS)
def test_served_keys_match_the_vendor_example(sim_factory, profile: str, endpoint: str) -> None:
    """docs: exactly the example's keys (less the null ones); other profiles: every example key, extras known."""
    sim = sim_factory(profile=profile)
    vendor = VENDOR_KEYS[endpoint]
    if profile == "docs":
        sim.configure(omit_nulls=False)  # with every null sent, the key sets must be exactly equal
        _check_exact(endpoint, served_dicts(_sample(sim, endpoint)))
        sim.configure(omit_nulls=True)
        envelopes = _sample(sim, endpoint)
        assert not has_null(envelopes)
        for path, dicts in served_dicts(envelopes).items():
            for d in dicts:
                assert any(set(d) <= set(keys) for keys in vendor["shapes"][path]), (path, sorted(d))
        statuses = {type(e["status"]).__name__ for e in envelopes}
        assert statuses == {"int" if vendor["status"] == "number" else "str"}
        assert all(("data" in e) is (vendor["data"] != "null") for e in envelopes)
        return
    served = served_dicts(_sample(sim, endpoint))
    extras = DEFAULT_EXTRAS.get(endpoint, {})
    for path, alternatives in vendor["shapes"].items():
        keys = set().union(*(set(d) for d in served.get(path, [])))
        for documented in alternatives:
            assert set(documented) <= keys, (path, sorted(set(documented) - keys))
    for path, dicts in served.items():
        documented = set().union(*map(set, vendor["shapes"].get(path, [])))
        undocumented = set().union(*(set(d) for d in dicts)) - documented
        assert undocumented <= extras.get(path, set()), (path, sorted(undocumented))


def test_the_contract_never_reads_the_vendor_documents() -> None:
    """The committed fixture stands in for ../shared: nothing here may skip on a clone without it."""
    needle = "shared" + "/reference"  # spelled apart so that this line does not match itself
    assert needle not in Path(__file__).read_text()
    assert set(CONTRACT_ENDPOINTS) == set(VENDOR_KEYS)


def test_vendor_key_extractor_reads_examples_by_path(tmp_path: Path) -> None:
    """The extractor on a two-endpoint spec: oneOf variants, $ref, lists transparent, status type."""
    from tests.contract import extract_vendor_keys as extractor

    item = {
        "type": "object",
        "properties": {"id": {}, "childs": {"type": "array", "items": {"$ref": "#/c/child"}}},
    }
    envelope = {"status": {"example": "200"}, "description": {}, "response_time": {}}
    spec = {
        "c": {"child": {"type": "object", "properties": {"id": {}, "message": {}}}},
        "paths": {
            name: {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                **envelope,
                "data": {"type": "array", "items": {"oneOf": [item, {"type": "object", "properties": {"x": {}}}, item]}}
                if name.startswith("/streams") else {"type": "string", "example": None},
            }}}}}}}}
            for name in extractor.READ_ENDPOINTS
        },
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "keys.json"
    assert extractor.main([str(tmp_path / "spec.json"), "-o", str(out)]) == 0
    got = json.loads(out.read_text())["endpoints"]
    assert got["/streams/{STREAM_ID}/objects"] == {
        "status": "string",
        "data": "array",
        "shapes": {
            "": [["status", "description", "response_time", "data"]],
            "data": [["id", "childs"], ["x"]],
            "data.childs": [["id", "message"]],
        },
    }
    assert got["/core/systemstatus"]["data"] == "null"
    assert extractor.main([str(tmp_path / "missing.json"), "-o", str(out)]) == 2


def test_envelope_status_is_sometimes_a_string_and_response_time_is_the_sim_clock(sim: Simulator) -> None:
    statuses = {
        type(get(sim, p).json()["status"]) for p in ("/managers", "/core/systemstatus", "/stats/streams")
    }
    oid_ = sim.truth.objects()[0]["object_id"]
    statuses.add(type(get(sim, f"/objects/{oid_}/activities").json()["status"]))
    assert statuses == {int, str}
    sim.clock.advance(3600)
    stamp = get(sim, "/managers").json()["response_time"]
    assert TIME_RE.match(stamp)
    assert abs(parse_time(stamp) - sim.clock.now()) < timedelta(seconds=30)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic demo-key", "demo-key"])
def test_missing_or_wrong_key_is_401(sim: Simulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = requests.get(sim.base_url + "/managers", headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.json()["status"] == 401 and r.json()["data"] is None


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"unixStartTime": 0},
        {"unixEndTime": 10},
        {"unixStartTime": 0, "unixEndTime": 10, "timeFilter": "priority-ish"},
        {"unixStartTime": 0, "unixEndTime": 10, "order": "name"},
        {"unixStartTime": 0, "unixEndTime": 10, "sort": "up"},
        {"unixStartTime": 0, "unixEndTime": 10, "pageNumber": 0},
        {"unixStartTime": "yesterday", "unixEndTime": 10},
        {"identityStreamProviderId": "x@y.z"},
    ],
)
def test_bad_list_requests_are_400(sim: Simulator, params: dict) -> None:
    r = get(sim, f"/streams/{stream_ids(sim)[0]}/objects", **params)
    assert r.status_code == 400
    assert r.json()["status"] == 400


def test_unknown_ids_and_paths_are_404(sim: Simulator) -> None:
    o = sim.truth.objects()[0]
    other_stream = next(s for s in stream_ids(sim) if s != o["stream_id"])
    for path in (
        "/streams/1/objects?unixStartTime=0&unixEndTime=1",
        f"/streams/{o['stream_id']}/objects/1",
        f"/streams/{other_stream}/objects/{o['object_id']}",
        "/objects/1/activities",
        "/users/1",
        "/no/such/path",
    ):
        assert get(sim, path).status_code == 404, path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_501(sim: Simulator, method: str) -> None:
    s = stream_ids(sim)[0]
    r = requests.request(
        method,
        f"{sim.base_url}/streams/{s}/objects",
        headers={"Authorization": "Bearer demo-key"},
        timeout=10,
    )
    assert r.status_code == 501
    assert r.json()["status"] == 501


def test_quota_exhausted_and_rate_limit_answer_429_with_retry_after(sim: Simulator) -> None:
    sim.configure(quota_exhausted=True, retry_after_override=120)
    r = get(sim, "/managers")
    assert r.status_code == 429 and r.headers["Retry-After"] == "120"
    sim.configure(quota_exhausted=False, retry_after_override=None, rate_limit_rps=1.0, rate_limit_burst=2)
    codes = [get(sim, "/managers") for _ in range(6)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert sim.stats()["throttled"] >= len(limited) + 1


def test_no_rate_limit_headers_unless_asked(sim: Simulator) -> None:
    sim.configure(rate_limit_rps=5.0, rate_limit_burst=3)
    r = get(sim, "/managers")
    assert r.status_code == 200
    assert not [name for name in r.headers if "ratelimit" in name.lower()]


@pytest.mark.parametrize("kind", ["ietf", "x-ratelimit"])
def test_rate_limit_headers_state_the_bucket(sim: Simulator, kind: str) -> None:
    # One token every five seconds: the bucket cannot refill between these requests.
    sim.configure(rate_limit_rps=0.2, rate_limit_burst=3, rate_limit_headers=kind)
    prefix = "RateLimit-" if kind == "ietf" else "X-RateLimit-"
    answers = [get(sim, "/managers") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    remaining = [int(r.headers[prefix + "Remaining"]) for r in answers]
    assert remaining == [2, 1, 0, 0]  # the token a request took is already gone
    assert answers[0].headers[prefix + "Reset"] == "0"  # a token is left
    assert answers[2].headers[prefix + "Reset"] in ("4", "5")  # empty: the next token within 5 s
    if kind == "ietf":
        assert answers[0].headers["RateLimit-Policy"] == "12;w=60"
        assert answers[0].headers["RateLimit-Limit"] == "12"
        sim.configure(rate_limit_rps=50.0)
        assert get(sim, "/managers").headers["RateLimit-Policy"] == "50;w=1"
    else:
        assert answers[0].headers["X-RateLimit-Limit"] == "3"
        assert "RateLimit-Policy" not in answers[0].headers


def test_rate_limit_headers_must_name_a_known_kind(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="rate_limit_headers"):
        sim.configure(rate_limit_headers="github")


# ---------------------------------------------------------------------- paging and windows
@pytest.mark.parametrize("page_base", [0, 1])
def test_pages_cover_the_window_exactly_once(sim_factory, page_base: int) -> None:
    sim = sim_factory(page_base=page_base)
    s = stream_ids(sim)[0]
    expected = {o["object_id"] for o in sim.truth.objects() if o["stream_id"] == s}
    got = [oid(x) for x in list_all(sim, s, pageSize=30, **whole_history(sim))]
    assert len(got) == len(set(got)) and set(got) == expected
    first = get(sim, f"/streams/{s}/objects", pageSize=30, **whole_history(sim)).json()["data"]
    assert [oid(x) for x in first] == got[:30]  # pageNumber omitted = first page
    assert (
        get(sim, f"/streams/{s}/objects", pageNumber=page_base - 1, **whole_history(sim)).status_code == 400
    )


def test_sort_and_order(sim: Simulator) -> None:
    s = stream_ids(sim)[1]
    created = {o["object_id"]: o["created_at"] for o in sim.truth.objects()}
    desc = [oid(x) for x in list_all(sim, s, **whole_history(sim))]
    asc = [oid(x) for x in list_all(sim, s, sort="asc", **whole_history(sim))]
    assert asc == desc[::-1]
    assert [created[i] for i in asc] == sorted(created[i] for i in asc)


def test_window_cap_returns_at_most_100_whatever_the_page(sim_factory) -> None:
    sim = sim_factory(window_cap=True)
    s = max(stream_ids(sim), key=lambda x: sum(o["stream_id"] == x for o in sim.truth.objects()))
    first = get(sim, f"/streams/{s}/objects", **whole_history(sim)).json()["data"]
    second = get(sim, f"/streams/{s}/objects", pageNumber=2, **whole_history(sim)).json()["data"]
    assert len(first) == 100 and second == []


def test_stricter_max_page_size_clamps_silently(sim_factory) -> None:
    sim = sim_factory(max_page_size=50)
    s = stream_ids(sim)[0]
    r = get(sim, f"/streams/{s}/objects", pageSize=100, **whole_history(sim))
    assert r.status_code == 200 and len(r.json()["data"]) == 50


@pytest.mark.parametrize(
    ("switches", "params"),
    [
        ({"max_page_size": 50, "strict_page_size": True}, {"pageSize": 100}),
        ({"time_filter_values": ("Updated", "Created")}, {"timeFilter": "updatedtime"}),
    ],
)
def test_stricter_accounts_refuse_parameters_with_400(sim_factory, switches: dict, params: dict) -> None:
    sim = sim_factory(**switches)
    s = stream_ids(sim)[0]
    assert get(sim, f"/streams/{s}/objects", **params, **whole_history(sim)).status_code == 400
    accepted = {"pageSize": 50} if "pageSize" in params else {"timeFilter": "Updated"}
    assert get(sim, f"/streams/{s}/objects", **accepted, **whole_history(sim)).status_code == 200


@pytest.mark.parametrize("inclusive", [False, True])
def test_window_end_is_half_open_or_inclusive(sim_factory, inclusive: bool) -> None:
    sim = sim_factory(inclusive_end=inclusive)
    o = sim.truth.objects()[100]
    second = int(o["created_at"].timestamp())
    at_end = get(
        sim, f"/streams/{o['stream_id']}/objects", unixStartTime=second - 1, unixEndTime=second
    ).json()["data"]
    at_start = get(
        sim, f"/streams/{o['stream_id']}/objects", unixStartTime=second, unixEndTime=second + 1
    ).json()["data"]
    assert (o["object_id"] in {oid(x) for x in at_end}) is inclusive
    assert o["object_id"] in {oid(x) for x in at_start}


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("time_filter", ["updated", "UpdatedTime", "updatedtime"])
def test_time_filter_picks_the_datetime_unless_ignored(sim_factory, ignore: bool, time_filter: str) -> None:
    sim = sim_factory(ignore_time_filter=ignore)
    objs = sim.truth.objects()
    o = next(x for x in objs if x["updated_at"] - x["created_at"] > timedelta(days=1))
    lo = int(o["updated_at"].timestamp())
    found = {
        oid(x)
        for x in list_all(sim, o["stream_id"], unixStartTime=lo, unixEndTime=lo + 1, timeFilter=time_filter)
    }
    assert (o["object_id"] in found) is (not ignore)


def test_status_substream_and_user_filters(sim: Simulator) -> None:
    objs = sim.truth.objects()
    s = stream_ids(sim)[0]
    got = list_all(sim, s, status="1,15", **whole_history(sim))
    assert {x["statusId"] for x in got} <= {1, 15}
    assert len(got) == sum(1 for o in objs if o["stream_id"] == s and o["status_id"] in (1, 15))
    o = next(x for x in objs if x["stream_id"] == s and x["sub_stream_id"])
    got = list_all(sim, s, subStream=o["sub_stream_id"], **whole_history(sim))
    assert len(got) == sum(
        1 for x in objs if x["stream_id"] == s and x["sub_stream_id"] == o["sub_stream_id"]
    )
    mine = list_all(sim, s, userIdentityId=o["user_identity_id"])
    assert o["object_id"] in {oid(x) for x in mine}


def test_childs_newest_first_and_only_last_message_without_them(sim: Simulator) -> None:
    truth = {}
    for c in sim.truth.childs():
        truth.setdefault(c["object_id"], []).append(c)
    s = stream_ids(sim)[1]
    plain = list_all(sim, s, **whole_history(sim))
    assert all("childs" not in x and "message" in x for x in plain)
    full = list_all(sim, s, includeChilds="TRUE", **whole_history(sim))
    for x in full:
        childs = x["childs"] if isinstance(x["childs"], list) else [x["childs"]]
        expected = sorted(truth[oid(x)], key=lambda c: c["created_at"], reverse=True)
        assert [c["id"] for c in childs] == [c["child_id"] for c in expected]
        assert x["message"] == expected[0]["message"]


# ---------------------------------------------------------------------- truth and determinism
def test_served_objects_match_the_truth(sim: Simulator) -> None:
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    for s in stream_ids(sim):
        for x in list_all(sim, s, **whole_history(sim)):
            t = truth[oid(x)]
            assert parse_time(x["createdTime"]) == t["created_at"]
            assert parse_time(x["updatedTime"]) == t["updated_at"]
            assert x["statusId"] == t["status_id"]
            closed = x.get("closedTime")
            assert (parse_time(closed) if closed not in (None, "", "null", "null,") else None) == t[
                "closed_at"
            ]
            assert (x["assignedManagerId"] or None) == t["assigned_manager_id"]


def test_every_status_and_assignment_change_has_an_activity(sim: Simulator) -> None:
    acts = sim.truth.activities()
    by_object: dict[int, list[dict]] = {}
    for a in acts:
        by_object.setdefault(a["object_id"], []).append(a)
    for o in sim.truth.objects():
        changes = [a for a in by_object.get(o["object_id"], []) if a["activity_type"] == 2]
        last_status = changes[-1]["data"]["newStatus"] if changes else 1
        assert last_status == o["status_id"]
        assigns = [a for a in by_object.get(o["object_id"], []) if a["activity_type"] == 6]
        assert (assigns[-1]["data"]["newManagerId"] if assigns else 0) == (o["assigned_manager_id"] or 0)
    served = get(sim, f"/objects/{acts[0]['object_id']}/activities", activityType=2).json()["data"]
    assert all(x["type"] == 2 and set(json.loads(x["data"])) == {"oldStatus", "newStatus"} for x in served)


def test_same_seed_gives_byte_identical_responses(sim_factory) -> None:
    a = sim_factory(seed=11, clock_running=False)
    b = sim_factory(seed=11, clock_running=False)
    c = sim_factory(seed=12, clock_running=False)
    s = stream_ids(a)[0]
    o = a.truth.objects()[5]
    paths = [
        f"/streams/{s}/objects?unixStartTime=0&unixEndTime=4102444800&includeChilds=true&includeActivityLog=true",
        f"/streams/{o['stream_id']}/objects/{o['object_id']}?includeChilds=true",
        f"/streams/{o['stream_id']}/objects/{o['object_id']}/transcript",
        f"/objects/{o['object_id']}/activities",
        "/managers",
        f"/users/{o['user_id']}",
    ]
    for p in paths:
        assert get(a, p).content == get(b, p).content, p
    assert get(a, paths[0]).content != get(c, paths[0]).content


def test_mutations_show_through_an_updated_window_and_in_truth(sim: Simulator) -> None:
    before = int(sim.clock.now().timestamp())
    sim.clock.advance(600)
    touched = sim.mutate(new=5, messages=10, status_changes=5, closures=3, reassignments=3, reopen=2)
    assert len(touched["new"]) == 5 and len(touched["messages"]) == 10
    after = int(sim.clock.now().timestamp()) + 2
    changed: set[int] = set()
    for s in stream_ids(sim):
        changed |= {
            oid(x) for x in list_all(sim, s, unixStartTime=before, unixEndTime=after, timeFilter="updated")
        }
    all_touched = {i for ids in touched.values() for i in ids}
    assert changed == all_touched
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    assert all(truth[i]["updated_at"].timestamp() >= before for i in all_touched)
    assert all(truth[i]["status_id"] == 2 for i in touched["closures"])
    assert all(truth[i]["status_id"] == 1 and truth[i]["closed_at"] is None for i in touched["reopen"])


def test_backdated_mutation_lands_before_now(sim: Simulator) -> None:
    now = sim.clock.now()
    touched = sim.mutate(messages=3, backdate_seconds=7200)
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    for i in touched["messages"]:
        assert truth[i]["updated_at"] < now - timedelta(minutes=100)


# ---------------------------------------------------------------------- quirks
def test_every_quirk_shows_in_a_small_sample(sim: Simulator) -> None:
    objs = sim.truth.objects()[:200]
    lists = [x for s in stream_ids(sim) for x in list_all(sim, s, includeChilds="true", **whole_history(sim))]
    lists = [x for x in lists if oid(x) in {o["object_id"] for o in objs}]
    singles = [
        get(sim, f"/streams/{o['stream_id']}/objects/{o['object_id']}", includeChilds="true").json()["data"][
            0
        ]
        for o in objs
    ]
    users = [get(sim, f"/users/{o['user_id']}").json()["data"] for o in objs[:60]]
    blob = json.dumps(lists)
    assert any("id" in x and "streamid" in x for x in lists) and any("objectId" in x for x in lists)
    assert all("closeTime" in x and "streamid" in x for x in singles)
    assert any("childs" in x["user"] for x in singles) and any("childs" in x for x in singles)
    assert any(isinstance(x["childs"], dict) for x in lists)
    assert any(x["userStreamProviderType"] in ("4", "5", "7", "8") for x in lists)
    assert any(
        isinstance(x["user"].get("phone1"), int) for x in lists if "user" in x and "phone1" in x["user"]
    )
    assert any(isinstance(u["id"], str) and u["id"].endswith(",") for u in users)
    for spelling in ('"null,"', '"null"', '""', "null"):
        assert spelling in blob
    assert '\\"isConnected\\"true' in blob or '"isConnected"true' in blob
    assert any(
        x["content"].startswith('{"')
        and x["content"].rstrip().endswith("}")
        and x["content"].startswith('{"{')
        for x in lists
    )
    assert "&nbsp;" in blob and "<br>" in blob and "<strong>From: </strong>" in blob
    assert all(TIME_RE.match(x["createdTime"]) for x in lists)


def test_quirks_off_serves_clean_canonical_shapes(sim_factory) -> None:
    sim = sim_factory(quirks=False)
    objs = [x for s in stream_ids(sim) for x in list_all(sim, s, includeChilds="true", **whole_history(sim))]
    o = sim.truth.objects()[0]
    single = get(sim, f"/streams/{o['stream_id']}/objects/{o['object_id']}", includeChilds="true").json()[
        "data"
    ][0]
    blob = json.dumps([objs, single])
    assert all(
        "objectId" in x and "streamId" in x and "substreamId" in x and "closedTime" in x
        for x in [*objs, single]
    )
    assert all(isinstance(x["childs"], list) for x in [*objs, single])
    assert all(
        isinstance(x["userStreamProviderType"], int) and isinstance(x["user_identity"], int)
        for x in [*objs, single]
    )
    assert '"null"' not in blob and '"null,"' not in blob and "&nbsp;" not in blob
    acts = get(sim, f"/objects/{o['object_id']}/activities").json()
    assert acts["status"] == 200 and all(isinstance(a["objectId"], int) for a in acts["data"])


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_each_quirk_can_be_switched_off_alone(quirk: str) -> None:
    cfg = SimConfig(conversations=50, quirks_off=frozenset({quirk}))
    assert not cfg.quirk(quirk) and all(cfg.quirk(q) for q in QUIRKS if q != quirk)


# ---------------------------------------------------------------------- live account surfaces
def test_admin_endpoints_drive_the_simulator_and_are_not_counted(sim: Simulator) -> None:
    sim.reset_stats()
    start = sim.clock.now()
    assert requests.post(sim.base_url + "/_sim/advance?seconds=3600", timeout=10).status_code == 200
    assert sim.clock.now() - start >= timedelta(hours=1)
    touched = requests.post(sim.base_url + "/_sim/mutate", json={"new": 2}, timeout=10).json()
    assert len(touched["new"]) == 2
    requests.post(sim.base_url + "/_sim/configure", json={"window_cap": True}, timeout=10).raise_for_status()
    assert sim.config.window_cap
    truth = requests.get(sim.base_url + "/_sim/truth/objects", timeout=10).json()
    assert len(truth) == len(sim.truth.objects())
    assert requests.get(sim.base_url + "/_sim/stats", timeout=10).json()["total_requests"] == 0


def test_availability_follows_business_hours(sim_factory) -> None:
    sim = sim_factory(end="2024-03-27T15:00:00Z", clock_running=False)  # a Wednesday, 11:00 in New York
    mail = next(s for s in sim.truth.streams() if s["provider_type"] == 4)  # New York, 09:00-17:00

    def state() -> int:
        return get(sim, f"/streams/{mail['stream_id']}/streamavailability/true").json()["data"]["state"]

    holiday = sim.clock.now().date() in mail["holidays"]
    assert state() == 3 if holiday else state() in (1, 2)
    sim.clock.advance(9 * 3600)  # 20:00 in New York
    assert state() == 3


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "url"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.commbox_sim",
            "--port",
            "0",
            "--conversations",
            "100",
            "--profile",
            "docs",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        assert "demo-key" in line and ready.read_text().strip() == url
        r = requests.get(url + "/core/systemstatus", headers={"Authorization": "Bearer demo-key"}, timeout=10)
        assert r.status_code == 200 and "data" not in r.json()  # the docs profile leaves out a null data
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_clock_starts_at_end_and_advances(sim: Simulator) -> None:
    assert sim.clock.now() >= datetime(2024, 3, 31, tzinfo=UTC)
    t = sim.clock.now()
    sim.clock.advance(86_400)
    assert sim.clock.now() - t >= timedelta(days=1)


@pytest.mark.parametrize("conversations", [50, 51, 120])
def test_small_accounts_serve_every_conversation(sim_factory, conversations: int) -> None:
    sim = sim_factory(conversations=conversations, seed=3)
    served = sum(len(list_all(sim, s, includeChilds="true", **whole_history(sim))) for s in stream_ids(sim))
    assert served == len(sim.truth.objects())


# ---------------------------------------------------------------------- profiles
def test_a_profile_is_a_preset_that_explicit_switches_override() -> None:
    plain = SimConfig()
    assert (plain.profile, plain.documented_keys, plain.list_child_sender, plain.omit_nulls) == (
        "default",
        False,
        True,
        False,
    )
    docs = SimConfig.from_profile("docs", conversations=300, seed=3)
    assert docs == SimConfig(profile="docs", conversations=300, seed=3)
    assert (docs.documented_keys, docs.list_child_sender, docs.omit_nulls, docs.documented_status) == (
        True,
        False,
        True,
        True,
    )
    # an explicit switch wins even when it spells the plain default
    assert SimConfig.from_profile("docs", omit_nulls=False).omit_nulls is False
    lenient = SimConfig.from_profile("lenient-paging")
    assert lenient.lenient_page_numbers and lenient.page_base == 1 and not lenient.omit_nulls
    # a new profile at runtime re-applies its preset; switches given with it still win
    back = docs.replace(profile="default")
    assert (back.documented_keys, back.list_child_sender) == (False, True)
    assert docs.replace(profile="default", omit_nulls=True).omit_nulls is True
    with pytest.raises(ValueError, match="unknown profile 'strict'"):
        SimConfig.from_profile("strict")


def test_cli_profile_flag_and_overrides() -> None:
    from pipelines.commbox_sim.cli import build_parser, config_from_args

    def parse(*argv: str) -> SimConfig:
        return config_from_args(build_parser().parse_args(list(argv)))

    assert parse() == SimConfig()
    assert parse("--profile", "docs") == SimConfig.from_profile("docs")
    cfg = parse("--profile", "docs", "--no-omit-nulls", "--list-child-sender", "--omit-response-time")
    assert (cfg.documented_keys, cfg.omit_nulls, cfg.list_child_sender, cfg.omit_response_time) == (
        True,
        False,
        True,
        True,
    )
    cfg = parse(
        "--profile", "lenient-paging", "--page-overlap", "5", "--unpageable", "--crowded-seconds", "2"
    )
    assert (cfg.lenient_page_numbers, cfg.page_overlap, cfg.unpageable, cfg.crowded_seconds) == (
        True,
        5,
        True,
        2,
    )


# ---------------------------------------------------------------------- documented shapes
def test_docs_list_childs_carry_no_sender_and_get_object_keeps_it(sim_factory) -> None:
    sim = sim_factory(profile="docs")
    truth = {c["child_id"]: c for c in sim.truth.childs()}
    listed = [
        x for s in stream_ids(sim) for x in list_all(sim, s, includeChilds="true", **whole_history(sim))
    ]
    childs = [c for x in listed for c in (x["childs"] if isinstance(x["childs"], list) else [x["childs"]])]
    assert len(childs) == len(truth)
    assert all(not {"user", "isManager", "managerId"} & set(c) for c in childs)
    for o in sim.truth.objects()[:60]:
        data = get(sim, f"/streams/{o['stream_id']}/objects/{o['object_id']}", includeChilds="true").json()[
            "data"
        ]
        served = data[0]["user"]["childs"]
        for c in served if isinstance(served, list) else [served]:
            assert c["user"]["isManager"] is truth[c["id"]]["is_manager"]
            assert (c["user"]["managerId"] or None) == truth[c["id"]]["manager_id"]


@pytest.mark.parametrize(
    ("switches", "sender"),
    [({}, True), ({"list_child_sender": False}, False), ({"documented_keys": True}, False)],
)
def test_list_child_sender_switch_and_documented_keys_each_decide_the_list_child(
    sim_factory, switches: dict, sender: bool
) -> None:
    sim = sim_factory(**switches)
    items = list_all(sim, stream_ids(sim)[0], includeChilds="true", **whole_history(sim))
    childs = [c for x in items for c in (x["childs"] if isinstance(x["childs"], list) else [x["childs"]])]
    assert childs and all(("user" in c) is sender for c in childs)


def test_omit_nulls_leaves_out_null_fields_and_a_null_data(sim_factory) -> None:
    sim = sim_factory(omit_nulls=True)
    status = get(sim, "/core/systemstatus").json()
    assert set(status) == {"status", "description", "response_time"}
    error = get(sim, "/users/1").json()
    assert error["status"] == 404 and "data" not in error
    o = sim.truth.objects()[0]
    payloads = [
        get(sim, f"/streams/{o['stream_id']}/objects", includeChilds="true", **whole_history(sim)).json(),
        get(sim, f"/users/{o['user_id']}").json(),
        get(sim, "/managers").json(),
    ]
    assert not has_null(payloads)
    sim.configure(omit_nulls=False)  # the same account with nulls: they were there to leave out
    assert get(sim, "/core/systemstatus").json()["data"] is None
    assert has_null(get(sim, "/managers").json())


def test_omit_response_time_and_documented_status(sim_factory) -> None:
    sim = sim_factory(omit_response_time=True, documented_status=True)
    o = sim.truth.objects()[0]
    envelopes = {
        p: get(sim, p).json() for p in ("/managers", "/core/systemstatus", "/stats/streams", "/users/1")
    }
    envelopes["activities"] = get(sim, f"/objects/{o['object_id']}/activities").json()
    assert all("response_time" not in e for e in envelopes.values())
    assert envelopes.pop("activities")["status"] == "200"
    assert {type(e["status"]) for e in envelopes.values()} == {int}


def test_a_shape_switch_at_runtime_is_served_at_once_both_ways(sim_factory) -> None:
    """List pages come from the render cache; a cached page must never outlive its shape."""
    sim = sim_factory(quirks=False, clock_running=False)
    path, params = f"/streams/{stream_ids(sim)[0]}/objects", {"includeChilds": "true", **whole_history(sim)}
    before = get(sim, path, **params).content
    sim.configure(profile="docs")
    docs = get(sim, path, **params).json()["data"]
    assert all("user" not in c for x in docs for c in x["childs"]) and not has_null(docs)
    sim.configure(profile="default")
    assert get(sim, path, **params).content == before


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_served_objects_and_childs_match_the_truth_in_every_profile(sim_factory, profile: str) -> None:
    sim = sim_factory(profile=profile, crowded_seconds=1)
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    by_object: dict[int, list[dict]] = {}
    for c in sim.truth.childs():
        by_object.setdefault(c["object_id"], []).append(c)
    served = [
        x for s in stream_ids(sim) for x in list_all(sim, s, includeChilds="true", **whole_history(sim))
    ]
    assert sorted(oid(x) for x in served) == sorted(truth)
    for x in served:
        t = truth[oid(x)]
        assert parse_time(x["updatedTime"]) == t["updated_at"] and x["statusId"] == t["status_id"]
        closed = x.get("closedTime")
        assert (parse_time(closed) if closed not in (None, "", "null", "null,") else None) == t["closed_at"]
        first = x.get("firstResponseTime")
        assert (parse_time(first) if first not in (None, "", "null", "null,") else None) == t[
            "first_response_at"
        ]
        childs = x["childs"] if isinstance(x["childs"], list) else [x["childs"]]
        expected = sorted(by_object[oid(x)], key=lambda c: c["created_at"], reverse=True)
        assert [c["id"] for c in childs] == [c["child_id"] for c in expected]


# ---------------------------------------------------------------------- lenient, overlapping and unpageable lists
def page(sim: Simulator, s: int, number: int | None, **params: Any) -> list[int]:
    if number is not None:
        params["pageNumber"] = number
    r = get(sim, f"/streams/{s}/objects", pageSize=20, **whole_history(sim), **params)
    assert r.status_code == 200, r.text
    return [oid(x) for x in r.json()["data"]]


def test_lenient_paging_answers_page_zero_and_below_as_page_one(sim_factory) -> None:
    sim = sim_factory(profile="lenient-paging")
    s = stream_ids(sim)[0]
    first = page(sim, s, 1)
    assert page(sim, s, 0) == first and page(sim, s, -3) == first and page(sim, s, None) == first
    assert page(sim, s, 2) and not set(page(sim, s, 2)) & set(first)
    assert get(sim, f"/streams/{s}/objects", pageNumber=0, **whole_history(sim)).status_code == 200
    strict = sim_factory()
    assert get(strict, f"/streams/{s}/objects", pageNumber=0, **whole_history(strict)).status_code == 400


@pytest.mark.parametrize("page_base", [0, 1])
def test_page_overlap_makes_consecutive_pages_share_items(sim_factory, page_base: int) -> None:
    sim = sim_factory(page_base=page_base, page_overlap=5)
    s = stream_ids(sim)[0]
    expected = [oid(x) for x in list_all(sim_factory(page_base=page_base), s, **whole_history(sim))]
    pages = []
    n = page_base
    while got := page(sim, s, n):
        pages.append(got)
        n += 1
    assert all(a[-5:][: len(b)] == b[:5] for a, b in itertools.pairwise(pages))
    assert len(pages) >= 3
    assert list(dict.fromkeys(i for p in pages for i in p)) == expected


def test_unpageable_list_ignores_page_number_and_status_but_sorts(sim_factory) -> None:
    sim = sim_factory(unpageable=True)
    s = stream_ids(sim)[0]
    first = page(sim, s, 1)
    assert page(sim, s, 2) == first and page(sim, s, 7) == first
    assert page(sim, s, 1, status="2") == first  # every status, whatever is asked
    assert {o["status_id"] for o in sim.truth.objects() if o["object_id"] in first} != {2}
    oldest = page(sim, s, 1, sort="asc")
    created = {o["object_id"]: o["created_at"] for o in sim.truth.objects()}
    assert not set(oldest) & set(first)
    assert max(created[i] for i in oldest) < min(created[i] for i in first)


# ---------------------------------------------------------------------- bulk changes and crowded seconds
def _one_second(stamp: datetime) -> datetime:
    return stamp.replace(microsecond=0)


def test_bulk_change_lands_in_one_second_with_mixed_changes_and_exact_truth(sim_factory) -> None:
    sim = sim_factory(clock_running=False)
    sim.clock.advance(600)
    before = {o["object_id"]: o for o in sim.truth.objects()}
    acts_before = len(sim.truth.activities())
    touched = sim.mutate(bulk=60, bulk_streams=2, backdate_seconds=30)
    ids = touched["bulk"]
    assert len(ids) == len(set(ids)) == 60
    assert all(not v for k, v in touched.items() if k != "bulk")
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    second = _one_second(sim.clock.now() - timedelta(seconds=30))
    assert {_one_second(truth[i]["updated_at"]) for i in ids} == {second}
    assert len({truth[i]["stream_id"] for i in ids}) == 2
    assert len({truth[i]["status_id"] for i in ids}) >= 3  # mixed: open, in process, pending, resolved
    assert any(truth[i]["status_id"] == 2 and truth[i]["closed_at"] for i in ids)
    assert any(truth[i]["assigned_manager_id"] != before[i]["assigned_manager_id"] for i in ids)
    assert any(truth[i]["num_childs"] > before[i]["num_childs"] for i in ids)
    assert len(sim.truth.activities()) > acts_before
    # nothing else moved, and the API agrees: the second holds exactly these conversations
    assert all(truth[i] == before[i] for i in before if i not in set(ids))
    lo = int(second.timestamp())
    served = {
        oid(x)
        for s in stream_ids(sim)
        for x in list_all(sim, s, unixStartTime=lo, unixEndTime=lo + 1, timeFilter="updated", pageSize=25)
    }
    assert served == set(ids)
    # the senders of the new messages, as Get Object serves them, are the truth's
    childs = {c["child_id"]: c for c in sim.truth.childs()}
    for i in ids[:20]:
        data = get(sim, f"/streams/{truth[i]['stream_id']}/objects/{i}", includeChilds="true").json()["data"][
            0
        ]
        served_childs = data.get("childs", data["user"].get("childs"))
        for c in served_childs if isinstance(served_childs, list) else [served_childs]:
            assert c["user"]["isManager"] is childs[c["id"]]["is_manager"]
            assert (c["user"]["managerId"] or None) == childs[c["id"]]["manager_id"]


def test_bulk_spreads_over_every_stream_by_default_and_refuses_a_bad_count(sim_factory) -> None:
    sim = sim_factory(clock_running=False)
    ids = sim.mutate(bulk=40)["bulk"]
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    assert len(ids) == 40 and {truth[i]["stream_id"] for i in ids} == set(stream_ids(sim))
    assert len({_one_second(truth[i]["updated_at"]) for i in ids}) == 1
    with pytest.raises(ValueError, match="bulk_streams"):
        sim.mutate(bulk=5, bulk_streams=9)
    r = requests.post(sim.base_url + "/_sim/mutate", json={"bulk": 10, "bulk_streams": 1}, timeout=10)
    assert len(r.json()["bulk"]) == 10


def _crowded(sim: Simulator) -> dict[tuple[datetime, int], int]:
    counts: dict[tuple[datetime, int], int] = {}
    for o in sim.truth.objects():
        key = (_one_second(o["updated_at"]), o["stream_id"])
        counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if n >= 10}


def test_generated_history_has_crowded_seconds_only_when_asked(sim_factory) -> None:
    assert _crowded(sim_factory(conversations=1500)) == {}
    sim = sim_factory(conversations=1500, crowded_seconds=3, crowded_size=40)
    crowded = _crowded(sim)
    assert sorted(crowded.values()) == [40, 40, 40]
    assert len({stream for _, stream in crowded}) == 3  # each on its own stream, rotating
    (second, stream), _n = next(iter(crowded.items()))
    lo = int(second.timestamp())
    served = list_all(sim, stream, unixStartTime=lo, unixEndTime=lo + 1, timeFilter="updated", pageSize=15)
    assert len(served) == 40 and len({x["statusId"] for x in served}) >= 2


# ---------------------------------------------------------------------- the profiles page
PROFILES_PAGE = Path(__file__).resolve().parents[1] / "docs/simulator-profiles.md"


def test_profiles_page_commands_flags_switches_and_code_all_work() -> None:
    import dataclasses
    import shlex

    from pipelines.commbox_sim.cli import build_parser, config_from_args

    text = PROFILES_PAGE.read_text()
    parser = build_parser()
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
        if line.strip()
    ]
    assert commands
    for line in commands:
        prefix = next(
            p for p in ("python -m pipelines.commbox_sim", "commbox-etl simulate") if line.startswith(p)
        )
        config_from_args(parser.parse_args(shlex.split(line[len(prefix) :])))
    flags = {s for action in parser._actions for s in action.option_strings}
    assert set(re.findall(r"(--[a-z][a-z0-9-]+)", text)) <= flags
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    switches = text[text.index("## Switches") : text.index("## Bulk")]
    shown = set(re.findall(r"^\| `([a-z_]+)` \|", switches, re.MULTILINE))
    new = {
        "profile", "documented_keys", "list_child_sender", "omit_nulls", "documented_status",
        "omit_response_time", "lenient_page_numbers", "page_overlap", "unpageable",
        "crowded_seconds", "crowded_size",
    }  # fmt: skip
    assert shown <= fields and new <= shown
    assert {p for p in PROFILES} <= set(re.findall(r"^\| `([a-z-]+)` \|", text, re.MULTILINE))
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        exec(block, namespace)  # the page's own examples, run as written
    assert len(namespace["touched"]["bulk"]) == 150
