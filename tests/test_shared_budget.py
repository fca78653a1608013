"""One request budget shared by every process that reads an account at the same time (issue 16).

Unit tests run two `SharedBudget`s on one file (two processes, as far as the file can tell) on a
fake clock that a sleep moves forward, so rates are counted exactly and nothing waits. The last
tests start real processes against the simulator and count, in the simulator, what they sent in each
second of the wall clock: the configured ceiling holds for all of them together, and a limit nobody
configured is found together with few 429s. No test asserts a wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.commbox import client as client_module
from pipelines.commbox import shared_budget as shared_module
from pipelines.commbox.client import RequestBudget
from pipelines.commbox.config import ConfigError, validate
from pipelines.commbox.shared_budget import SharedBudget, budget_path, shared_budget_for
from tests.fakes import FakeClock

REPO = Path(__file__).resolve().parents[1]


class Listener:
    """A budget's side of the hooks: a fixed pace, and what the other processes' requests met."""

    def __init__(self, pace: float = 0.0, events: int = 0) -> None:
        self.pace = pace
        self.events = events
        self.answers: list[float] = []
        self.pauses: list[tuple[float, float]] = []
        self.starts: list[float] = []

    def record_answer(self, sent_at: float | None = None) -> None:
        assert sent_at is not None
        self.answers.append(sent_at)

    def pause(self, seconds: float, sent_at: float | None = None) -> None:
        assert sent_at is not None
        self.pauses.append((seconds, sent_at))

    def record_start(self, sent_at: float) -> None:
        self.starts.append(sent_at)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(5000.0)
    monkeypatch.setattr(
        client_module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep, time=time.time)
    )
    return fake


def shared(path: Path, clock: FakeClock) -> SharedBudget:
    return SharedBudget(path, clock=clock.monotonic, sleep=clock.sleep)


def budgets(path: Path | None, clock: FakeClock, count: int, rate: float) -> list[RequestBudget]:
    """`count` budgets with `rate` as their ceiling, joined through `path` (None: each alone)."""
    made = []
    for _ in range(count):
        budget = RequestBudget(4, rate)
        if path is not None:
            budget.shared = shared(path, clock)
        made.append(budget)
    return made


def interleaved_starts(members: list[RequestBudget], clock: FakeClock, each: int) -> list[float]:
    """Every member in turn lets a request through, `each` times: when each one went."""
    moments = []
    for _ in range(each):
        for budget in members:
            with budget:
                moments.append(clock.monotonic())
    return moments


def most_in_one_second(moments: list[float]) -> int:
    moments = sorted(moments)
    best, first = 0, 0
    for last, moment in enumerate(moments):
        while moment - moments[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


# ----------------------------------------------------------------------------------- the schedule


def test_the_configured_ceiling_is_the_accounts_total(tmp_path, clock):
    moments = interleaved_starts(budgets(tmp_path / "b.bin", clock, 3, 10.0), clock, 60)
    assert len(moments) == 180
    assert most_in_one_second(moments) <= 10
    assert (len(moments) - 1) / (moments[-1] - moments[0]) <= 10.0 + 1e-9


def test_each_process_alone_would_send_the_ceiling_each(clock):
    # What the shared budget prevents: three processes, three times the ceiling.
    moments = interleaved_starts(budgets(None, clock, 3, 10.0), clock, 60)
    assert most_in_one_second(moments) >= 29


def test_a_429_seen_by_one_process_pauses_every_process(tmp_path, clock):
    first, second = budgets(tmp_path / "b.bin", clock, 2, 50.0)
    with first:
        sent = clock.monotonic()
    first.pause(7.0, sent)
    before = clock.monotonic()
    with second:
        # (a start due within a millisecond goes now, as in RequestBudget)
        assert clock.monotonic() >= before + 7.0 - shared_module.EARLY_SECONDS


def test_a_booked_start_waits_for_a_429_that_came_after_the_booking(tmp_path, clock):
    path = tmp_path / "b.bin"
    one, other = shared(path, clock), shared(path, clock)
    listener = Listener(pace=10.0)
    one.acquire(listener)  # takes the slot now; the next is booked 0.1 s ahead
    real_sleep = one._sleep
    throttles = []

    def sleep_and_throttle(seconds: float) -> None:
        real_sleep(seconds)
        if not throttles:  # a 429 elsewhere while it slept
            throttles.append(clock.monotonic())
            other.throttled(Listener(), 3.0, clock.monotonic())

    one._sleep = sleep_and_throttle
    asked = clock.monotonic()
    started = one.acquire(listener)
    assert throttles and started >= throttles[0] + 3.0 - shared_module.EARLY_SECONDS
    assert throttles[0] > asked


def test_unpaced_members_share_only_the_pause(tmp_path, clock):
    path = tmp_path / "b.bin"
    one, other = shared(path, clock), shared(path, clock)
    free = Listener(pace=0.0)
    starts = [one.acquire(free) for _ in range(50)] + [other.acquire(free) for _ in range(50)]
    assert len(set(starts)) == 1  # no pace: nothing waited


def test_the_account_pace_is_the_median_of_the_live_members(tmp_path, clock):
    path = tmp_path / "b.bin"
    slow, fast, middle = shared(path, clock), shared(path, clock), shared(path, clock)
    slow.acquire(Listener(pace=5.0))
    fast.acquire(Listener(pace=40.0))
    middle.acquire(Listener(pace=20.0))
    assert middle.account_pace == 20.0
    clock.sleep(shared_module.MEMBER_SECONDS + 1)  # the slow and the fast one have gone quiet
    middle.acquire(Listener(pace=20.0))
    assert middle.account_pace == 20.0 and middle.members == 3
    moments = [middle.acquire(Listener(pace=20.0)) for _ in range(41)]
    assert moments[-1] - moments[0] == pytest.approx(2.0)


def test_members_that_saw_more_429s_set_the_pace(tmp_path, clock):
    # One that joined after the first 429s learnt less; it does not drag the schedule.
    path = tmp_path / "b.bin"
    early, late, other = shared(path, clock), shared(path, clock), shared(path, clock)
    early.acquire(Listener(pace=19.0, events=3))
    late.acquire(Listener(pace=12.0, events=1))
    other.acquire(Listener(pace=12.5, events=1))
    assert other.account_pace == 19.0


def test_a_member_that_leaves_no_longer_sets_the_pace(tmp_path, clock):
    path = tmp_path / "b.bin"
    slow, other = shared(path, clock), shared(path, clock)
    slow.acquire(Listener(pace=2.0))
    other.acquire(Listener(pace=2.0))
    slow.close()
    other.acquire(Listener(pace=30.0))
    assert other.account_pace == 30.0


def test_a_learner_that_finished_keeps_its_pace_in_the_median_a_while(tmp_path, clock):
    # 8 processes at 100 req/s learnt 29 to 83 req/s from the same 429s; as the faster ones finished,
    # the last ones left set the schedule alone, at 29 req/s for the last 30 s of the run.
    path = tmp_path / "b.bin"
    slow, fast, faster = shared(path, clock), shared(path, clock), shared(path, clock)
    slow.acquire(Listener(pace=29.0, events=5))
    fast.acquire(Listener(pace=81.0, events=5))
    faster.acquire(Listener(pace=83.0, events=5))
    fast.close()
    faster.close()
    clock.sleep(shared_module.MEMBER_SECONDS + 1)
    slow.acquire(Listener(pace=29.0, events=5))
    assert slow.account_pace == 81.0
    clock.sleep(shared_module.LEFT_SECONDS)  # what they learnt has aged out
    slow.acquire(Listener(pace=29.0, events=5))
    assert slow.account_pace == 29.0


def test_a_finished_member_counts_only_as_informed_as_the_live_ones(tmp_path, clock):
    path = tmp_path / "b.bin"
    early, live = shared(path, clock), shared(path, clock)
    early.acquire(Listener(pace=10.0, events=1))
    early.close()
    # the live member saw more 429s since: it alone decides; and nothing paces an unpaced account
    live.acquire(Listener(pace=60.0, events=3))
    assert live.account_pace == 60.0
    other = shared(path, clock)
    other.acquire(Listener(pace=0.0))
    live.close()
    other.acquire(Listener(pace=0.0))
    assert other.account_pace == 0.0


def test_of_two_equally_informed_paces_the_higher_sets_the_schedule(tmp_path, clock):
    # A pace too high costs a 429 that every member learns from; one too low is never corrected.
    path = tmp_path / "b.bin"
    low, high = shared(path, clock), shared(path, clock)
    low.acquire(Listener(pace=29.0, events=5))
    high.acquire(Listener(pace=83.0, events=5))
    assert high.account_pace == 83.0


# ------------------------------------------------------------------------------- the shared log


def test_each_budget_hears_the_others_answers_and_429s_not_its_own(tmp_path, clock):
    path = tmp_path / "b.bin"
    one, other = shared(path, clock), shared(path, clock)
    mine, theirs = Listener(10.0), Listener(10.0)
    one.acquire(mine)
    other.acquire(theirs)
    for n in range(5):
        one.answered(mine, 100.0 + n)
    one.throttled(mine, 4.0, 105.0)
    clock.sleep(1.0)
    other.answered(theirs, 200.0)
    one.acquire(mine)
    assert theirs.answers == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert theirs.starts == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]  # each was a start
    assert theirs.pauses == [(pytest.approx(3.0), 105.0)]  # what is left of the pause when heard
    assert mine.answers == [200.0] and mine.pauses == []


def test_answers_fed_to_a_real_budget_count_in_its_bracket(tmp_path, clock):
    # The learning budget hears the other process's answers with their send times: its lower
    # bound of the server's rate counts the account's answers, not only its own.
    path = tmp_path / "b.bin"
    learner, other = RequestBudget(4, 0.0), shared(path, clock)
    learner.shared = shared(path, clock)
    noise = Listener()
    other.acquire(noise)
    with learner:
        pass
    for n in range(40):
        other.answered(noise, clock.monotonic() - 2.0 + n * 0.05)
    # `other` was alone and unpaced when it last looked at the file: it writes its answers when it
    # looks again, at most ALONE_SECONDS later.
    clock.sleep(shared_module.ALONE_SECONDS)
    other.acquire(noise)
    with learner:
        pass
    assert len(learner._answers) == 40
    assert len(learner._starts) == 2 + 40  # its own two, and the others' as the account's use


def _logged(path: Path) -> int:
    """How many entries the file's log has taken."""
    return json.loads(path.read_bytes()[: shared_module.HEADER_BYTES])["next"]


