"""Where a run's memory goes: `python -m bench.memory_profile CONVERSATIONS [--tracemalloc]`.

Runs the pipeline (no fan-out, as scenario 4) in this process against a simulator in its own
process, samples this process's RSS every 0.1 s with the step it is in (extract, normalize, load
of each checkpoint slice), and prints the peak of each step; with `--tracemalloc`, the Python
allocations alive at the end of each step, by line (tracemalloc slows the run several times).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from .core import Dataset, pipeline_spec
from .run_one import own_peak_rss_mb, status_mb
from .sim import SimProcess


def _rss_mb() -> float:
    return status_mb("VmRSS") or 0.0


def _hwm_mb() -> float:
    """This process's high-water mark: what `make bench` reports for a run."""
    return own_peak_rss_mb() or 0.0


def _open_duckdb_files() -> int:
    """How many DuckDB database files this process holds open: a database stays in memory (its
    buffer pool with it) while any connection to it is open."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).endswith(".duckdb"):
                count += 1
    return count


def _trim(pool: Any) -> tuple[float, float, float]:
    """RSS now, after glibc gives its free pages back, and after arrow's pool gives back its own:
    how much of the RSS is memory freed but kept by an allocator rather than memory in use."""
    from pipelines.ops.runner import _malloc_trim

    at_end = _rss_mb()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    glibc = _rss_mb()
    pool.release_unused()
    return at_end, glibc, _rss_mb()


def _smaps() -> tuple[dict[str, float], dict[str, float]]:
    """This process's RSS by mapping kind (MB): glibc's main heap, anonymous mappings (glibc's thread
    arenas, large blocks, DuckDB's and arrow's allocators, thread stacks), and each file mapped (the
    libraries' code and data, paged in as their code paths run); and what the allocators say they
    hold (`_allocators`), to tell the anonymous mappings apart."""
    kinds: dict[str, float] = {}
    name = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            name = "[anonymous]" if not path else path if path.startswith("[") else Path(path).name
        elif head[0] == "Rss:":
            kinds[name] = kinds.get(name, 0.0) + int(head[1]) / 1024
    return kinds, _allocators()


def _allocators() -> dict[str, float]:
    """What the allocators say they hold (MB), to tell the anonymous RSS apart: glibc's blocks in use
    and free inside its heaps (`mallinfo2`, every arena), DuckDB's jemalloc resident pages."""
    import ctypes

    from pipelines.ops.runner import _libc

    held: dict[str, float] = {}

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (f, ctypes.c_size_t)
            for f in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    mallinfo2 = getattr(_libc(), "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = MallInfo2
        info = mallinfo2()
        held["glibc in use"] = (info.uordblks + info.hblkhd) / 2**20
        held["glibc free"] = info.fordblks / 2**20
    with contextlib.suppress(OSError, AttributeError, ImportError):
        mallctl = ctypes.CDLL(__import__("_duckdb").__file__).duckdb_je_mallctl
        epoch, size, value = ctypes.c_uint64(1), ctypes.c_size_t(8), ctypes.c_size_t(0)
        mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(8))
        mallctl(b"stats.resident", ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0))
        held["duckdb jemalloc"] = value.value / 2**20
    held.update(_pymalloc())
    return held


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator (MB): its arenas mapped, and the bytes in live objects in
    them. An arena goes back to the system only once every object in it is gone, so a step that made
    millions of objects and kept a few leaves arenas mapped that tracemalloc does not count."""
    import sys

    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    held: dict[str, float] = {}
    for line in text.splitlines():
        label, _, value = line.rpartition("=")
        value = value.strip().replace(",", "")
        if not value.isdigit():
            continue
        if "arenas allocated current" in label:
            held["pymalloc arenas"] = float(int(value))  # 1 MiB each
        elif "bytes in allocated blocks" in label:
            held["pymalloc live"] = int(value) / 2**20
    return held


def _watch_statements(in_flight: dict[int, str], peaks: dict[str, list[float]], step: list[str]) -> None:
    """Make the DuckDB SQL client publish each statement it runs in `in_flight` (the load runs jobs
    on several threads), so the sampler can attribute RSS to it; `peaks[key]` gets RSS before, the
    highest while it ran and after. The key is the step and the statement without its literals."""
    import contextlib
    import re

    from dlt.destinations.impl.duckdb.sql_client import DuckDbSqlClient

    original = DuckDbSqlClient.execute_query

    @contextlib.contextmanager
    def execute_query(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = re.sub(r"\s+", " ", str(query)).strip()
        text = re.sub(r"'[^']*'", "'…'", text)
        key = f"{step[0]:<12} {text[:110]}"
        token = id(object())
        before = _rss_mb()
        peaks[key] = [before, before, before]
        in_flight[token] = key
        try:
            with original(self, query, *args, **kwargs) as cursor:
                yield cursor
        finally:
            in_flight.pop(token, None)
            after = _rss_mb()
            peaks[key][1] = max(peaks[key][1], after)
            peaks[key][2] = after

    DuckDbSqlClient.execute_query = execute_query  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_profile")
    parser.add_argument("conversations", type=int)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--fan-out", action="store_true")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="the simulator's latency per answer (scenario 4: 20)"
    )
    parser.add_argument("--duckdb-memory", help="DuckDB memory_limit for this run (default: the runner's)")
    parser.add_argument(
        "--duckdb-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a DuckDB global setting for this run's destination (repeatable), e.g. threads=1",
    )
    parser.add_argument(
        "--trim",
        action="store_true",
        help="after each step, give freed memory back (malloc_trim, arrow's pool) and say how much it was",
    )
    parser.add_argument(
        "--no-give-back",
        action="store_true",
        help="leave freed memory with glibc and arrow between steps (the runner's give_back_memory off)",
    )
    parser.add_argument(
        "--checkpoint", type=int, help="conversations per checkpoint slice (default: the pipeline's)"
    )
    parser.add_argument(
        "--views",
        action="store_true",
        help="then build the reporting views as a run does (SLA tables, newest wins, models): step `views`",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="also the peak RSS of each SQL statement the destination runs",
    )
    parser.add_argument(
        "--smaps",
        action="store_true",
        help="RSS by mapping (heap, anonymous, each library) as each extract starts, and how it moved",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="commbox-memory-"))
    with SimProcess(args.conversations, latency_ms=args.latency_ms) as sim:
        sim.configure(fragment_cache_size=max(60_000, 2 * args.conversations))
        data = Dataset.read(sim, fan_out=args.fan_out)
        sim.advance(600)
        spec = pipeline_spec(sim, data, workdir, concurrency=16, fan_out=args.fan_out)
        os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "warehouse.duckdb")
        from pipelines.ops import runner
        from pipelines.ops.runner import make_pipeline, run_pipeline

        if args.duckdb_memory:
            args.duckdb_config.append(f"memory_limit={args.duckdb_memory}")
        if args.duckdb_config:
            made = runner.duckdb_credentials
            extra = dict(item.split("=", 1) for item in args.duckdb_config)

            def with_extra(path: str, *a: Any, **k: Any) -> Any:
                credentials = made(path, *a, **k)
                credentials.global_config = {**(credentials.global_config or {}), **extra}
                return credentials

            runner.duckdb_credentials = with_extra  # type: ignore[assignment]

        if args.checkpoint is not None:
            spec["source"]["checkpoint_conversations"] = args.checkpoint
        if args.no_give_back:
            runner.give_back_memory = lambda: None  # type: ignore[assignment]
        pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(workdir / "pipelines"))
        step = ["start"]
        peaks: dict[str, float] = {}
        order: list[str] = []
        done = threading.Event()
        # The statements in flight (`--statements`) and, per statement, RSS before, highest while it
        # ran, after, and how many times it ran.
        in_flight: dict[int, str] = {}
        statement_peaks: dict[str, list[float]] = {}
        if args.statements:
            _watch_statements(in_flight, statement_peaks, step)

        at_peak: list[Any] = [0.0, "", None]
        highest: list[Any] = [0.0, None]
        hwm_steps: list[tuple[str, float]] = [("", 0.0)]

        def sample() -> None:
            while not done.is_set():
                rss = _rss_mb()
                hwm = _hwm_mb()
                if hwm > hwm_steps[-1][1] + 2:
                    # The step a rise happened in, even one too brief to sample (a call that holds
                    # the GIL stops this thread).
                    hwm_steps.append((step[0], hwm))
                if step[0] not in peaks:
                    order.append(step[0])
                peaks[step[0]] = max(peaks.get(step[0], 0.0), rss)
                for key in list(in_flight.values()):
                    if key in statement_peaks:
                        statement_peaks[key][1] = max(statement_peaks[key][1], rss)
                if args.smaps and rss > highest[0] + 3:
                    # The mappings at the run's highest point too: between slices shows the floor only.
                    highest[:] = [rss, (f"top {step[0]}", _smaps())]
                if args.tracemalloc:
                    # What Python holds at the highest point of the run (the snapshot taken when
                    # the traced memory is 5 MB over the last one's): the end of a step misses it.
                    traced = tracemalloc.get_traced_memory()[0] / 2**20
                    if traced > at_peak[0] + 5:
                        at_peak[:] = [traced, step[0], tracemalloc.take_snapshot()]
                time.sleep(0.02)

        import pyarrow

        counts: dict[str, int] = {}
        trims: dict[str, tuple[float, float, float]] = {}
        open_files: dict[str, int] = {}
        native: dict[str, tuple[str, float, float]] = {}
        snapshots: list[tuple[str, Any]] = []
        maps: list[tuple[str, tuple[dict[str, float], dict[str, float]]]] = []
        # The most memory Python objects held at once during each step (`--tracemalloc`): a peak of
        # short-lived objects leaves RSS up afterwards even though nothing stays alive.
        python_peaks: dict[str, float] = {}
        for name in ("extract", "normalize", "load"):
            method = getattr(pipeline, name)

            def timed(*a: Any, __m: Any = method, __n: str = name, **k: Any) -> Any:
                counts[__n] = counts.get(__n, 0) + 1
                step[0] = f"{__n} {counts[__n]}"
                if args.smaps and __n == "extract":
                    maps.append((step[0], _smaps()))
                if args.tracemalloc:
                    tracemalloc.reset_peak()
                try:
                    return __m(*a, **k)
                finally:
                    if args.tracemalloc:
                        python_peaks[step[0]] = tracemalloc.get_traced_memory()[1] / 2**20
                        snapshots.append((step[0], tracemalloc.take_snapshot()))
                    pool = pyarrow.default_memory_pool()
                    if args.trim:
                        trims[step[0]] = _trim(pool)
                    open_files[step[0]] = _open_duckdb_files()
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
        # The peak RSS from here on is the run's, not the setup's (reading a large dataset's truth
        # took 506 MB at 300,000 conversations): Linux resets VmHWM on a write of 5 to clear_refs.
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        hwm_steps[:] = [("", _hwm_mb())]
        began = time.perf_counter()
        summary = run_pipeline(pipeline, build_views=False, source_overrides=spec["source"])
        wall = time.perf_counter() - began
        if args.views:
            from pipelines.ops.runner import build_reporting_views

            step[0] = "views"
            build_reporting_views(pipeline)
            step[0] = "after views"
        done.set()
        sampler.join()
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"{args.conversations} conversations, {wall:.1f} s, {summary.requests} requests, rows {summary.rows}"
    )
    # As `make bench` measures a run (the high-water mark since the run began: the setup's reading
    # of the dataset is not the run's), and the CPU it took (the simulator's is its own process's).
    print(
        f"peak RSS {_hwm_mb():.0f} MB (VmHWM), highest sampled {max(peaks.values()):.0f} MB, "
        f"CPU {usage.ru_utime + usage.ru_stime:.1f} s"
    )
    for name in order:
        arrow = native.get(name)
        pool = f"  arrow {arrow[0]}: {arrow[1]:.1f} MB held, {arrow[2]:.1f} MB at most" if arrow else ""
        held = f"  DuckDB files open: {open_files[name]}" if open_files.get(name) else ""
        python = f"  Python peak {python_peaks[name]:.1f} MB" if name in python_peaks else ""
        print(f"  {name:<20} peak RSS {peaks[name]:7.1f} MB{pool}{held}{python}")
        if name in trims:
            at_end, glibc, arrow_pool = trims[name]
            print(
                f"  {'':<20} at its end {at_end:7.1f} MB; malloc_trim gave back {at_end - glibc:.1f} MB, "
                f"arrow's pool {glibc - arrow_pool:.1f} MB"
            )
    print(
        "  the high-water mark rose last in: "
        + ", ".join(f"{name} ({mb:.0f} MB)" for name, mb in hwm_steps[-5:] if name)
    )
    if statement_peaks:
        print("\n== SQL statements by highest RSS while they ran (RSS before, highest, after, MB)")
        ranked = sorted(statement_peaks.items(), key=lambda kv: kv[1][1], reverse=True)
        for key, (before, top, after) in ranked[:30]:
            print(f"  {before:6.0f} {top:6.0f} {after:6.0f}  {key}")
    if maps:
        maps.append(("end", _smaps()))
        if highest[1] is not None:
            maps.append(highest[1])
        (first, held), (last, _) = maps[0][1], maps[-1][1]
        grown = sorted(first.keys() | last.keys(), key=lambda k: first.get(k, 0) - last.get(k, 0))
        shown = [k for k in grown[:6] if last.get(k, 0) - first.get(k, 0) >= 1]
        print(
            "\n== RSS by mapping as each extract starts (MB; the mappings that grew most), and the allocators"
        )
        print(f"  {'':<12} {'total':>7} " + " ".join(f"{k[:16]:>16}" for k in [*shown, *held]))
        for name, (kinds, allocators) in maps:
            cells = [kinds.get(k, 0) for k in shown] + [allocators.get(k, 0) for k in held]
            print(f"  {name:<12} {sum(kinds.values()):7.1f} " + " ".join(f"{c:16.1f}" for c in cells))
    if at_peak[2] is not None:
        print(f"\n== Python allocations at the run's highest ({at_peak[0]:.1f} MB traced, in {at_peak[1]})")
        for stat in at_peak[2].statistics("traceback")[:6]:
            print(f"  {stat.size / 2**20:7.1f} MB {stat.count:>8}")
            for line in stat.traceback.format()[-8:]:
                print("      " + line)
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
