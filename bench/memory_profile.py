"""Where a run's memory goes: `python -m bench.memory_profile CONVERSATIONS [--tracemalloc]`.

Runs the pipeline (no fan-out, as scenario 4) in this process against a simulator in its own
process, samples this process's RSS every 0.1 s with the step it is in (extract, normalize, load
of each checkpoint slice), and prints the peak of each step; with `--tracemalloc`, the Python
allocations alive at the end of each step, by line (tracemalloc slows the run several times).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from .core import Dataset, pipeline_spec
from .sim import SimProcess


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_profile")
    parser.add_argument("conversations", type=int)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--fan-out", action="store_true")
    parser.add_argument("--duckdb-memory", help="DuckDB memory_limit for this run (default: the runner's)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="commbox-memory-"))
    with SimProcess(args.conversations) as sim:
        sim.configure(fragment_cache_size=max(60_000, 2 * args.conversations))
        data = Dataset.read(sim, fan_out=args.fan_out)
        sim.advance(600)
        spec = pipeline_spec(sim, data, workdir, concurrency=16, fan_out=args.fan_out)
        os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "warehouse.duckdb")
        from pipelines.ops import runner
        from pipelines.ops.runner import make_pipeline, run_pipeline

        if args.duckdb_memory:
            runner.DUCKDB_MEMORY_LIMIT = args.duckdb_memory

        pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(workdir / "pipelines"))
        step = ["start"]
        peaks: dict[str, float] = {}
        order: list[str] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = _rss_mb()
                if step[0] not in peaks:
                    order.append(step[0])
                peaks[step[0]] = max(peaks.get(step[0], 0.0), rss)
                time.sleep(0.1)

        import pyarrow

        counts: dict[str, int] = {}
        native: dict[str, tuple[str, float, float]] = {}
        snapshots: list[tuple[str, Any]] = []
        for name in ("extract", "normalize", "load"):
            method = getattr(pipeline, name)

            def timed(*a: Any, __m: Any = method, __n: str = name, **k: Any) -> Any:
                counts[__n] = counts.get(__n, 0) + 1
                step[0] = f"{__n} {counts[__n]}"
                try:
                    return __m(*a, **k)
                finally:
                    if args.tracemalloc:
                        snapshots.append((step[0], tracemalloc.take_snapshot()))
                    pool = pyarrow.default_memory_pool()
                    native[step[0]] = (
                        pool.backend_name,
                        pool.bytes_allocated() / 2**20,
                        pool.max_memory() / 2**20,
                    )
                    step[0] = f"after {__n} {counts[__n]}"

            setattr(pipeline, name, timed)
        if args.tracemalloc:
            tracemalloc.start(8)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.perf_counter()
        summary = run_pipeline(pipeline, build_views=False, source_overrides=spec["source"])
        wall = time.perf_counter() - began
        done.set()
        sampler.join()
    print(
        f"{args.conversations} conversations, {wall:.1f} s, {summary.requests} requests, rows {summary.rows}"
    )
    for name in order:
        arrow = native.get(name)
        pool = f"  arrow {arrow[0]}: {arrow[1]:.1f} MB held, {arrow[2]:.1f} MB at most" if arrow else ""
        print(f"  {name:<20} peak RSS {peaks[name]:7.1f} MB{pool}")
    loads = [(name, snap) for name, snap in snapshots if name.startswith("load")]
    if loads:
        name, snap = loads[0]
        print(f"\n== Python allocations alive at the end of {name}")
        for stat in snap.statistics("lineno")[:15]:
            print(f"  {stat.size / 2**20:7.1f} MB {stat.count:>8} {stat.traceback[0]}")
    for (before, old), (name, new) in itertools.pairwise(loads):
        print(f"\n== grown from the end of {before} to the end of {name}")
        for stat in new.compare_to(old, "traceback")[:8]:
            print(f"  {stat.size_diff / 2**20:+7.2f} MB {stat.count_diff:>+8}")
            for line in stat.traceback.format()[-8:]:
                print("      " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