def test_alone_and_unpaced_a_process_writes_its_answers_once_an_interval_not_per_request(tmp_path, clock):
    path = tmp_path / "b.bin"
    alone, free = shared(path, clock), Listener()
    alone.acquire(free)
    clock.sleep(shared_module.ALONE_AFTER_SECONDS)  # alone that long: it skips the file from here
    alone.acquire(free)
    for _ in range(100):
        alone.answered(free, alone.acquire(free))
    assert _logged(path) == 0  # nobody else there
    clock.sleep(shared_module.ALONE_SECONDS)
    alone.acquire(free)
    assert _logged(path) == 100  # nothing lost: written with the next look


def test_processes_started_together_look_at_the_file_on_every_request(tmp_path, clock):
    path = tmp_path / "b.bin"
    first, free = shared(path, clock), Listener()
    for _ in range(20):
        first.answered(free, first.acquire(free))
    assert _logged(path) == 20  # alone for less than ALONE_AFTER_SECONDS: every answer written at once


@pytest.mark.parametrize("pace", [0.0, 10.0])
def test_a_process_alone_honours_a_newcomers_pause_at_its_next_request(tmp_path, clock, pace):
    # The newcomer wrote the file: the first process looks again at once, not after ALONE_SECONDS
    # (processes started together met half again as many 429s when it went on unpaced that long).
    path = tmp_path / "b.bin"
    first, newcomer = shared(path, clock), shared(path, clock)
    listener = Listener(pace=pace)
    first.acquire(listener)
    clock.sleep(shared_module.ALONE_AFTER_SECONDS)
    first.acquire(listener)
    paused_at = clock.monotonic()
    newcomer.acquire(Listener())
    newcomer.throttled(Listener(), 3.0, paused_at - 1.0)  # sent before the others': nothing to settle
    assert first.acquire(listener) >= paused_at + 3.0 - shared_module.EARLY_SECONDS


