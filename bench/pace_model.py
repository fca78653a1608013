"""A model of the request budget against a token-bucket server on a simulated clock.

`python -m bench.pace_model [--rates 10,50,200] [--seconds 120] [--fault-5xx 0.05]` runs the real
`RequestBudget` (its `time` swapped for a simulated clock, so a two-minute run takes a fraction of a
second and no result depends on the machine's load) against the simulator's throttling rule: a
bucket of `burst` tokens refilled at `rate` a second, one token a request, a 429 with `Retry-After`
= the whole seconds until the next token (at least 1) when it is empty, 5xx drawn on top after a
token was taken. Up to `concurrency` requests are in flight, each answered `latency` seconds after
it starts; a 429 pauses the budget as `CommBoxClient.get` does, a 5xx makes that request wait its
own back-off.

It shows what the pacing algorithm can reach by itself (the share of the allowed rate, the 429s);
the benchmark (`python -m bench --only 2`) measures the pipeline as it runs, load included.
`tests/test_budget.py` asserts the same figures on the same model.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from requests.structures import CaseInsensitiveDict

from pipelines.commbox import client as client_module
from pipelines.commbox.client import RequestBudget


class SimClock:
    """A clock that moves only when someone sleeps; a sleep first delivers every answer due."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.due: list[tuple[float, int, Any]] = []
        self._n = 0

    def monotonic(self) -> float:
        return self.now

    def at(self, moment: float, action: Any) -> None:
        self._n += 1
        heapq.heappush(self.due, (moment, self._n, action))

    def sleep(self, seconds: float) -> None:
        target = self.now + max(0.0, seconds)
        while self.due and self.due[0][0] <= target:
            moment, _, action = heapq.heappop(self.due)
            self.now = max(self.now, moment)
            action()
        self.now = target


