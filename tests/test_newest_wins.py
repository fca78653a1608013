"""Newest wins: backfills that read older versions and load after newer ones change nothing.

A backfill's package is extracted first (the account as it was), the account then changes and a
scheduled run loads the newer versions, and only then is the backfill's package loaded and cleaned
up, as `run_pipeline` does after its load (`keep_newest`). dlt runs extract, normalize and load as
separate steps, so the race the issue measured is reproduced exactly, on every run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import dlt
import orjson
import pytest

from pipelines.commbox import commbox_source
from pipelines.commbox.config import parse_moment
from pipelines.commbox.tables import TABLE_COLUMNS
from pipelines.ops.runner import preferred_file_format
from pipelines.ops.versions import VERSIONED_TABLES, keep_newest
from tests.helpers import assert_equals_truth, load, make_test_pipeline, query, source_settings

THE_ISSUES_CHANGES = {"messages": 120, "status_changes": 60, "closures": 40, "reassignments": 20}


@pytest.fixture(params=["default", "docs"])
def sim(request, sim_factory) -> Any:
    """The account in its default shape and exactly as the vendor documents it (list messages
    without a sender: each changed conversation is looked up again while the race runs)."""
    return sim_factory(profile=request.param)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def destination(request, tmp_path) -> Any:
    """One warehouse that the scheduled pipeline and every backfill pipeline load into."""
    if request.param == "duckdb":
        return dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb"))
    return dlt.destinations.postgres(request.getfixturevalue("postgres_credentials"))


def streams(sim: Any) -> list[int]:
    """Every stream, named: discovery goes by open counts, and closures can leave a stream none."""
    return [stream["stream_id"] for stream in sim.truth.streams()]


def run(pipeline: dlt.Pipeline, sim: Any, advance: float = 600) -> None:
    """A scheduled run (`run_pipeline`: extract, normalize, load, keep_newest)."""
    load(pipeline, sim, advance=advance, stream_ids=streams(sim))


def history_range(sim: Any, share: float = 1.0) -> tuple[str, str]:
    """The backfill range covering the last `share` of the account's history, as --start/--end."""
    created = sorted(o["created_at"] for o in sim.truth.objects())
    first = created[int((len(created) - 1) * (1 - share))]
    last = max(o["updated_at"] for o in sim.truth.objects()) + timedelta(days=1)
    return first.date().isoformat(), last.date().isoformat()


def extract_backfill(tmp_path, destination, sim, name: str, span: tuple[str, str]) -> dlt.Pipeline:
    """A backfill that has read the account now and not loaded yet: its package waits in the
    pipeline, as it does while a long backfill is still extracting."""
    pipeline = make_test_pipeline(tmp_path, name=name, destination=destination)
    start, end = (parse_moment(value, key) for value, key in zip(span, ("--start", "--end"), strict=True))
    settings = source_settings(sim, start_date=start, end_date=end, backfill=True, stream_ids=streams(sim))
    source = commbox_source(**settings)
    pipeline.extract(source, loader_file_format=preferred_file_format(pipeline))
    pipeline.normalize()
    return pipeline


def finish(pipeline: dlt.Pipeline) -> None:
    """The rest of the backfill's run: its load, then what `run_pipeline` does right after it."""
    pipeline.load().raise_on_failed_jobs()
    keep_newest(pipeline)


def assert_newest_only(pipeline: dlt.Pipeline, sim: Any) -> None:
    """Ground truth table by table (0 stale, 0 lost, 0 duplicated), every message, activity and
    transcript row of the conversation's loaded version, and every transcript as the account has it."""
    assert_equals_truth(pipeline, sim)
    for table in VERSIONED_TABLES:
        other_version = query(
            pipeline,
            f"select count(*) from {table} as t join objects as o on o.object_id = t.object_id "
            "where t.object_updated_at is null or t.object_updated_at <> o.updated_at",
        )
        assert other_version == [(0,)], table
    truth = {t["object_id"]: t["transcript"] for t in sim.truth.transcripts()}
    stale = [
        object_id
        for object_id, transcript in query(pipeline, "select object_id, transcript from transcripts")
        if transcript != truth[object_id]
    ]
    assert stale == []


def stale_versions(pipeline: dlt.Pipeline, sim: Any) -> int:
    truth = {o["object_id"]: o["updated_at"] for o in sim.truth.objects()}
    rows = query(pipeline, "select object_id, updated_at from objects")
    return sum(1 for object_id, updated_at in rows if updated_at != truth[object_id])