def test_a_newcomer_skips_the_history_and_old_pauses(tmp_path, clock):
    path = tmp_path / "b.bin"
    old = shared(path, clock)
    listener = Listener(10.0)
    for n in range(20):
        old.answered(listener, float(n))
    old.throttled(listener, 30.0, 20.0)
    old.close()
    clock.sleep(60.0)
    newcomer, heard = shared(path, clock), Listener(10.0)
    before = clock.monotonic()
    assert newcomer.acquire(heard) == before
    assert heard.answers == [] and heard.pauses == []


def test_the_log_is_compacted_and_readers_follow(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(shared_module, "MAX_ENTRIES", 64)
    monkeypatch.setattr(shared_module, "KEEP_ENTRIES", 32)
    path = tmp_path / "b.bin"
    writer, reader = shared(path, clock), shared(path, clock)
    noise, heard = Listener(), Listener()

    def read() -> None:
        clock.sleep(shared_module.ALONE_SECONDS)  # the reader was alone at its first look
        reader.acquire(heard)

    read()
    for n in range(50):
        writer.answered(noise, float(n))
    read()
    for n in range(50, 200):
        writer.answered(noise, float(n))
        if n % 20 == 0:
            read()
    read()
    assert heard.answers == [float(n) for n in range(200)]
    entries = (path.stat().st_size - shared_module.HEADER_BYTES) // shared_module.ENTRY.size
    assert entries <= 64


def test_an_unreadable_file_starts_afresh(tmp_path, clock):
    path = tmp_path / "b.bin"
    path.write_bytes(b"\x00garbage" * 100)
    listener = Listener(10.0)
    budget = shared(path, clock)
    assert budget.acquire(listener) == clock.monotonic()
    assert json.loads(path.read_bytes()[: shared_module.HEADER_BYTES])["v"] == 1


# ------------------------------------------------------------------------------ where it lives


def test_the_file_is_named_by_a_hash_of_the_base_url(tmp_path):
    path = budget_path("https://api.commbox.io/", tmp_path)
    assert path.parent == tmp_path and "commbox.io" not in path.name
    assert path == budget_path("https://API.commbox.io", tmp_path)
    assert path != budget_path("https://other.example", tmp_path)


def test_the_setting_picks_the_folder_or_none(tmp_path):
    assert shared_budget_for("https://x.example", "off") is None
    named = shared_budget_for("https://x.example", str(tmp_path / "budgets"))
    assert named is not None and named.path.parent == tmp_path / "budgets"
    auto = shared_budget_for("https://x.example", "auto")
    assert auto is not None and auto.path.parent.name == shared_module.DIRECTORY_NAME


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^shared_budget: "):
        validate(api_key="k", shared_budget=str(blocker))
    with pytest.raises(ConfigError, match=r"^shared_budget: "):
        validate(api_key="k", shared_budget=7)
    assert validate(api_key="k").shared_budget == "auto"


# ------------------------------------------------------------- real processes, real simulator

CHILD = textwrap.dedent(
    """
    import json, os, sys
    spec = json.load(open(sys.argv[1]))
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = spec["warehouse"]
    from pipelines.ops.runner import make_pipeline, run_pipeline
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=spec["pipelines"])
    summary = run_pipeline(pipeline, build_views=False, source_overrides=spec["source"])
    with pipeline.sql_client() as client:
        ids = [r[0] for r in client.execute_sql("select object_id from commbox_raw.objects")]
    json.dump({"ids": ids, "achieved_rps": summary.achieved_rps, "limit_rps": summary.limit_rps},
              open(spec["result"], "w"))
    """
)


LEARNING_429S = 2  # per process, to find a limit nobody knows


def run_processes(sim, tmp_path: Path, budget: str, **settings) -> list[dict]:
    """One process per stream, started together (as the Airflow DAG's earlier per-stream tasks
    ran; now a cron run and backfills beside it)."""
    start = min(o["created_at"] for o in sim.truth.objects()).date().isoformat()
    stream_ids = sorted({o["stream_id"] for o in sim.truth.objects()})
    procs = []
    for stream_id in stream_ids:
        folder = tmp_path / f"stream-{stream_id}"
        folder.mkdir()
        spec = {
            "warehouse": str(folder / "w.duckdb"),
            "pipelines": str(folder / "pipelines"),
            "result": str(folder / "result.json"),
            "source": {
                "api_key": sim.api_key,
                "base_url": sim.base_url,
                "start_date": start,
                "stream_ids": [stream_id],
                "max_concurrency": 8,
                "max_retry_wait_seconds": 30,
                "shared_budget": budget,
                **settings,
            },
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(folder / "spec.json")],
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    stderr=subprocess.PIPE,
                ),
                folder,
            )
        )
    results = []
    for proc, folder in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads((folder / "result.json").read_text()))
    return results


