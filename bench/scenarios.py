"""The five scenarios of issue 6. Each starts its own simulator process and returns plain data
(dicts of numbers) that `bench.report` turns into `results.md` and `results.json`."""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import (
    ACTIVITY_PATH_REQUESTS,
    Dataset,
    activity_path_used,
    fetcher_spec,
    pipeline_spec,
    run_contender,
)
from .sim import SimProcess

logger = logging.getLogger("bench")

TABLES = ("objects", "childs", "transcripts", "activities")
# Scenario 6: real seconds between the two no-change runs, the simulator's clock running meanwhile.
UNCHANGED_GAP_SECONDS = 5.0


@dataclass(frozen=True)
class Sizes:
    """Scenario sizes; `FULL` is issue 6 as written, `QUICK` fits `make bench-quick` in two minutes."""

    conversations: int
    rounds: int
    # (requests/s the server allows, conversations): each account sized for a floor of about 75 s
    rate_plan: tuple[tuple[float, int], ...]
    scale_large: int
    scale_small: int
    # scenario 4's third size, no fan-out: memory must stay flat past `scale_large` (issue 15)
    scale_flat: int = 0
    concurrency: int = 16
    latency_ms: float = 20.0
    change_share: float = 0.01
    rate_fault_5xx: float = 0.05
    # scenario 6 (request counts per profile, incremental, no change): account size
    request_conversations: int = 3_000
    # the rate at which the variants beside the default ones run (configured, headers)
    rate_reference_rps: float = 50.0


FULL = Sizes(
    conversations=10_000,
    rounds=3,
    rate_plan=((10.0, 250), (50.0, 1250), (200.0, 5000)),
    scale_large=100_000,
    scale_small=10_000,
    scale_flat=300_000,
)
QUICK = Sizes(
    conversations=400,
    rounds=3,
    rate_plan=((50.0, 100),),
    request_conversations=300,
    scale_large=2_000,
    scale_small=400,
    scale_flat=4_000,
)


class Workspace:
    """Temporary working folders (DuckDB files, dlt pipelines dirs) and the contenders' logs."""

    def __init__(self, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="commbox-bench-"))
        self.logs = self.root / "logs"
        self.keep = keep
        self._n = 0
        # Scenario 1's last warehouse (every raw table): scenario 5 borrows its table shapes.
        self.warehouse_with_fan_out: Path | None = None

    def new(self, label: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:02d}-{label}"
        path.mkdir(parents=True)
        return path

    def drop(self, path: Path) -> None:
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    if not values:
        return {}
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / median if median else 0.0,
        "n": len(values),
    }


def _warm(sim: SimProcess, data: Dataset, ws: Workspace, fan_out: bool) -> float:
    """One untimed bare-fetch pass with the latency switched off, so every conversation's JSON is
    rendered once and cached in the simulator before anything is timed."""
    latency = sim.admin("config")["latency_ms"]
    sim.configure(latency_ms=0)
    workdir = ws.new("warm")
    result = run_contender(
        fetcher_spec("limit", sim, data, workdir, concurrency=8, fan_out=fan_out),
        sim,
        log_dir=ws.logs,
        label="warm",
    )
    sim.configure(latency_ms=latency)
    ws.drop(workdir)
    return result.get("wall_seconds", 0.0)


def _contender_spec(
    name: str, sim: SimProcess, data: Dataset, workdir: Path, sizes: Sizes, fan_out: bool
) -> dict:
    if name == "pipeline":
        return pipeline_spec(sim, data, workdir, concurrency=sizes.concurrency, fan_out=fan_out)
    return fetcher_spec(name, sim, data, workdir, concurrency=sizes.concurrency, fan_out=fan_out)


