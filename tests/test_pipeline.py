"""The source against the simulator over loopback, into a real DuckDB file: complete, exact, incremental."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from pipelines.commbox import snapshot_is_due, walker
from pipelines.commbox.config import ConfigError
from pipelines.commbox.windows import WindowReader
from pipelines.ops.runner import make_pipeline, run_pipeline
from tests.helpers import (
    assert_equals_truth,
    column,
    duplicate_keys,
    load,
    make_test_pipeline,
    query,
    source_settings,
)

# Every legal reading of the vendor's documents the simulator serves; the ground-truth tests run on
# each, with crowded seconds (many conversations changed in one second) in the history.
PROFILES = ("default", "docs", "lenient-paging")


@pytest.fixture(params=PROFILES)
def profile_sim(request, sim_factory):
    """A 300-conversation account in each simulator profile, with two crowded seconds of 40."""
    return sim_factory(profile=request.param, crowded_seconds=2, crowded_size=40)


def fan_out_requests(sim) -> int:
    stats = sim.stats()["requests"]
    return sum(
        count for endpoint, count in stats.items() if endpoint in {"transcript", "activities", "object"}
    )


def per_conversation_requests(sim) -> int:
    """Fan-out requests per changed conversation besides its activities: a transcript, and Get
    Object where the list answer's messages carry no sender (the docs profile). Activities cost at
    most one request per type (two), none once the list's activity log is verified (see
    tests/test_activity_paths.py)."""
    return 1 + (not sim.config.list_child_sender)


def test_full_load_equals_ground_truth(profile_sim, tmp_path):
    sim = profile_sim
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert set(column(pipeline, "managers", "manager_id")) == {m["manager_id"] for m in sim.truth.managers()}
    assert set(column(pipeline, "streams", "stream_id")) == {s["stream_id"] for s in sim.truth.streams()}
    assert summary.rows["objects"] == len(sim.truth.objects())
    assert summary.holes == []
    assert summary.warnings.get("childs: first agent message differs from firstResponseTime", 0) == 0
    assert query(pipeline, "select count(*) from childs where is_manager is null") == [(0,)]


def test_second_run_without_change_adds_no_rows_and_only_lists(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    counts = {
        table: len(column(pipeline, table, "1"))
        for table in ("objects", "childs", "activities", "transcripts")
    }
    sim.reset_stats()
    summary = load(pipeline, sim, advance=60)
    assert fan_out_requests(sim) == 0
    assert summary.conversations == 0
    assert {table: len(column(pipeline, table, "1")) for table in counts} == counts
    assert summary.rows.get("objects", 0) == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_a_run_without_change_sends_one_list_call_per_stream_window_and_nothing_else(
    sim_factory, tmp_path, profile
):
    sim = sim_factory(profile=profile)
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    sim.reset_stats()
    summary = load(pipeline, sim, advance=60)
    requests = sim.stats()["requests"]
    assert summary.windows > 0
    assert requests == {"objects": summary.windows}


def test_a_run_without_change_after_a_busy_hour_costs_one_list_call_per_stream(sim, tmp_path):
    """As on a real schedule: changes spread over the look-back hour, a run that loads them, then,
    the server's clock having moved by real time only, a run that finds nothing new. Its look-back
    window still lists the hour's conversations, more per stream than the run-local cap check
    (`CapTracker`) lets pass unsplit when it has seen no answer yet; what earlier runs saw the
    account return must spare that split."""
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    for _ in range(12):
        sim.mutate(messages=6)
        sim.clock.advance(60)
    load(pipeline, sim)
    streams = len(sim.truth.streams())
    lookback = sim.truth.objects()
    hour_start = max(o["updated_at"] for o in lookback).timestamp() - 3600
    per_stream = Counter(o["stream_id"] for o in lookback if o["updated_at"].timestamp() >= hour_start)
    assert max(per_stream.values()) >= 10  # the cap check's least suspect count (MIN_SUSPECT_COUNT)
    time.sleep(1)  # the server's clock runs with real time here: no jump between these two runs
    sim.reset_stats()
    summary = load(pipeline, sim, advance=0)
    assert summary.conversations == 0
    assert sim.stats()["requests"] == {"objects": streams}


def test_snapshots_are_read_again_once_older_than_their_max_age(sim, tmp_path):
    # The age is measured on the server's clock as this machine estimates it (its own clock plus
    # the skew the last run measured): the simulator's clock runs with real time here, so real
    # seconds have to pass.
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, snapshot_max_age_seconds=1)
    first = query(pipeline, "select max(observed_at) from streams")[0][0]
    sim.reset_stats()
    time.sleep(1.5)
    load(pipeline, sim, advance=0, snapshot_max_age_seconds=1)
    requests = sim.stats()["requests"]
    assert requests["managers"] == 1
    assert requests["stats_streams"] == 1
    assert requests["availability"] == len(sim.truth.streams())
    assert query(pipeline, "select max(observed_at) from streams")[0][0] > first


@pytest.mark.parametrize(
    ("age", "max_age", "due"),
    [
        (None, 3600, True),  # never read
        (3599.2, 3600, True),  # the next hourly run, started a moment early
        (3300, 3600, True),  # at most five minutes early
        (3299, 3600, False),
        (54, 60, True),  # a tenth early
        (53, 60, False),
        (0, 0, True),
    ],
)
def test_a_scheduled_run_a_little_early_still_reads_the_snapshot(age, max_age, due):
    # Runs scheduled max_age apart start a little more or less than that apart; one that came a
    # second early used to leave the snapshot to the run after, so an hourly schedule read it every
    # other hour.
    now = 1_800_000_000.0
    assert snapshot_is_due(None if age is None else now - age, now, max_age) is due


def test_snapshots_are_read_every_run_with_max_age_zero(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, snapshot_max_age_seconds=0)
    sim.reset_stats()
    load(pipeline, sim, advance=60, snapshot_max_age_seconds=0)
    assert sim.stats()["requests"]["managers"] == 1


def test_windows_handed_over_in_parts_still_equal_truth(profile_sim, tmp_path, monkeypatch):
    """Split windows handed over once 15 conversations are found (`WindowReader.read_prefix`, as a
    burst past MAX_WINDOW_ITEMS is; pages of 10 make windows split), over real HTTP on every
    profile: nothing lost or doubled, also in a later run after changes."""
    monkeypatch.setattr(walker, "MAX_WINDOW_ITEMS", 15)
    handed_over_early = []
    read_prefix = WindowReader.read_prefix

    def watched(self, start, end, mode, enough=None):
        items, covered = read_prefix(self, start, end, mode, enough)
        if covered < end:
            handed_over_early.append(len(items))
        return items, covered

    monkeypatch.setattr(WindowReader, "read_prefix", watched)
    sim = profile_sim
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, page_size=10)
    assert handed_over_early
    assert_equals_truth(pipeline, sim)
    assert duplicate_keys(pipeline) == {}
    sim.mutate(bulk=120, messages=20)
    load(pipeline, sim, page_size=10)
    assert_equals_truth(pipeline, sim)


def test_mutations_on_old_conversations_are_seen(profile_sim, tmp_path):
    sim = profile_sim
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    touched = sim.mutate(new=5, messages=10, status_changes=8, closures=4, reassignments=6, reopen=2)
    bulk = sim.mutate(bulk=40, bulk_streams=1)["bulk"]
    sim.reset_stats()
    summary = load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert summary.holes == []
    changed = set(bulk).union(*(set(ids) for ids in touched.values()))
    assert summary.conversations == len(changed)
    # only the changed conversations were fanned out to
    activities = sim.stats()["requests"].get("activities", 0)
    assert fan_out_requests(sim) - activities == per_conversation_requests(sim) * len(changed)
    assert activities <= 2 * len(changed)


def test_update_backdated_inside_the_lookback_is_seen(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    sim.mutate(status_changes=3, backdate_seconds=1200)
    load(pipeline, sim, lookback_seconds=3600)
    assert_equals_truth(pipeline, sim)


@pytest.mark.parametrize(
    "switches",
    [
        {"window_cap": True},
        {"page_base": 0},
        {"inclusive_end": True},
        {"max_page_size": 50},
        {"max_page_size": 50, "window_cap": True, "inclusive_end": True, "page_base": 0},
        {"max_page_size": 50, "strict_page_size": True},
        {"time_filter_values": ("updated", "created", "closed")},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_complete_whatever_the_paging_bounds_and_caps(sim_factory, tmp_path, switches):
    sim = sim_factory(conversations=1500, **switches)  # bursts of 120 in one hour
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, include_transcripts=False, activity_types=[], window_hours=24 * 7)
    objects = {o["object_id"] for o in sim.truth.objects()}
    assert set(column(pipeline, "objects", "object_id")) == objects
    assert duplicate_keys(pipeline) == {}


def test_window_of_three_times_the_cap_is_split_and_complete(sim_factory, tmp_path):
    sim = sim_factory(conversations=4000, window_cap=True)  # bursts of 320 in one hour
    hours = Counter(
        (o["stream_id"], o["created_at"].replace(minute=0, second=0, microsecond=0))
        for o in sim.truth.objects()
    )
    (burst_stream, _), in_burst_hour = hours.most_common(1)[0]
    assert in_burst_hour >= 300
    pipeline = make_test_pipeline(tmp_path)
    load(
        pipeline,
        sim,
        stream_ids=[burst_stream],
        include_transcripts=False,
        activity_types=[],
        window_hours=24 * 30,
    )
    loaded = set(column(pipeline, "objects", "object_id"))
    assert loaded == {o["object_id"] for o in sim.truth.objects() if o["stream_id"] == burst_stream}


def test_creation_time_fallback_when_time_filter_is_ignored(sim_factory, tmp_path, caplog):
    sim = sim_factory(conversations=300, ignore_time_filter=True)
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    assert "ignores timeFilter" in caplog.text
    state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    assert {stream["mode"] for stream in state.values()} == {"created"}
    sim.mutate(messages=10, status_changes=5, closures=3)
    load(pipeline, sim, created_mode_reread_days=60)
    assert_equals_truth(pipeline, sim)


def test_backfill_leaves_scheduled_state_untouched_and_is_idempotent(profile_sim, tmp_path):
    sim = profile_sim
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    scheduled_state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]
    before = {table: sorted(column(pipeline, table, "_dlt_id")) for table in ("objects",)}
    created = sorted(o["created_at"] for o in sim.truth.objects())
    start, end = created[0].date().isoformat(), created[-1].date().isoformat()
    backfill_pipeline = make_test_pipeline(tmp_path, name="commbox_backfill")
    for _ in range(2):
        load(backfill_pipeline, sim, backfill=(start, end), advance=0)
    pipeline.sync_destination()
    assert pipeline.state["sources"]["commbox"]["resources"]["conversations"] == scheduled_state
    assert duplicate_keys(pipeline) == {}
    assert len(column(pipeline, "objects", "object_id")) == len(before["objects"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_key": ""}, "api_key"),
        ({"start_date": "2024-03-10", "end_date": "2024-03-01", "backfill": True}, "end_date"),
        ({"stream_ids": "532,abc"}, "stream_ids"),
        ({"base_url": "ftp://example"}, "base_url"),
        ({"page_size": 500}, "page_size"),
        ({"activity_types": ["StatusChange", "Nope"]}, "activity_types"),
    ],
)
def test_bad_config_fails_before_any_request(sim, tmp_path, overrides, message):
    pipeline = make_test_pipeline(tmp_path)
    sim.reset_stats()
    with pytest.raises(ConfigError, match=message):
        run_pipeline(pipeline, build_views=False, source_overrides=source_settings(sim, **overrides))
    assert sum(sim.stats()["requests"].values()) == 0


def test_unknown_destination_fails_before_any_request():
    with pytest.raises(ConfigError, match="destination"):
        make_pipeline(destination="oracle")


def test_explicit_streams_load_only_those(sim, tmp_path):
    stream_id = sim.truth.streams()[0]["stream_id"]
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, stream_ids=[stream_id])
    assert set(column(pipeline, "objects", "stream_id")) == {stream_id}
    assert query(pipeline, "select count(*) from objects")[0][0] == sum(
        1 for o in sim.truth.objects() if o["stream_id"] == stream_id
    )


def test_time_filter_spelling_is_negotiated_not_abandoned(sim_factory, tmp_path, caplog):
    sim = sim_factory(conversations=300, time_filter_values=("Updated", "Created"))
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    assert_equals_truth(pipeline, sim)
    assert "timeFilter=Updated" in caplog.text
    state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    assert {stream["mode"] for stream in state.values()} == {"updated"}


def crowd_one_second(sim_factory, **switches):
    """An account where one second holds ~150 new conversations per stream (clock frozen)."""
    sim = sim_factory(conversations=200, clock_running=False, **switches)
    sim.clock.advance(600)
    sim.mutate(new=600)  # all Open: a status partition cannot split them either
    return sim


def test_a_second_holding_more_than_a_page_is_paged_through(sim_factory, tmp_path):
    sim = crowd_one_second(sim_factory)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, include_transcripts=False, activity_types=[])
    assert set(column(pipeline, "objects", "object_id")) == {o["object_id"] for o in sim.truth.objects()}
    assert summary.warnings["objects: crowded second, paged through"] >= 1
    assert summary.holes == []


def test_a_second_that_cannot_be_read_whole_is_a_hole_filled_by_a_later_run(sim_factory, tmp_path):
    # pages capped at 50 and pageNumber and status ignored: 150 in one second cannot be shown whole
    sim = crowd_one_second(sim_factory, unpageable=True, max_page_size=50)
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, include_transcripts=False, activity_types=[])
    # everything but the crowded seconds loaded, the holes named, the cursor moved past them
    assert summary.holes and all(start + 1 >= end for _, start, end in summary.holes)
    assert "could not be read whole" in summary.holes_line()
    crowded = {start for _, start, _ in summary.holes}
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    loaded = set(column(pipeline, "objects", "object_id"))
    missing = set(truth) - loaded
    # what is missing (if the other levers did not happen to find it all) lies in the holes only
    assert all(int(truth[i]["updated_at"].timestamp()) in crowded for i in missing)
    assert query(pipeline, "select count(*) from holes where is_open") == [(len(summary.holes),)]
    state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    assert sum(len(stream.get("holes", {})) for stream in state.values()) == len(summary.holes)
    # the run after the account reads them whole fills every hole: 0 lost, 0 duplicated
    sim.configure(unpageable=False)
    summary = load(pipeline, sim, include_transcripts=False, activity_types=[], advance=60)
    assert summary.holes == []
    assert set(column(pipeline, "objects", "object_id")) == set(truth)
    assert duplicate_keys(pipeline) == {}
    assert query(pipeline, "select count(*) from holes where is_open") == [(0,)]
    state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    assert all(not stream.get("holes") for stream in state.values())


def test_a_customer_keeps_their_details_when_a_later_load_names_them_by_id_only(profile_sim, tmp_path):
    # Some list items name their customer by id alone (the key-drifted shape; the default profile
    # serves it, the documented one does not); a later load in which only such a conversation
    # changed must not blank the details an earlier load stored.
    sim = profile_sim
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    profiles = {u["user_id"]: u for u in sim.truth.users()}
    before = dict(query(pipeline, "select user_id, email from users where email is not null"))
    assert before and all(profiles[user_id]["email"] == email for user_id, email in before.items())
    sim.mutate(messages=len(profiles) * 2, status_changes=len(profiles))
    load(pipeline, sim)
    after = dict(query(pipeline, "select user_id, email from users"))
    assert {user_id: after.get(user_id) for user_id in before} == before