def busiest_second(sim) -> int:
    per_second = sim.stats()["requests_per_second"]
    return max(per_second.values())


def test_parallel_processes_stay_under_the_ceiling_together(sim_factory, tmp_path):
    sim = sim_factory(conversations=60, streams=3)
    sim.clock.advance(600)
    sim.reset_stats()
    results = run_processes(sim, tmp_path, str(tmp_path / "budgets"), max_requests_per_second=12)
    counts = Counter(sim.stats()["requests_per_second"])
    # The schedule spaces every start 1/12 s apart, whoever sends it; a second of the server's clock
    # can catch one more at its edge.
    assert max(counts.values()) <= 13, counts
    assert sim.stats()["total_requests"] > 3 * 12  # long enough for the ceiling to matter
    assert {i for r in results for i in r["ids"]} == {o["object_id"] for o in sim.truth.objects()}
    assert all(r["limit_rps"] == 12 for r in results)


def test_without_sharing_the_same_processes_exceed_it(sim_factory, tmp_path):
    sim = sim_factory(conversations=60, streams=3)
    sim.clock.advance(600)
    sim.reset_stats()
    run_processes(sim, tmp_path, "off", max_requests_per_second=12)
    assert busiest_second(sim) > 13


def test_parallel_processes_find_an_unknown_limit_together(sim_factory, tmp_path):
    sim = sim_factory(conversations=200, streams=3, rate_limit_rps=25, rate_limit_burst=10)
    sim.clock.advance(600)
    sim.reset_stats()
    results = run_processes(sim, tmp_path, str(tmp_path / "budgets"))
    stats = sim.stats()
    assert {i for r in results for i in r["ids"]} == {o["object_id"] for o in sim.truth.objects()}
    # Finding a limit nobody knows costs each process a 429 or two whatever the run's length (2 to 7
    # in 13 runs of 90 conversations; with 200, 3 to 4 in 8 quiet runs and 3 to 8 in 8 with both
    # cores busy); past that, at most the 2% issue 15 allows. A share alone failed 6 runs in 13.
    assert stats["throttled"] <= LEARNING_429S * len(results) + 0.02 * stats["total_requests"], stats
    # Each run reports the pace it found (which keeps moving as the others finish and it probes).
    assert all(r["limit_rps"] > 0 and r["achieved_rps"] > 0 for r in results), results


