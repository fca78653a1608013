"""HTTP faults and bad payloads against the oracle: 429 storms, 5xx bursts, a page failing for good,
broken transfers, and every kind of damaged response the suite can produce."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from random import Random
from typing import Any

import orjson
import pytest

from pipelines.commbox.client import ApiError
from pipelines.commbox_sim.config import BAD_PAYLOADS
from pipelines.ops.runner import run_pipeline
from tests.fixtures.faults_harness import Cli, Warehouse, cursors, oracle
from tests.helpers import load, make_test_pipeline, source_settings

pytestmark = pytest.mark.faults

LIST_CALLS = r"/streams/\d+/objects\?"
NO_FAN_OUT = {"include_transcripts": False, "activity_types": []}


def warehouse_of(tmp_path) -> Warehouse:
    return Warehouse("duckdb", str(tmp_path / "warehouse.duckdb"))


def check(faults_report, request, warehouse, sim, **kwargs):
    verdict = oracle(warehouse, sim, **kwargs)
    faults_report.verdict(request.node.nodeid, verdict)
    assert not verdict.bad, verdict.bad
    return verdict


def sim_faults(sim) -> Counter[str]:
    stats = sim.stats()
    faults = Counter(stats["faults"])
    if stats["throttled"]:
        faults["http_429"] = stats["throttled"]
    return faults


# --------------------------------------------------------------------------- 4. throttling


def record_throttling(sim) -> list[tuple[float, int | None]]:
    """(arrival time, Retry-After or None) of every request the simulator sees."""
    seen: list[tuple[float, int | None]] = []
    original = sim.faults.throttle
    lock = threading.Lock()

    def throttle() -> int | None:
        answer = original()
        with lock:
            seen.append((time.monotonic(), answer))
        return answer

    sim.faults.throttle = throttle
    return seen


def test_429_storms_are_survived_and_retry_after_obeyed(canary_sim, tmp_path, faults_report, request):
    """Scenario 4: a token bucket far below the client's pace; every worker waits out Retry-After."""
    sim = canary_sim(rate_limit_rps=50, rate_limit_burst=10, conversations=60)
    arrivals = record_throttling(sim)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, activity_types=[])
    throttled = [(at, wait) for at, wait in arrivals if wait is not None]
    assert throttled, "the storm never happened"
    # Nothing may arrive while a Retry-After is running, beyond requests already on the wire.
    early = [
        at
        for at, _ in arrivals
        if any(t + 0.3 < at < t + wait - 0.05 for t, wait in throttled if wait is not None)
    ]
    faults_report.fault("http_429 (Retry-After obeyed)", len(throttled), not early)
    assert early == [], f"{len(early)} requests arrived during a Retry-After"
    assert summary.throttled == len(throttled)
    check(faults_report, request, warehouse_of(tmp_path), sim)


def test_retry_after_too_long_and_quota_exhausted_fail_loudly(canary_sim, tmp_path, faults_report, request):
    """Scenario 4: a Retry-After beyond max_retry_wait_seconds, then a whole run on an exhausted quota:
    both exit non-zero with the reason and leave the state alone; the next run is complete."""
    sim = canary_sim()
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim)
    assert cli.run().returncode == 0
    state = cli.warehouse.stored_state()
    sim.mutate(new=5, messages=8, closures=3)
    sim.clock.advance(600)

    sim.configure(rate_limit_rps=1, rate_limit_burst=15, retry_after_override=600)
    storm = cli.run()
    faults_report.fault(
        "http_429 Retry-After 600s > max wait", sim.stats()["throttled"], storm.returncode == 1
    )
    assert storm.returncode == 1, storm.output
    assert "asked to wait 600s" in storm.stderr and "max_retry_wait_seconds=30" in storm.stderr
    assert cli.warehouse.stored_state()["_state_version"] == state["_state_version"]
    check(faults_report, request, cli.warehouse, sim, complete=False, previous_state=state)

    sim.reset_stats()
    sim.configure(rate_limit_rps=0, retry_after_override=None, quota_exhausted=True)
    exhausted = cli.run()
    faults_report.fault("quota exhausted (whole run)", sim.stats()["throttled"], exhausted.returncode == 1)
    assert exhausted.returncode == 1, exhausted.output
    assert "429" in exhausted.stderr or "asked to wait" in exhausted.stderr
    assert cli.warehouse.stored_state()["_state_version"] == state["_state_version"]

    sim.configure(quota_exhausted=False)
    assert cli.run().returncode == 0
    check(faults_report, request, cli.warehouse, sim, previous_state=state)


# --------------------------------------------------------------------------- 5. server errors


