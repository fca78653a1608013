"""The stream walker against an in-process fake account: cursor, lookback, `seen`, holes, mode.

Each test walks one stream of a `FakeAccount` with a real `WindowReader` and checks what the walk
yields and what it leaves in the state dict that dlt would persist with the load.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from pipelines.commbox.coerce import Warnings
from pipelines.commbox.config import SourceSettings, validate
from pipelines.commbox.settings import MODE_CREATED, MODE_UPDATED
from pipelines.commbox.walker import CLOCK_TOLERANCE_SECONDS, MAX_WINDOW_ITEMS, TARGET_PAGE_FILL, StreamWalker
from pipelines.commbox.windows import CapTracker, WindowReader
from tests.fakes import FakeAccount
from tests.test_windows import PAGINGS

T0 = 1_700_000_000
STREAM = 1
LOOKBACK, MARGIN = 600, 60
NOW = T0 + 3 * 3600
CROWDED = T0 + 1500


def settings(**overrides: Any) -> SourceSettings:
    """Scheduled-run settings: one-hour windows from T0, a 10-minute lookback, a 1-minute margin."""
    values: dict[str, Any] = {
        "api_key": "unit-test-walker-key",
        "base_url": "http://fake.invalid",
        "stream_ids": [STREAM],
        "start_date": datetime.fromtimestamp(T0, tz=UTC),
        "end_date": None,
        "window_hours": 1,
        "max_window_days": 1,
        "lookback_seconds": LOOKBACK,
        "safety_margin_seconds": MARGIN,
        "page_size": 100,
        "include_transcripts": False,
        "activity_types": [],
        "max_concurrency": 1,
        "max_requests_per_second": 0,
        "max_retry_wait_seconds": 1,
        "request_timeout_seconds": 10,
        "time_filter_mode": MODE_UPDATED,
        "created_mode_reread_days": 1,
        "backfill": False,
    }
    values.update(overrides)
    return validate(**values)


def walk(
    account: FakeAccount,
    state: dict[str, Any] | None,
    now: int,
    *,
    now_is_estimate: bool = False,
    **overrides: Any,
) -> tuple[list[list[dict[str, Any]]], StreamWalker]:
    """Every batch one walk yields, as a run in a fresh process would (its cap history empty)."""
    reader = WindowReader(account, STREAM, caps=CapTracker(100), warnings=Warnings())
    walker = StreamWalker(
        reader,
        settings(**overrides),
        state,
        datetime.fromtimestamp(now, tz=UTC),
        Warnings(),
        {},
        now_is_estimate=now_is_estimate,
    )
    return list(walker.walk()), walker


def loaded(batches: list[list[dict[str, Any]]]) -> list[int]:
    return [bundle["object"]["object_id"] for batch in batches for bundle in batch if "object" in bundle]


def hole_rows(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [bundle["hole"] for batch in batches for bundle in batch if "hole" in bundle]


def steady_account() -> FakeAccount:
    """60 conversations, one every three minutes from T0: three of them inside the last lookback."""
    account = FakeAccount()
    for n in range(60):
        account.add(STREAM, T0 + n * 180 + 3)
    return account


def test_the_cursor_moves_to_now_minus_the_margin_and_never_back():
    account = steady_account()
    state: dict[str, Any] = {}

    batches, _ = walk(account, state, NOW)

    assert state["cursor"] == NOW - MARGIN
    assert state["mode"] == MODE_UPDATED
    assert sorted(loaded(batches)) == sorted(account.truth(STREAM, T0, NOW - MARGIN))
    # a server clock that went back: the window is read, the cursor stays
    batches, _ = walk(account, state, NOW - 300)
    assert state["cursor"] == NOW - MARGIN
    assert loaded(batches) == []
    batches, _ = walk(account, state, NOW + 600)
    assert state["cursor"] == NOW + 600 - MARGIN


@pytest.mark.parametrize(
    "estimate_off_by", [-1800, -3, 0, +900], ids=["far-behind", "just-behind", "exact", "ahead"]
)
def test_an_estimated_server_clock_is_settled_by_the_first_answer(estimate_off_by):
    """A run that estimates the server's now (its own clock plus the last run's skew) reads on to
    the server's now minus the margin when the estimate lagged, and never closes the cursor past it
    when the estimate ran ahead; an estimate within a few seconds costs no extra list call."""
    account = steady_account()
    account.server_now = datetime.fromtimestamp(NOW, tz=UTC)
    state: dict[str, Any] = {}
    walk(account, state, NOW - 1800)
    account.add(STREAM, NOW - MARGIN - 600)
    account.add(STREAM, NOW - MARGIN - 10)
    on_the_server_clock = copy.deepcopy(state)
    account.requests = 0
    expected, _ = walk(account, on_the_server_clock, NOW)
    requests_on_the_server_clock, account.requests = account.requests, 0

    batches, _ = walk(account, state, NOW + estimate_off_by, now_is_estimate=True)

    assert sorted(loaded(batches)) == sorted(loaded(expected))
    if -CLOCK_TOLERANCE_SECONDS <= estimate_off_by <= 0:
        assert state["cursor"] == NOW + estimate_off_by - MARGIN
        assert account.requests == requests_on_the_server_clock
    else:
        assert state["cursor"] == NOW - MARGIN


def test_an_estimate_with_nothing_to_read_asks_the_server_for_its_clock():
    account = steady_account()
    account.server_now = datetime.fromtimestamp(NOW, tz=UTC)
    state: dict[str, Any] = {}
    walk(account, state, NOW - 600)
    account.add(STREAM, NOW - MARGIN - 5)
    account.requests = 0

    batches, _ = walk(account, state, NOW - 600 - LOOKBACK, now_is_estimate=True)

    assert sorted(loaded(batches)) == sorted(account.truth(STREAM, NOW - 600 - MARGIN, NOW - MARGIN))
    assert state["cursor"] == NOW - MARGIN
    assert account.requests == 2  # the clock, then one list call


def test_a_burst_inside_one_window_is_handed_over_a_part_at_a_time():
    """5,000 conversations inside one hour (a one-hour window): the walk never holds more than
    MAX_WINDOW_ITEMS (plus the page that crossed it) in one batch, and loads each exactly once."""
    account = FakeAccount()
    for n in range(5000):
        account.add(STREAM, T0 + 60 + (n * 3500) // 5000)
    state: dict[str, Any] = {}

    batches, _ = walk(account, state, NOW)

    assert max(len(batch) for batch in batches) <= MAX_WINDOW_ITEMS + 100
    ids = loaded(batches)
    assert len(ids) == len(set(ids))
    assert set(ids) == account.truth(STREAM, T0, NOW - MARGIN)


def test_the_lookback_is_re_read_but_loads_only_what_changed():
    account = steady_account()
    state: dict[str, Any] = {}
    walk(account, state, NOW)
    in_lookback = account.truth(STREAM, NOW - MARGIN - LOOKBACK, NOW - MARGIN)
    assert len(in_lookback) == 3
    new = account.add(STREAM, NOW - 30)
    old = sorted(account.truth(STREAM, T0, T0 + 600))[:1]
    account.touch(old, NOW - 20)
    account.requests = 0

    batches, _ = walk(account, state, NOW + 600)

    assert sorted(loaded(batches)) == sorted(new + old)
    # the re-read did list the lookback: it started at the old cursor minus the lookback
    assert min(int(asked["unixStartTime"]) for asked in account.asked[-account.requests :]) == (
        NOW - MARGIN - LOOKBACK
    )


def test_seen_keeps_only_what_the_next_re_read_can_meet():
    account = steady_account()
    state: dict[str, Any] = {}

    walk(account, state, NOW)

    horizon = state["cursor"] - LOOKBACK - MARGIN
    assert set(state["seen"]) == {str(i) for i in account.truth(STREAM, horizon, NOW)}
    walk(account, state, NOW + 3600)
    horizon = state["cursor"] - LOOKBACK - MARGIN
    assert set(state["seen"]) == {str(i) for i in account.truth(STREAM, horizon, NOW + 3600)}
    assert state["seen"] == {}  # nothing changed in the last hour: nothing left to meet


def capped_account() -> FakeAccount:
    """Hourly traffic and a second of 400 all-Open conversations on an account that caps a window at
    100: no lever can list that second whole."""
    account = steady_account()
    account.window_cap = 100
    account.add(STREAM, CROWDED, 400)
    return account


def test_a_hole_is_recorded_passed_re_read_first_and_closed_once_whole():
    account = capped_account()
    truth = account.truth(STREAM, T0, NOW - MARGIN)
    crowded = account.truth(STREAM, CROWDED, CROWDED + 1)
    state: dict[str, Any] = {}

    batches, walker = walk(account, state, NOW)

    first = set(loaded(batches))
    assert truth - crowded <= first < truth
    (row,) = hole_rows(batches)
    assert (row["window_start"], row["window_end"], row["is_open"], row["tries"]) == (
        CROWDED,
        CROWDED + 1,
        True,
        1,
    )
    assert row["hole_id"] == f"{STREAM}:{CROWDED}" and row["mode"] == MODE_UPDATED
    assert state["holes"][str(CROWDED)]["end"] == CROWDED + 1
    assert state["cursor"] == NOW - MARGIN  # the walk went past the hole
    assert walker.open_holes == [(CROWDED, CROWDED + 1)]

    # still unreadable: re-read first, still open, tried once more
    batches, walker = walk(account, state, NOW + 600)
    (row,) = hole_rows(batches[:1])
    assert (row["window_start"], row["is_open"], row["tries"]) == (CROWDED, True, 2)
    assert state["holes"][str(CROWDED)]["tries"] == 2
    assert walker.open_holes == [(CROWDED, CROWDED + 1)]

    # the account now lists it whole: the re-read fills it and the state forgets it
    account.window_cap = None
    batches, walker = walk(account, state, NOW + 1200)
    (row,) = hole_rows(batches[:1])
    assert (row["window_start"], row["is_open"], row["tries"]) == (CROWDED, False, 3)
    assert row["filled_at"] is not None
    assert crowded - first <= set(loaded(batches[:1]))
    assert state["holes"] == {}
    assert walker.open_holes == []
    assert hole_rows(batches[1:]) == []


def test_a_cap_below_page_size_is_still_found_by_a_run_that_remembers_the_largest_count():
    """The next run starts from the most objects one list call returned (`largest_listed`), so an
    answer below it is not split again; an answer at a cap below pageSize still reaches it."""
    account = FakeAccount(window_cap=60)
    for n in range(150):
        account.add(STREAM, T0 + 100 + n * 10)
    state: dict[str, Any] = {}
    first, _ = walk(account, state, NOW)
    assert sorted(loaded(first)) == sorted(account.truth(STREAM, T0, NOW - MARGIN))
    assert state["largest_listed"] == 60
    for n in range(150):
        account.add(STREAM, NOW + 100 + n * 10)

    later, _ = walk(account, state, NOW + 3 * 3600)

    assert sorted(loaded(later)) == sorted(account.truth(STREAM, NOW, NOW + 3 * 3600 - MARGIN))


def test_re_reading_a_hole_loads_only_what_it_had_missed():
    account = capped_account()
    state: dict[str, Any] = {}
    batches, _ = walk(account, state, NOW)
    first = loaded(batches)

    batches, _ = walk(account, state, NOW + 600)  # still capped: nothing new to find
    assert loaded(batches) == []
    account.window_cap = None
    batches, _ = walk(account, state, NOW + 1200)
    assert sorted(first + loaded(batches)) == sorted(account.truth(STREAM, T0, NOW - MARGIN))


def test_an_account_ignoring_timefilter_is_walked_by_creation_time():
    account = FakeAccount(ignore_time_filter=True)
    for n in range(20):
        account.add(STREAM, T0 + n * 300 + 3)
    late = account.add(STREAM, T0 + 100)
    account.touch(late, T0 + 5000)  # updated after its window, before now
    state: dict[str, Any] = {}

    batches, _ = walk(account, state, NOW, time_filter_mode="auto")

    assert state["mode"] == MODE_CREATED
    ids = loaded(batches)
    # the restart by creation time re-reads what the first windows gave: nothing is loaded twice
    assert sorted(ids) == sorted(account.truth(STREAM, T0, NOW, mode="created"))


@pytest.mark.parametrize("switches", PAGINGS.values(), ids=PAGINGS.keys())
def test_a_window_that_had_to_be_split_sizes_the_next_from_what_it_held(switches):
    """4,000 conversations over 40 hours read from a 24-hour first window, on every paging reading.
    The next window was half the one before whatever the split had shown, so each of the following
    windows split nearly as deep again, a full page per level: 95 list calls where 54 windows of
    three quarters of a page hold them all. And the windows were sized for the page asked for, not
    the smaller one an account turned out to answer (50 or 60): every window then split (167 list
    calls where 107 windows hold them). Sized from the traffic the split found and the answers the
    account gives, the walk costs the first window's split and little more."""
    account = FakeAccount(**switches)
    conversations, hours = 4000, 40
    for n in range(conversations):
        account.add(STREAM, T0 + (n * hours * 3600) // conversations)
    now = T0 + (hours + 1) * 3600

    batches, _ = walk(account, {}, now, window_hours=24, max_window_days=31)

    assert sorted(loaded(batches)) == sorted(account.truth(STREAM, T0, now - MARGIN))
    answered = min(100, switches.get("max_page_size", 100), switches.get("window_cap") or 100)
    windows_at_target_fill = conversations / (TARGET_PAGE_FILL * answered)
    assert account.requests <= 1.4 * windows_at_target_fill