# ------------------------------------------------------------------------------ what status shows


def test_status_shows_the_pace_each_run_achieved_against_the_limit_it_found(sim_factory, tmp_path):
    from pipelines.ops.status import read_status, render_status
    from tests.helpers import load, make_test_pipeline

    sim = sim_factory(conversations=40, rate_limit_rps=30, rate_limit_burst=5)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, shared_budget=str(tmp_path / "budgets"))
    assert summary.throttled > 0  # the limit was met, and so found
    assert f"achieved_rps={summary.achieved_rps:.1f} limit_rps={summary.limit_rps:.1f}" in summary.line()
    status = read_status(pipeline)
    pace = status.paces["commbox"]
    assert 0 < pace["achieved_rps"] <= 30 + 5 and pace["limit_rps"] > 0 and not pace["configured"]
    assert (
        f"pace of commbox: {pace['achieved_rps']:.1f} req/s of a {pace['limit_rps']:.1f} req/s limit found"
        in (render_status(status))
    )
    assert status.as_dict()["paces"]["commbox"]["requests"] == pace["requests"] > 0


def test_every_run_shares_by_default_and_off_leaves_it_alone():
    # Every run (the Airflow DAG's task, cron, a backfill) builds its source with the default
    # settings: they share.
    from pipelines.commbox import RunContext, load_source_config

    shared = RunContext(load_source_config(api_key="k", base_url="http://127.0.0.1:9"))
    assert shared.client.budget.shared is not None
    assert shared.client.budget.shared.path == budget_path("http://127.0.0.1:9")
    shared.close()
    alone = RunContext(load_source_config(api_key="k", base_url="http://127.0.0.1:9", shared_budget="off"))
    assert alone.client.budget.shared is None