def test_backfill_loading_older_versions_after_the_schedule_changes_nothing(sim, destination, tmp_path):
    """The issue's race: a full run; a backfill over the history reads the account; 120 messages,
    60 status changes, 40 closures and 20 reassignments; a scheduled run loads them; then the
    backfill loads what it read. Before versioning, its older rows replaced the newer ones."""
    scheduled = make_test_pipeline(tmp_path, destination=destination)
    run(scheduled, sim)
    backfill = extract_backfill(tmp_path, destination, sim, "commbox_backfill", history_range(sim))
    sim.clock.advance(60)
    changed = set().union(*map(set, sim.mutate(**THE_ISSUES_CHANGES).values()))
    run(scheduled, sim)
    assert_newest_only(scheduled, sim)
    backfill.load().raise_on_failed_jobs()
    # the race is real: the backfill loaded the older version of every changed conversation
    assert stale_versions(scheduled, sim) == len(changed) > 0
    keep_newest(backfill)  # as run_pipeline does right after its load
    assert_newest_only(scheduled, sim)


def test_two_overlapping_backfills_racing_a_changing_account(sim, destination, tmp_path):
    """Backfill A (the whole history) and backfill B (its newer half) read the account at different
    moments while it changes, then load in either order after the schedule loaded the newest
    versions. Every load ends at the truth; the scheduled run cleans up what another pipeline left."""
    scheduled = make_test_pipeline(tmp_path, destination=destination)
    run(scheduled, sim)
    whole = extract_backfill(tmp_path, destination, sim, "commbox_backfill_a", history_range(sim))
    sim.clock.advance(60)
    sim.mutate(**THE_ISSUES_CHANGES)
    newer_half = extract_backfill(tmp_path, destination, sim, "commbox_backfill_b", history_range(sim, 0.5))
    sim.clock.advance(60)
    sim.mutate(new=10, **THE_ISSUES_CHANGES)
    run(scheduled, sim)
    finish(newer_half)
    assert_newest_only(scheduled, sim)
    # A loads without cleaning up after itself (a process killed right after its load): the
    # warehouse holds older versions beside the newest until the next run's cleanup.
    whole.load().raise_on_failed_jobs()
    assert stale_versions(scheduled, sim) > 0
    run(scheduled, sim, advance=60)  # nothing changed: the run loads streams and managers only
    assert_newest_only(scheduled, sim)


def drop_one_message_of(sim: Any, object_id: int) -> list[int]:
    """From now on the account's list answers lag behind for one conversation: the same
    updatedTime, its newest message missing (two reads of one version that disagree)."""
    original = sim.api._ok
    dropped: list[int] = []

    def ok(route: str, path: str, data: bytes, bad: str | None) -> Any:
        reply = original(route, path, data, bad)
        if route != "objects":
            return reply
        envelope = orjson.loads(reply.body)
        for item in envelope.get("data") or []:
            ids = {str(item.get(key)).strip().rstrip(",") for key in ("objectId", "id", "ObjectId")}
            if str(object_id) in ids and isinstance(item.get("childs"), list):
                dropped.append(len(item["childs"]))
                item["childs"] = item["childs"][1:]  # newest first: the newest message goes
        reply.body = orjson.dumps(envelope)
        return reply

    sim.api._ok = ok
    return dropped


def test_a_tie_on_updated_at_loses_no_message(sim, destination, tmp_path):
    scheduled = make_test_pipeline(tmp_path, destination=destination)
    run(scheduled, sim)
    counts: dict[int, int] = {}
    for child in sim.truth.childs():
        counts[child["object_id"]] = counts.get(child["object_id"], 0) + 1
    object_id = max(counts, key=lambda key: (counts[key], key))
    updated: datetime = next(o["updated_at"] for o in sim.truth.objects() if o["object_id"] == object_id)
    dropped = drop_one_message_of(sim, object_id)
    backfill = extract_backfill(tmp_path, destination, sim, "commbox_backfill", history_range(sim))
    # the backfill read that version one message short (in every list answer that held it)
    assert dropped and set(dropped) == {counts[object_id]}
    finish(backfill)
    assert query(scheduled, f"select updated_at from objects where object_id = {object_id}") == [(updated,)]
    assert_newest_only(scheduled, sim)


@pytest.mark.parametrize("email_first", [True, False], ids=["email-first", "email-last"])
def test_the_merge_keeps_the_identity_row_that_knows_the_email(destination, tmp_path, email_first):
    """One identity twice in a load (two conversations of one customer, one showing the e-mail
    address): whichever comes first, the merge keeps the row with the address, on both engines."""
    rows = [
        {"identity_id": 77, "user_id": 5, "first_name": "Dana", "stream_provider_email": "dana@example.com"},
        {"identity_id": 77, "user_id": 5, "first_name": "Dana", "stream_provider_email": None},
    ]
    identities = dlt.resource(
        rows if email_first else rows[::-1],
        name="user_identities",
        columns=TABLE_COLUMNS["user_identities"],
        primary_key="identity_id",
        write_disposition="merge",
    )
    pipeline = make_test_pipeline(tmp_path, destination=destination)
    pipeline.run(identities)
    assert query(pipeline, "select identity_id, stream_provider_email from user_identities") == [
        (77, "dana@example.com")
    ]
