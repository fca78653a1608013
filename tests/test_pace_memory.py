"""The pace a run learnt is not learnt again: not by its next checkpoint slice, nor by its next run.

Real HTTP against the simulator's token bucket (429 + Retry-After), real DuckDB. Each slice builds a
new client; without the learnt bracket handed over, each would start unpaced, send its first
fan-out wave into the bucket, meet a 429 and start finding the rate again (the budget logs "finding
the server's rate" when it does). Asserted on what the budgets learnt and logged, never on times.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from pipelines.commbox.client import recalled_pace
from tests.helpers import load, make_test_pipeline

RATE = 20.0
BURST = 10
# Transcripts only: one request a conversation in parallel (the fan-out), the rest is the walk.
LIGHT = {"include_transcripts": True, "activity_types": []}
FINDING = "finding the server's rate"


def findings(caplog) -> int:
    return sum(FINDING in record.getMessage() for record in caplog.records if record.name == "commbox.client")


def test_each_slice_and_the_next_run_start_from_the_learnt_pace(sim_factory, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="commbox.client")
    sim = sim_factory(conversations=200, rate_limit_rps=RATE, rate_limit_burst=BURST)
    pipeline = make_test_pipeline(tmp_path)
    first = load(pipeline, sim, checkpoint_conversations=60, **LIGHT)
    assert first.checkpoints >= 2
    # Only the first slice found the rate; the later ones were handed what it learnt.
    assert findings(caplog) == 1
    pace = pipeline.state["sources"]["commbox"]["pace"]
    # The last slice's own budget knew a bracket (it takes two 429s of its own to find one) and
    # kept it in the state, with when and for which account.
    learnt = recalled_pace(pace["learnt"], sim.base_url)
    assert learnt is not None and 0 < learnt["floor"] <= RATE * 1.05
    assert pace["throttled"] <= 1

    # The next run of the pipeline (a backfill of everything: as many requests as the first)
    # starts from the state's bracket: it never finds the rate again.
    caplog.clear()
    created = sorted(o["created_at"] for o in sim.truth.objects())
    window = (created[0].date().isoformat(), (created[-1] + timedelta(days=1)).date().isoformat())
    again = load(pipeline, sim, advance=0, backfill=window, checkpoint_conversations=0, **LIGHT)
    assert again.conversations == first.conversations
    assert findings(caplog) == 0
    assert again.throttled < first.throttled
