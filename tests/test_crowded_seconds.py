"""Many conversations changed in one second, whatever the account's paging: read whole, or a hole.

Real accounts change many conversations in the same second (an automation rule closing stale
conversations, a bulk reassignment). The reader must read such a second on 0-based and 1-based
accounts, strict (page 0 refused) and lenient (page 0 answered as page 1), with pages capped below
100; and where the API truly cannot list it whole, record a hole, load everything else, exit
non-zero naming it, and fill it on a later run.
"""

from __future__ import annotations

import pytest

from pipelines.cli import EXIT_HOLES, main
from pipelines.ops.status import read_status, render_status
from tests.helpers import (
    column,
    duplicate_keys,
    load,
    make_test_pipeline,
    point_cli_at,
    query,
)

PAGINGS = {
    "0-based": {"page_base": 0},
    "1-based-strict": {"page_base": 1},
    "1-based-lenient": {"profile": "lenient-paging"},
    # the vendor's documented shapes (1-based strict): the crowd's senders are looked up too
    "docs": {"profile": "docs"},
}
LIGHT = {"include_transcripts": False, "activity_types": []}


def assert_objects_and_messages_equal_truth(pipeline, sim) -> None:
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    rows = query(pipeline, "select object_id, updated_at, status_id from objects")
    assert {row[0] for row in rows} == set(truth)
    stale = [
        row[0]
        for row in rows
        if (row[1], row[2]) != (truth[row[0]]["updated_at"], truth[row[0]]["status_id"])
    ]
    assert stale == []
    truth_sides = {c["child_id"]: c["is_manager"] for c in sim.truth.childs()}
    assert dict(query(pipeline, "select child_id, is_manager from childs")) == truth_sides
    assert duplicate_keys(pipeline) == {}


@pytest.mark.parametrize("crowd", [40, 150, 400])
@pytest.mark.parametrize("paging", PAGINGS, ids=str)
def test_every_change_of_a_crowded_second_is_loaded(sim_factory, tmp_path, paging, crowd):
    # 400 changes need a stream that holds them: a larger account for the largest crowd
    sim = sim_factory(conversations=max(300, 4 * crowd), max_page_size=50, **PAGINGS[paging])
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim, **LIGHT)
    touched = sim.mutate(bulk=crowd, bulk_streams=1)["bulk"]
    assert len(touched) == crowd
    # every run is a fresh process here: its cap history starts empty
    summary = load(pipeline, sim, **LIGHT)
    assert summary.holes == []
    assert summary.conversations == crowd
    assert_objects_and_messages_equal_truth(pipeline, sim)


def test_a_first_load_through_crowded_seconds_in_the_history(sim_factory, tmp_path):
    sim = sim_factory(
        conversations=800, max_page_size=50, crowded_seconds=3, crowded_size=60, profile="lenient-paging"
    )
    pipeline = make_test_pipeline(tmp_path)
    summary = load(pipeline, sim, **LIGHT)
    assert summary.holes == []
    assert summary.warnings.get("objects: crowded second, paged through", 0) >= 1
    assert_objects_and_messages_equal_truth(pipeline, sim)


def test_a_second_the_api_cannot_page_is_a_hole_that_a_later_run_fills(
    sim_factory, tmp_path, monkeypatch, capsys
):
    sim = sim_factory(conversations=1600, max_page_size=50, unpageable=True, clock_running=False)
    flags = [
        *point_cli_at(monkeypatch, tmp_path, sim, include_transcripts="false", activity_types=""),
        "--no-views",
    ]
    sim.clock.advance(600)
    assert main(["run", *flags]) == 0
    touched = set(sim.mutate(bulk=400, bulk_streams=1)["bulk"])
    (crowded_second,) = {
        int(o["updated_at"].timestamp()) for o in sim.truth.objects() if o["object_id"] in touched
    }
    sim.clock.advance(600)
    capsys.readouterr()

    assert main(["run", *flags]) == EXIT_HOLES
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"({crowded_second})" in err[0] and "stream" in err[0]
    pipeline = make_test_pipeline(tmp_path)
    pipeline.sync_destination()
    # everything outside the hole loaded; what is missing lies in the hole only
    truth = {o["object_id"]: o for o in sim.truth.objects()}
    missing = set(truth) - set(column(pipeline, "objects", "object_id"))
    assert missing <= touched
    assert query(pipeline, "select stream_id, window_start, is_open from holes") == [
        (truth[next(iter(touched))]["stream_id"], crowded_second, True)
    ]

    status = read_status(pipeline)
    assert [(stream_id, tries) for stream_id, _, tries in status.open_holes] == [
        (truth[next(iter(touched))]["stream_id"], 1)
    ]
    assert "open holes (seconds not yet read whole" in render_status(status)
    assert status.as_dict()["open_holes"][0]["stream_id"] == status.open_holes[0][0]

    # still unreadable: the hole stays open and the run still says so
    sim.clock.advance(600)
    assert main(["run", *flags]) == EXIT_HOLES
    capsys.readouterr()

    sim.configure(unpageable=False)
    sim.clock.advance(600)
    assert main(["run", *flags]) == 0
    pipeline.sync_destination()
    assert_objects_and_messages_equal_truth(pipeline, sim)
    assert query(pipeline, "select count(*) from holes where is_open") == [(0,)]
    assert "open holes: none" in render_status(read_status(pipeline))
    state = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    assert all(not stream.get("holes") for stream in state.values())