def full_history(sizes: Sizes, ws: Workspace) -> dict[str, Any]:
    """Scenario 1 (pipeline, limit and peer, alternating, `rounds` times each) and scenario 3
    (incremental run after the last full load, on the same simulator)."""
    contenders = ("limit", "pipeline", "peer")
    with SimProcess(sizes.conversations, latency_ms=sizes.latency_ms) as sim:
        data = Dataset.read(sim, fan_out=True)
        sim.advance(600)  # past the pipeline's safety margin: the whole history is closed
        warm_seconds = _warm(sim, data, ws, fan_out=True)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        last_pipeline_dir: Path | None = None
        for round_no in range(sizes.rounds):
            # Rotate the order each round so that no contender always runs first or last.
            order = contenders[round_no % 3 :] + contenders[: round_no % 3]
            for name in order:
                workdir = ws.new(name)
                logger.info("scenario 1, round %s: %s", round_no + 1, name)
                result = run_contender(
                    _contender_spec(name, sim, data, workdir, sizes, True), sim, log_dir=ws.logs, label=name
                )
                result["round"] = round_no + 1
                runs[name].append(result)
                logger.info(
                    "  %s: %.1f s, %s requests", name, result.get("wall_seconds", -1), result["requests"]
                )
                if name == "pipeline" and result.get("ok"):
                    if last_pipeline_dir is not None:
                        ws.drop(last_pipeline_dir)
                    last_pipeline_dir = workdir
                else:
                    ws.drop(workdir)
        incremental = _incremental(sim, data, sizes, ws, last_pipeline_dir, runs["pipeline"])
        views: dict[str, Any] = {"skipped": "no pipeline warehouse"}
        if last_pipeline_dir is not None:
            logger.info("scenario 5: marts on the %s-conversation warehouse", sizes.conversations)
            views = (
                run_contender(
                    {"contender": "views", "workdir": str(last_pipeline_dir)},
                    sim,
                    log_dir=ws.logs,
                    label="views",
                ).get("views")
                or {}
            )
            ws.warehouse_with_fan_out = last_pipeline_dir / "warehouse.duckdb"
    return {
        "views": views,
        "dataset": _dataset(data, sizes, fan_out=True),
        "warm_seconds": warm_seconds,
        "runs": runs,
        "wall": {name: _summary(runs[name], "wall_seconds") for name in contenders},
        "rss": {name: _summary(runs[name], "peak_rss_mb") for name in contenders},
        "cpu": {name: _summary(runs[name], "cpu_seconds") for name in contenders},
        "incremental": incremental,
    }