def test_a_429_is_learnt_from_once_the_requests_sent_before_it_are_answered(tmp_path, clock):
    # A 429 comes back at once, the answers to requests sent just before it later: learning from it
    # at once would count too few of the account's answers (too small a burst, too high a rate).
    path = tmp_path / "b.bin"
    one, other = shared(path, clock), shared(path, clock)
    mine, theirs = Listener(10.0), Listener(10.0)
    earlier = other.acquire(theirs)  # in flight in the other process
    clock.sleep(0.2)
    throttled = one.acquire(mine)
    real_sleep, polls = one._sleep, []

    def sleep_and_answer(seconds: float) -> None:
        real_sleep(seconds)
        polls.append(seconds)
        if len(polls) == 3:  # the other process's earlier request is answered meanwhile
            other.answered(theirs, earlier)

    one._sleep = sleep_and_answer
    before = clock.monotonic()
    one.throttled(mine, 2.0, throttled)
    assert len(polls) == 3 and clock.monotonic() - before < shared_module.SETTLE_SECONDS
    # The other process hears the 429 only after its own earlier answer is in.
    other.acquire(theirs)
    assert theirs.pauses and theirs.pauses[0][1] == throttled


def test_a_429_waits_no_longer_than_the_settling_time(tmp_path, clock):
    path = tmp_path / "b.bin"
    one, other = shared(path, clock), shared(path, clock)
    other.acquire(Listener(10.0))  # never answered (a request that failed without an answer)
    clock.sleep(0.01)
    sent = one.acquire(Listener(10.0))
    before = clock.monotonic()
    one.throttled(Listener(10.0), 2.0, sent)
    assert shared_module.SETTLE_SECONDS <= clock.monotonic() - before < shared_module.SETTLE_SECONDS + 0.05
