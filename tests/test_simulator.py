"""The CommBox simulator over real HTTP: vendor contract, paging/window semantics, determinism, truth."""

from __future__ import annotations

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

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared/reference/commbox-openapi.json"
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
def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _missing(spec: dict, schema: dict, values: list[Any], path: str) -> list[str]:
    """Paths of example keys that no served value carries (union over the sample, per oneOf variant)."""
    schema = _resolve(spec, schema)
    if "oneOf" in schema:
        return [m for variant in schema["oneOf"] for m in _missing(spec, variant, values, path)]
    if "items" in schema:
        flat: list[Any] = []
        for v in values:
            flat.extend(v if isinstance(v, list) else [v])
        return _missing(spec, schema["items"], flat, path + "[]")
    missing = []
    dicts = [v for v in values if isinstance(v, dict)]
    for key, sub in schema.get("properties", {}).items():
        present = [d[key] for d in dicts if key in d]
        if not present:
            missing.append(f"{path}.{key}")
            continue
        sub = _resolve(spec, sub)
        if "properties" in sub or "items" in sub or "oneOf" in sub:
            missing.extend(_missing(spec, sub, present, f"{path}.{key}"))
    return missing


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC_PATH.exists():
        pytest.skip(f"vendor spec not found at {SPEC_PATH}")
    return json.loads(SPEC_PATH.read_text())


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


@pytest.mark.parametrize("endpoint", CONTRACT_ENDPOINTS)
def test_served_keys_cover_the_vendor_example(sim: Simulator, spec: dict, endpoint: str) -> None:
    schema = spec["paths"][endpoint]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    envelopes = _sample(sim, endpoint)
    assert all(set(e) == {"status", "description", "response_time", "data"} for e in envelopes)
    assert _missing(spec, schema, envelopes, "") == []


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
        assert r.status_code == 200
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
