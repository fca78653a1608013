"""CommBoxClient's HTTP path against the real simulator: who is served first when requests queue for
the budget, and what reaches the server.

The walker's list call is what the next batch of fan-out work waits for: queued behind every fan-out
worker, it left the fan-out without work (issue 15, target 2). Order is asserted, never time.
"""

from __future__ import annotations

import threading
from typing import Any

from pipelines.commbox.client import CommBoxClient
from pipelines.commbox.settings import MANAGERS, STATS_STREAMS

WORKERS = 8
MAX_REQUESTS = 250


def _hammer(client: CommBoxClient, stop: threading.Event, started: threading.Barrier) -> None:
    client.serve_in_background()
    started.wait()
    # Bounded, so that a starved foreground request is served in the end and the test fails on
    # the count instead of hanging.
    while not stop.is_set() and client.stats["requests"] < MAX_REQUESTS:
        client.get(MANAGERS)


def test_a_foreground_request_goes_before_queued_fan_out_workers(sim_factory: Any) -> None:
    """With one slot and eight fan-out workers queued for it, a request from an unmarked thread is
    sent next: at most the one worker already past the gate goes before it (without the gate, the
    workers queued at the budget before it went first)."""
    sim = sim_factory(conversations=20, latency_ms=20)
    client = CommBoxClient(sim.base_url, "demo-key", max_concurrency=1)
    stop = threading.Event()
    started = threading.Barrier(WORKERS + 1)
    threads = [
        threading.Thread(target=_hammer, args=(client, stop, started), daemon=True) for _ in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    started.wait()
    try:
        sent_before = []
        for _ in range(5):
            threading.Event().wait(0.1)  # the workers queue up again, then the walker asks
            before = client.stats["requests"]
            client.get(STATS_STREAMS)
            sent_before.append(client.stats["requests"] - before - 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert max(sent_before) <= 1, sent_before


def test_the_connection_state_never_shows_the_key(sim_factory: Any) -> None:
    """What the client keeps to send (pool, target, headers) has a repr without the key in it: a
    trace or log that renders it must not leak the Authorization header."""
    sim = sim_factory(conversations=5, api_key="canary-key-7f3a")
    client = CommBoxClient(sim.base_url, "canary-key-7f3a")
    client.get(MANAGERS)
    assert client._direct is not None
    assert "canary-key-7f3a" not in repr(client._direct)
    assert "canary-key-7f3a" not in repr(client)
