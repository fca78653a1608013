"""Every fault switch of the simulator produces the fault it names, and stats count it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from pipelines.commbox_sim import Simulator

AUTH = {"Authorization": "Bearer demo-key"}


def list_url(sim: Simulator, page: int = 1, size: int = 20) -> str:
    s = sim.truth.streams()[0]["stream_id"]
    return f"{sim.base_url}/streams/{s}/objects?unixStartTime=0&unixEndTime=4102444800&pageSize={size}&pageNumber={page}"


def fetch(url: str) -> requests.Response:
    return requests.get(url, headers=AUTH, timeout=30)


def test_reset_breaks_the_connection_mid_body(sim_factory) -> None:
    sim = sim_factory(fault_reset_rate=1.0)
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        fetch(list_url(sim)).json()
    assert sim.stats()["faults"]["reset"] == 1


def test_truncate_sends_less_than_content_length(sim_factory) -> None:
    sim = sim_factory(fault_truncate_rate=1.0)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)) as info:
        fetch(list_url(sim))
    assert "IncompleteRead" in repr(info.value) or "incomplete" in repr(info.value).lower()
    assert sim.stats()["faults"]["truncate"] == 1


def test_html_page_with_status_200(sim_factory) -> None:
    sim = sim_factory(fault_html200_rate=1.0)
    r = fetch(list_url(sim))
    assert r.status_code == 200 and r.text.lstrip().startswith("<")
    with pytest.raises(ValueError):
        r.json()
    assert sim.stats()["faults"]["html200"] == 1


def test_5xx_rate(sim_factory) -> None:
    sim = sim_factory(fault_5xx_rate=1.0)
    codes = {fetch(list_url(sim)).status_code for _ in range(12)}
    assert codes <= {500, 502, 503} and len(codes) >= 2
    assert sum(v for k, v in sim.stats()["faults"].items() if k.startswith("http_")) == 12


def test_one_page_failing_permanently(sim_factory) -> None:
    sim = sim_factory(fail_path_regex=r"pageNumber=2(&|$)")
    assert fetch(list_url(sim, page=1)).status_code == 200
    assert [fetch(list_url(sim, page=2)).status_code for _ in range(3)] == [500, 500, 500]
    assert fetch(list_url(sim, page=3)).status_code == 200


def test_slow_body_still_arrives_whole(sim_factory) -> None:
    sim = sim_factory(fault_slow_body_rate=1.0, slow_body_seconds=0.3)
    r = fetch(list_url(sim))
    assert r.status_code == 200 and len(r.json()["data"]) == 20
    assert sim.stats()["faults"]["slow"] == 1


def test_latency_does_not_block_other_requests(sim_factory) -> None:
    sim = sim_factory(latency_ms=200, latency_jitter_ms=50)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: fetch(list_url(sim)).status_code, range(16)))
    assert codes == [200] * 16
    assert sim.stats()["requests"]["objects"] == 16


def test_faults_switch_on_and_off_at_runtime(sim: Simulator) -> None:
    sim.configure(fault_html200_rate=1.0)
    assert fetch(list_url(sim)).text.startswith("<")
    sim.configure(fault_html200_rate=0.0)
    assert fetch(list_url(sim)).json()["data"]


def _raw(sim: Simulator, url: str) -> bytes:
    return fetch(url).content


def _check(kind: str, sim: Simulator, body: bytes, size: int) -> None:
    if kind == "invalid_json":
        with pytest.raises(ValueError):
            json.loads(body)
        return
    if kind == "empty_body":
        assert body == b""
        return
    if kind == "invalid_utf8":
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")
        return
    data: Any = json.loads(body)["data"]
    if kind == "data_null":
        assert data is None
    elif kind == "missing_id":
        assert data and all("objectId" not in x and "id" not in x for x in data)
    elif kind == "oversize_page":
        assert len(data) > size
    elif kind == "wrong_types":
        assert all(not isinstance(x.get("objectId", x.get("id")), int) for x in data)
        assert all(isinstance(x["createdTime"], int) for x in data)
    elif kind == "invalid_dates":
        assert all(not x["createdTime"].endswith("Z") or "-13-" in x["createdTime"] for x in data)


@pytest.mark.parametrize(
    "kind",
    [
        "invalid_json",
        "empty_body",
        "data_null",
        "missing_id",
        "oversize_page",
        "wrong_types",
        "invalid_dates",
        "invalid_utf8",
    ],
)
def test_bad_payloads(sim_factory, kind: str) -> None:
    sim = sim_factory(bad_payload=kind, bad_payload_path_regex=r"/objects\?")
    _check(kind, sim, _raw(sim, list_url(sim, size=20)), 20)
    assert fetch(sim.base_url + "/managers").json()["data"]  # other paths untouched
    assert sum(sim.stats()["faults"].values()) == 1


def test_duplicates_across_pages(sim_factory) -> None:
    sim = sim_factory(bad_payload="duplicate_across_pages")
    ids: list[int] = []
    page = 1
    while data := fetch(list_url(sim, page=page)).json()["data"]:
        ids += [x.get("objectId", x.get("id")) for x in data]
        page += 1
    s = sim.truth.streams()[0]["stream_id"]
    expected = {o["object_id"] for o in sim.truth.objects() if o["stream_id"] == s}
    assert len(ids) > len(set(ids)) and set(ids) == expected


def test_bad_payload_rate_is_seeded(sim_factory) -> None:
    runs = []
    for _ in range(2):
        sim = sim_factory(bad_payload="data_null", bad_payload_rate=0.5, fault_seed=4)
        runs.append([fetch(list_url(sim)).json()["data"] is None for _ in range(20)])
    assert runs[0] == runs[1] and 0 < sum(runs[0]) < 20


@pytest.mark.parametrize("profile", ["default", "docs"])
def test_fault_and_throttle_envelopes_follow_the_profile_shape(sim_factory, profile: str) -> None:
    """An account that leaves out null fields leaves out the null ``data`` of its errors too."""
    sim = sim_factory(profile=profile, fault_5xx_rate=1.0, omit_response_time=profile == "docs")
    failed = fetch(list_url(sim))
    sim.configure(fault_5xx_rate=0.0, quota_exhausted=True)
    throttled = fetch(list_url(sim))
    assert failed.status_code >= 500 and throttled.status_code == 429
    for body in (failed.json(), throttled.json()):
        assert ("data" in body) is (profile == "default")
        assert ("response_time" in body) is (profile == "default")
        assert body["status"] in (429, 500, 502, 503)
