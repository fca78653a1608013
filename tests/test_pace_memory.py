"""The pace a run learnt is not learnt again: not by its next checkpoint slice, nor by its next run.

Real HTTP against the simulator's token bucket (429 + Retry-After), real DuckDB. Each slice builds a
new client; without the learnt bracket handed over, each would start unpaced and send its first
fan-out wave into an empty bucket (a 429 for every request past the burst), then pause and ramp.
Asserted on 429 counts and paces, never on times.
"""

from __future__ import annotations

from datetime import timedelta

from pipelines.commbox.client import recalled_pace
from tests.helpers import load, make_test_pipeline

RATE = 20.0
BURST = 5
# Transcripts only: one request a conversation in parallel (the fan-out), the rest is the walk.
LIGHT = {"include_transcripts": True, "activity_types": []}


def last_pace(pipeline) -> dict:
    return pipeline.state["sources"]["commbox"]["pace"]


def test_each_slice_and_the_next_run_start_from_the_learnt_pace(sim_factory, tmp_path):
    sim = sim_factory(conversations=200, rate_limit_rps=RATE, rate_limit_burst=BURST)
    pipeline = make_test_pipeline(tmp_path)
    first = load(pipeline, sim, checkpoint_conversations=60, **LIGHT)
    assert first.checkpoints >= 2
    assert first.throttled >= 1  # the first slice had to find the rate
    pace = last_pace(pipeline)
    learnt = recalled_pace(pace["learnt"], sim.base_url)
    assert learnt is not None and 0 < learnt["floor"] <= RATE * 1.05
    # The last slice was a new client with at most one 429 of its own: too few to bracket a rate
    # (the first only starts the ramp), so what it knows it was handed; its fan-out, with three
    # times the burst to send, did not start unpaced into the bucket.
    assert pace["requests"] >= 3 * BURST
    assert pace["throttled"] <= 1

    # The next run of the pipeline (a backfill of everything: as many requests as the first)
    # starts there too.
    created = sorted(o["created_at"] for o in sim.truth.objects())
    window = (created[0].date().isoformat(), (created[-1] + timedelta(days=1)).date().isoformat())
    again = load(pipeline, sim, advance=0, backfill=window, checkpoint_conversations=0, **LIGHT)
    assert again.conversations == first.conversations
    assert again.throttled <= 1 < first.throttled