def test_bursts_of_5xx_are_survived(canary_sim, tmp_path, faults_report, request):
    sim = canary_sim(fault_5xx_rate=0.1, fault_seed=5, conversations=100)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, max_retry_wait_seconds=1, activity_types=[])
    injected = sim_faults(sim)
    for kind in ("http_500", "http_502", "http_503"):
        assert injected[kind], kind
        faults_report.fault(kind, injected[kind], True)
    assert any(key.startswith("http retry: HTTP 5") for key in summary.warnings)
    check(faults_report, request, warehouse_of(tmp_path), sim)


def test_one_page_failing_for_good(canary_sim, tmp_path, faults_report, request):
    """Scenario 5: one list window always 500: non-zero exit, no cursor past it; then complete."""
    sim = canary_sim()
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim, extra_env={"SOURCES__COMMBOX__MAX_RETRY_WAIT_SECONDS": "1"})
    assert cli.run().returncode == 0
    state = cli.warehouse.stored_state()
    stream, cursor = sorted(cursors(state).items())[1]
    sim.mutate(new=6, messages=8, status_changes=5)
    sim.clock.advance(600)
    # The first window the next run reads on that stream: from its cursor minus the lookback.
    sim.configure(fail_path_regex=rf"^/streams/{stream}/objects\?unixStartTime={cursor - 3600}&")
    failed = cli.run()
    injected = sim_faults(sim)["http_500"]
    faults_report.fault("http_500 on one page, permanently", injected, failed.returncode == 1)
    assert failed.returncode == 1 and injected >= 1, failed.output
    assert f"/streams/{stream}/objects" in failed.stderr
    assert cursors(cli.warehouse.stored_state()) == cursors(state)
    check(faults_report, request, cli.warehouse, sim, complete=False, previous_state=state)

    sim.configure(fail_path_regex=None)
    assert cli.run().returncode == 0
    check(faults_report, request, cli.warehouse, sim, previous_state=state)


# --------------------------------------------------------------------------- 6. broken transfers


def test_resets_truncation_and_slow_bodies_are_retried(canary_sim, tmp_path, faults_report, request):
    """Scenario 6: every broken transfer is retried; slow bodies cost at most the request timeout."""
    sim = canary_sim(
        fault_reset_rate=0.04,
        fault_truncate_rate=0.04,
        fault_slow_body_rate=0.02,
        slow_body_seconds=4,
        fault_seed=11,
        conversations=60,
    )
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, request_timeout_seconds=1, max_retry_wait_seconds=1, activity_types=[])
    injected = sim_faults(sim)
    retries = sum(count for key, count in summary.warnings.items() if key.startswith("http retry: "))
    for kind in ("reset", "truncate", "slow"):
        assert injected[kind], kind
        faults_report.fault(kind, injected[kind], True)
    # Bounded: one retry per broken transfer, no retry storms (the slow ones timed out, not waited out).
    assert retries <= sum(injected.values()) + 2, (retries, injected)
    assert summary.warnings.get("http retry: timeout", 0) >= 1
    check(faults_report, request, warehouse_of(tmp_path), sim)


# --------------------------------------------------------------------------- 7. bad payloads