def _incremental(
    sim: SimProcess,
    data: Dataset,
    sizes: Sizes,
    ws: Workspace,
    workdir: Path | None,
    full_runs: list,
    activity_paths: str = "per_type",
    activity_path: str = "per_type",
) -> dict[str, Any]:
    """Scenario 3: change `change_share` of the conversations, spread over an hour of server time
    (ten batches, six minutes apart), then run the pipeline again on the same state and warehouse."""
    if workdir is None:
        return {"skipped": "no successful full pipeline run to continue from"}
    target = max(1, round(data.conversations * sizes.change_share))
    per_batch = max(1, target // 10)
    touched: set[int] = set()
    batches = 0
    while len(touched) < target and batches < 50:
        n = min(per_batch, target - len(touched))
        changed = sim.admin("mutate", {"messages": n - n // 3, "status_changes": n // 3})
        for ids in changed.values():
            touched.update(ids)
        sim.advance(360)
        batches += 1
    sim.advance(600)
    spec = pipeline_spec(
        sim, data, workdir, concurrency=sizes.concurrency, fan_out=True, activity_paths=activity_paths
    )
    result = run_contender(spec, sim, log_dir=ws.logs, label="incremental")
    full_requests = statistics.median([r["requests"] for r in full_runs if r.get("ok")])
    full_wall = statistics.median([r["wall_seconds"] for r in full_runs if r.get("ok")])
    return {
        "changed_conversations": len(touched),
        "mutation_batches": batches,
        "run": result,
        # The path the full run settled on: a small change is mostly the sample a run checks per type.
        "activity_path": activity_path,
        "minimum_requests": _minimum_incremental(len(touched), activity_path),
        "full_requests": full_requests,
        "full_wall_seconds": full_wall,
        "request_share_pct": 100 * result["requests"] / full_requests if full_requests else None,
    }


def _minimum_incremental(changed: int, activity_path: str = "per_type") -> int:
    # One list call per stream can hold up to 100 changed conversations; a transcript and the
    # activity path's requests for each (3 per type, 1 by the list's log).
    return changed * (1 + ACTIVITY_PATH_REQUESTS[activity_path])


def rate_limited(
    sizes: Sizes, ws: Workspace, rates: set[float] | None = None, kinds: set[str] | None = None
) -> dict[str, Any]:
    """Scenario 2 (issue 15, target 1): the pipeline with its default settings (no
    `max_requests_per_second`: the limit is unknown) behind the simulator's token bucket (burst 10,
    429 + Retry-After) at each rate of `sizes.rate_plan`, alone and with 5% of requests failing
    with 5xx on top; at the reference rate also configured with the limit, and with the server
    sending RateLimit-* headers. Each account is sized so that the floor (minimum requests / rate)
    is about 75 s; the wall time includes normalize and load. `rates` and `kinds` (default, 5xx,
    configured, headers) pick some of the runs."""
    variants: dict[str, dict[str, Any]] = {}
    datasets: dict[str, dict[str, Any]] = {}
    for rps, conversations in sizes.rate_plan:
        if rates and rps not in rates:
            continue
        plan: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
            ("default", "default", {}, {}),
            ("5xx", f"default, {sizes.rate_fault_5xx:.0%} 5xx", {"fault_5xx_rate": sizes.rate_fault_5xx}, {}),
        ]
        if rps == sizes.rate_reference_rps:
            plan.append(("configured", "configured", {}, {"max_requests_per_second": rps}))
            plan.append(("headers", "default, RateLimit-* headers", {"rate_limit_headers": "ietf"}, {}))
        plan = [step for step in plan if not kinds or step[0] in kinds]
        if not plan:
            continue
        with SimProcess(conversations, latency_ms=sizes.latency_ms) as sim:
            data = Dataset.read(sim, fan_out=True)
            sim.advance(600)
            _warm(sim, data, ws, fan_out=True)
            minimum = data.minimum_requests(fan_out=True)
            datasets[f"{rps:g}"] = _dataset(data, sizes, fan_out=True)
            for _, label, switches, source in plan:
                # A fresh, full bucket for every run (the bucket is rebuilt when the rate changes).
                sim.configure(rate_limit_rps=0, fault_5xx_rate=0.0, rate_limit_headers="")
                sim.configure(rate_limit_rps=rps, **switches)
                workdir = ws.new(f"rate-{rps:g}")
                spec = pipeline_spec(
                    sim, data, workdir, concurrency=sizes.concurrency, fan_out=True, **source
                )
                logger.info("scenario 2: %g requests/s, %s conversations, %s", rps, conversations, label)
                result = run_contender(spec, sim, log_dir=ws.logs, label=f"rate-{rps:g}-{label}")
                ws.drop(workdir)
                wall = result.get("wall_seconds")
                answered_2xx = int(result.get("status_codes", {}).get("200", 0))
                result.update(
                    variant=label,
                    rps=rps,
                    fault_5xx_rate=switches.get("fault_5xx_rate", 0.0),
                    conversations=conversations,
                    minimum_requests=minimum,
                    max_requests_per_second=source.get("max_requests_per_second", 0.0),
                    floor_seconds=minimum / rps,
                    answered_2xx=answered_2xx,
                    achieved_rps=answered_2xx / wall if wall else None,
                    share_of_allowed_rate_pct=100 * (minimum / rps) / wall if wall else None,
                    throttled_pct=100 * result["throttled"] / max(1, result["requests"]),
                )
                variants[f"{rps:g} req/s, {label}"] = result
    return {"datasets": datasets, "variants": variants}


def request_counts(sizes: Sizes, ws: Workspace) -> dict[str, Any]:
    """Scenario 6 (issue 15, targets 4 and 5): requests of a full run against the minimum for the
    endpoints used, on the default profile and the documentation-shaped one (whose list leaves
    out the messages' sender, so each conversation needs its own Get Object); then, on the same
    state, a run after 1% of the conversations changed, then two runs after nothing changed on a
    server clock running with real time: the first reads the hourly snapshot (due), the second,
    `UNCHANGED_GAP_SECONDS` later, is target 5's run."""
    out: dict[str, Any] = {}
    for profile in ("default", "docs"):
        with SimProcess(sizes.request_conversations, profile=profile) as sim:
            data = Dataset.read(sim, fan_out=True)
            sim.advance(600)
            workdir = ws.new(f"requests-{profile}")
            # The default settings: activities by the cheapest path the run verifies.
            spec = pipeline_spec(
                sim, data, workdir, concurrency=sizes.concurrency, fan_out=True, activity_paths="auto"
            )
            logger.info("scenario 6: %s profile, full run of %s conversations", profile, data.conversations)
            full = run_contender(spec, sim, log_dir=ws.logs, label=f"requests-{profile}-full")
            # The minimum for the endpoints the run used, and what reading per type needs.
            path = activity_path_used(full.get("requests_by_endpoint", {}), data.conversations)
            docs = profile == "docs"
            minimum = data.minimum_requests(fan_out=True, sender_lookup=docs, activity_path=path)
            per_type = data.minimum_requests(fan_out=True, sender_lookup=docs)
            incremental = _incremental(
                sim, data, sizes, ws, workdir, [full], activity_paths="auto", activity_path=path
            )
            # From here the server's clock runs with real time, as a real server's does between
            # scheduled runs: the harness's jumps of the frozen clock (the mutation hour above) are
            # a server clock moving while this machine's stands still, which the pipeline's
            # estimate of the server's now (this machine's clock plus the skew its last run
            # measured) cannot see; it then reads one window more, and decides whether the hourly
            # snapshot is due an hour late. A no-change run's requests do not depend on the gap's
            # length (one window per stream holds the look-back hour plus a gap under a day).
            sim.configure(clock_running=True)
            # The 1%-changed run, its estimate behind the jumped clock, left the snapshot read
            # before the mutation hour: over an hour old now, so this run reads it again.
            logger.info("scenario 6: %s profile, a run after no change, snapshot due", profile)
            snapshot_due = run_contender(spec, sim, log_dir=ws.logs, label=f"requests-{profile}-snapshot")
            time.sleep(UNCHANGED_GAP_SECONDS)
            logger.info("scenario 6: %s profile, a run after no change", profile)
            unchanged = run_contender(spec, sim, log_dir=ws.logs, label=f"requests-{profile}-unchanged")
            ws.drop(workdir)
            out[profile] = {
                "dataset": _dataset(data, sizes, fan_out=True),
                "activity_path": path,
                "activity_requests": full.get("requests_by_endpoint", {}).get("activities", 0),
                "minimum_requests": minimum,
                "per_conversation_minimum": (minimum - data.list_calls() - len(data.streams) - 4)
                / max(1, data.conversations),
                "per_type_minimum": per_type,
                "full": full,
                "request_ratio": full["requests"] / minimum if full.get("ok") else None,
                "incremental": incremental,
                "unchanged": unchanged,
                "unchanged_gap_seconds": UNCHANGED_GAP_SECONDS,
                "unchanged_snapshot_due": snapshot_due,
            }
    return out


def scale(sizes: Sizes, ws: Workspace) -> dict[str, Any]:
    """Scenarios 4 and 5: the pipeline without fan-out at `scale_small`, `scale_large` and
    `scale_flat` conversations (rows/s, peak RSS: flat from the large size on), then the marts
    queried on the `scale_large` warehouse."""
    out: dict[str, Any] = {}
    for n in (sizes.scale_small, sizes.scale_large, *([sizes.scale_flat] if sizes.scale_flat else [])):
        with SimProcess(n, latency_ms=sizes.latency_ms) as sim:
            # Every rendered conversation must fit the simulator's cache for the warm pass to hold.
            sim.configure(fragment_cache_size=max(60_000, 2 * n))
            data = Dataset.read(sim, fan_out=False)
            sim.advance(600)
            _warm(sim, data, ws, fan_out=False)
            workdir = ws.new(f"scale-{n}")
            spec = pipeline_spec(sim, data, workdir, concurrency=sizes.concurrency, fan_out=False)
            logger.info("scenario 4: pipeline without fan-out, %s conversations", n)
            result = run_contender(spec, sim, log_dir=ws.logs, label=f"scale-{n}")
            if n == sizes.scale_large and result.get("ok"):
                # Scenario 5's marts, in a process of their own: the run's peak RSS is the run's
                # at every size (issue 15 compares them), and the views' is reported beside it.
                views_spec: dict[str, Any] = {"contender": "views", "workdir": str(workdir)}
                if ws.warehouse_with_fan_out is not None:
                    views_spec["views_donor"] = str(ws.warehouse_with_fan_out)
                logger.info("scenario 5: marts on the %s-conversation warehouse", n)
                views = run_contender(views_spec, sim, log_dir=ws.logs, label=f"views-{n}")
                result["views"] = views.get("views") or {}
                result["views_peak_rss_mb"] = views.get("peak_rss_mb")
            ws.drop(workdir)
            out[str(n)] = {"dataset": _dataset(data, sizes, fan_out=False), "run": result}
    return out


def _dataset(data: Dataset, sizes: Sizes, *, fan_out: bool) -> dict[str, Any]:
    return {
        "conversations": data.conversations,
        "streams": data.streams,
        "days": 30,
        "messages_per_conversation": round(data.messages_per_conversation, 2),
        "truth": data.truth,
        "list_calls_minimum": data.list_calls(),
        "minimum_requests": data.minimum_requests(fan_out=fan_out),
        "latency_ms": sizes.latency_ms,
        "concurrency": sizes.concurrency,
        "fan_out": fan_out,
    }