@dataclass
class Bucket:
    """The simulator's rule (`pipelines/commbox_sim/faults.py`): `rate` a second, `burst` stored."""

    rate: float
    burst: int = 10
    tokens: float = field(init=False)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> int | None:
        """None when a token was taken, else the Retry-After seconds of the 429."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))

    def headers(self) -> CaseInsensitiveDict[str]:
        """What the simulator sends with `rate_limit_headers="ietf"`."""
        return CaseInsensitiveDict(
            {
                "RateLimit-Limit": str(int(self.rate)),
                "RateLimit-Remaining": str(int(self.tokens)),
                "RateLimit-Reset": "1",
                "RateLimit-Policy": f"{int(self.rate)};w=1",
            }
        )


@dataclass
class Outcome:
    rate: float
    seconds: float
    answered_2xx: int
    throttled: int
    failed_5xx: int
    sent: int
    events: int = 0  # overshoots the budget reacted to
    learnt: dict[str, float] | None = None  # what the budget learnt, for a later run to resume

    @property
    def share_of_rate(self) -> float:
        """2xx answers a second over the allowed rate (5xx took tokens too, so they lower it)."""
        return self.answered_2xx / self.seconds / self.rate

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(1, self.sent)


def run(
    rate: float,
    *,
    seconds: float = 120.0,
    burst: int = 10,
    concurrency: int = 16,
    latency: float = 0.02,
    fault_5xx: float = 0.0,
    headers: bool = False,
    configured: float = 0.0,
    seed: int = 1,
    learnt: dict[str, float] | None = None,
    jitter: float = 0.0,
    threads: int = 0,
    stall_every: float = 0.0,
    stall: float = 0.05,
) -> Outcome:
    """Send as fast as the budget lets for `seconds` of simulated time against a `rate` bucket
    (full at the start); with `learnt`, the budget first resumes what an earlier one learnt (the
    next checkpoint slice, or the next run). With `jitter` (seconds), the server takes each
    request's token after an exponential queueing delay of that mean, as a loaded server does: the
    send times the budget learns from then no longer say exactly when the tokens were taken.
    `threads` (default `concurrency`) are the workers: one waiting out a 5xx's back-off holds no
    slot of the budget, but sends nothing meanwhile. With `stall_every` (seconds), the server stops
    taking requests for `stall` seconds that often (a loaded machine), then takes the ones that
    queued meanwhile at once: its bucket holds only `burst` of the tokens the stall refilled, so the
    rest are throttled at any pace."""
    clock = SimClock()
    saved = client_module.time
    client_module.time = SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep, time=time.time)  # type: ignore[assignment]
    try:
        budget = RequestBudget(concurrency, configured)
        workers = threads or concurrency
        budget.resume(learnt)
        bucket = Bucket(rate, burst, stamp=clock.now)
        rng = random.Random(seed)
        end = clock.now + seconds
        began = clock.now
        counts = {"ok": 0, "429": 0, "5xx": 0, "sent": 0}
        in_flight = 0
        backoff: list[float] = []  # when each request failed with a 5xx may go again

        def answer(
            sent: float, status: int, retry_after: int | None, sent_headers: CaseInsensitiveDict[str] | None
        ) -> None:
            nonlocal in_flight
            in_flight -= 1
            if sent_headers:
                budget.observe_headers(sent_headers, sent)
            if status == 429:
                counts["429"] += 1
                budget.pause(float(retry_after or 1), sent)
            elif status >= 500:
                counts["5xx"] += 1
                # As `CommBoxClient.get`: the simulator's 503 says Retry-After 1, 500 and 502 wait 0.5 s.
                heapq.heappush(backoff, clock.now + (1.0 if status == 503 else 0.5))
            else:
                counts["ok"] += 1
            if status != 429:
                budget.record_answer(sent)

        def serve(sent: float) -> None:
            taken = clock.now
            retry_after = bucket.take(taken)
            status = 429 if retry_after is not None else 200
            if status == 200 and fault_5xx and rng.random() < fault_5xx:
                status = (500, 502, 503)[int(rng.random() * 3)]
            told = bucket.headers() if headers else None
            clock.at(taken + latency, lambda: answer(sent, status, retry_after, told))

        while clock.now < end:
            # A worker waiting out a 5xx's back-off holds no slot of the budget but is not free to
            # send either: `threads` workers in all.
            while in_flight >= concurrency or (in_flight and backoff and len(backoff) >= workers - in_flight):
                clock.sleep(clock.due[0][0] - clock.now if clock.due else 0.01)
            while backoff and backoff[0] <= clock.now:
                heapq.heappop(backoff)
            with budget:
                now = clock.now
                if now >= end:
                    break
                counts["sent"] += 1
                in_flight += 1
                # The server takes the token when it gets to the request: at once, or (a loaded
                # server) after a queueing delay; the answer comes `latency` after that.
                delay = rng.expovariate(1.0 / jitter) if jitter else 0.0
                if stall_every and (now + delay - began) % stall_every < stall:
                    delay += stall - (now + delay - began) % stall_every
                if delay:
                    clock.at(now + delay, lambda t=now: serve(t))
                else:
                    serve(now)
        return Outcome(
            rate,
            seconds,
            counts["ok"],
            counts["429"],
            counts["5xx"],
            counts["sent"],
            budget.events,
            budget.learnt(),
        )
    finally:
        client_module.time = saved  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pace_model", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="10,50,200")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--fault-5xx", type=float, default=0.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--headers", action="store_true", help="the server sends RateLimit-* headers")
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="mean queueing delay before a token is taken"
    )
    parser.add_argument("--threads", type=int, default=0, help="workers (default: --concurrency)")
    parser.add_argument(
        "--stall-every", type=float, default=0.0, help="seconds between the server's stalls (default: none)"
    )
    parser.add_argument("--stall-ms", type=float, default=50.0, help="how long each stall lasts")
    args = parser.parse_args(argv)
    print(f"{'rate':>6} {'seconds':>7} {'2xx':>7} {'429':>5} {'5xx':>5} {'of rate':>8} {'429 share':>9}")
    for rate in (float(r) for r in args.rates.split(",")):
        out = run(
            rate,
            seconds=args.seconds,
            burst=args.burst,
            concurrency=args.concurrency,
            latency=args.latency_ms / 1000,
            fault_5xx=args.fault_5xx,
            headers=args.headers,
            jitter=args.jitter_ms / 1000,
            threads=args.threads,
            stall_every=args.stall_every,
            stall=args.stall_ms / 1000,
        )
        print(
            f"{rate:>6.0f} {out.seconds:>7.0f} {out.answered_2xx:>7} {out.throttled:>5} {out.failed_5xx:>5}"
            f" {out.share_of_rate:>8.1%} {out.throttled_share:>9.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