def _rewrite(transform: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    def apply(body: bytes) -> bytes:
        return orjson.dumps(transform(orjson.loads(body)))

    return apply


def _set_data(value: Any) -> Callable[[bytes], bytes]:
    return _rewrite(lambda envelope: {**envelope, "data": value})


def _items(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def transform(envelope: Any) -> Any:
        for item in envelope.get("data") or []:
            if isinstance(item, dict):
                change(item)
        return envelope

    return _rewrite(transform)


def _nul_in_text(item: dict[str, Any]) -> None:
    item["message"] = f"before\x00after {item.get('message') or ''}"
    for child in item.get("childs") or []:
        if isinstance(child, dict):
            child["message"] = f"\x00{child.get('message') or ''}"


def _huge_ids(body: bytes) -> bytes:
    # JSON has no integer limit but orjson does: write the digits into the text itself.
    return re.sub(rb'"(objectId|id)":(\d+)', rb'"\1":18446744073709551616\2', body)


def _future(item: dict[str, Any]) -> None:
    item["updatedTime"] = "9999-12-31T23:59:59.0000000Z"


# Damage the simulator does not make itself, applied to list responses by the test.
EXTRA_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "data_object": _set_data({"error": "temporarily unavailable"}),
    "data_string": _set_data("Service temporarily unavailable"),
    "error_envelope_200": _rewrite(lambda envelope: {**envelope, "status": 500, "data": None}),
    "no_envelope": _rewrite(lambda envelope: envelope.get("data")),
    "non_object_items": _rewrite(lambda envelope: {**envelope, "data": [*envelope["data"], 42, None, "x"]}),
    "nul_in_text": _items(_nul_in_text),
    "id_beyond_bigint": _huge_ids,
    "updated_in_year_9999": _items(_future),
}


def damage_list_responses(sim, kind: str, rate: float, seed: int = 2) -> Counter[str]:
    """Wrap the simulator's reply builder so that a share of list responses is damaged."""
    injected: Counter[str] = Counter()
    original = sim.api._ok
    rng = Random(seed)
    previous: list[Any] = []

    def ok(route: str, path: str, data: bytes, bad: str | None) -> Any:
        reply = original(route, path, data, bad)
        if route != "objects":
            return reply
        if kind == "inserted_while_paging":
            if not injected:
                injected[kind] += len(sim.mutate(new=4, backdate_seconds=900)["new"])
            return reply
        if kind == "same_conversation_twice":
            envelope = orjson.loads(reply.body)
            items = envelope.get("data") or []
            if previous and rng.random() < rate:
                injected[kind] += 1
                reply.body = orjson.dumps({**envelope, "data": [*items, previous[0]]})
            previous[:] = items or previous
            return reply
        if rng.random() < rate:
            injected[kind] += 1
            reply.body = EXTRA_DAMAGE[kind](reply.body)
        return reply

    sim.api._ok = ok
    return injected


SIM_DAMAGE = BAD_PAYLOADS  # every damage the simulator can inject
KINDS = (*SIM_DAMAGE, "html200", *EXTRA_DAMAGE, "same_conversation_twice", "inserted_while_paging")


def damaged_sim(canary_sim, kind: str, rate: float) -> tuple[Any, Callable[[], int]]:
    if kind in SIM_DAMAGE:
        sim = canary_sim(
            bad_payload=kind, bad_payload_rate=rate, bad_payload_path_regex=LIST_CALLS, fault_seed=3
        )
        return sim, lambda: sum(n for key, n in sim_faults(sim).items() if key.startswith("bad_payload_"))
    if kind == "html200":
        sim = canary_sim(fault_html200_rate=rate, fault_seed=3)
        return sim, lambda: sim_faults(sim)["html200"]
    sim = canary_sim()
    injected = damage_list_responses(sim, kind, rate)
    return sim, lambda: sum(injected.values())


def run_damaged(sim, tmp_path) -> tuple[Any, BaseException | None]:
    pipeline = make_test_pipeline(tmp_path)
    sim.clock.advance(600)
    settings = source_settings(sim, max_retry_wait_seconds=1, **NO_FAN_OUT)
    try:
        return run_pipeline(pipeline, build_views=False, source_overrides=settings), None
    except Exception as error:  # the run failing loudly is one of the two allowed outcomes
        return None, error


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_responses_now_and_then_are_handled(canary_sim, tmp_path, faults_report, request, kind):
    """Scenario 7: a fifth of the list responses damaged. Each kind is re-read, repaired or kept raw,
    and counted in a warning; the load is complete either way."""
    sim, injected = damaged_sim(canary_sim, kind, 0.15)
    summary, error = run_damaged(sim, tmp_path)
    handled = error is None and (bool(summary.warnings) or kind == "inserted_while_paging")
    how = (
        (", ".join(sorted(summary.warnings)) or ("loaded in the same run" if handled else "not reached"))
        if summary
        else f"failed: {error}"
    )
    faults_report.bad_input(f"{kind} (15%)", how[:150], handled or injected() == 0)
    faults_report.fault(f"bad payload: {kind}", injected(), error is None)
    assert error is None, error
    if kind == "inserted_while_paging":
        # Not damage: conversations that arrive mid-run, inside the range, load in the same run.
        assert injected() == 4
    else:
        assert summary.warnings or injected() == 0, "damage went unnoticed"
    check(faults_report, request, warehouse_of(tmp_path), sim)


PERSISTENT = ("data_null", "missing_id", "wrong_types", "data_string", "id_beyond_bigint", "non_object_items")


@pytest.mark.parametrize("kind", PERSISTENT)
def test_damage_that_persists_fails_loudly_or_is_kept(canary_sim, tmp_path, faults_report, request, kind):
    """Scenario 7: every list response damaged. Never "0 rows and success"; a failure leaves no state."""
    sim, _ = damaged_sim(canary_sim, kind, 1.0)
    summary, error = run_damaged(sim, tmp_path)
    warehouse = warehouse_of(tmp_path)
    if error is not None:
        assert isinstance(error, ApiError) or "refusing to treat it as an empty window" in str(error)
        assert warehouse.stored_state() is None
        faults_report.bad_input(
            f"{kind} (100%)", f"fails loudly: {str(error).strip().splitlines()[-1][-110:]}", True
        )
        check(faults_report, request, warehouse, sim, complete=False)
        return
    faults_report.bad_input(f"{kind} (100%)", "kept: " + ", ".join(sorted(summary.warnings))[:120], True)
    assert summary.warnings
    assert warehouse.count("objects") == len(sim.truth.objects())
    assert warehouse.count("bad_records") >= 1
    check(faults_report, request, warehouse, sim)
