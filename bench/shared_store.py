"""Why the shared budget is a file under `flock` and not SQLite: the cost of one budget transaction.

`python -m bench.shared_store [--processes 1,4,8] [--each 2000]` starts that many processes that
each run `each` transactions as fast as they can, all on one store, and prints the transactions a
second all together (interpreter start and imports left out) and the slowest 1% of waits. The flock store is the real `SharedBudget`
(`acquire` + `answered` of an unpaced budget: two transactions a request, the feed included);
the SQLite one does the same reads and writes (a state row, an appended log row, the new rows read)
in `BEGIN IMMEDIATE` transactions, WAL, `synchronous=OFF`, as a SQLite budget would.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path


class _Free:
    pace = 0.0
    events = 0

    def record_answer(self, sent_at: float | None = None) -> None:
        pass

    def pause(self, seconds: float, sent_at: float | None = None) -> None:
        pass

    def record_start(self, sent_at: float) -> None:
        pass


def _flock_worker(path: str, each: int, out: multiprocessing.Queue) -> None:
    from pipelines.commbox.shared_budget import SharedBudget

    budget, learner = SharedBudget(path), _Free()
    waits = []
    first = time.perf_counter()
    for _ in range(each // 2):
        began = time.perf_counter()
        budget.acquire(learner)
        middle = time.perf_counter()
        budget.answered(learner, time.monotonic())
        waits += [middle - began, time.perf_counter() - middle]
    budget.close()
    out.put((waits, first, time.perf_counter()))


def _sqlite_worker(path: str, each: int, out: multiprocessing.Queue) -> None:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=off")
    seen = db.execute("select coalesce(max(seq), 0) from log").fetchone()[0]
    waits = []
    first = time.perf_counter()
    for _ in range(each):
        began = time.perf_counter()
        db.execute("begin immediate")
        db.execute("select next_start, paused_until from state where id = 1").fetchone()
        rows = db.execute("select seq, sent_at, paused_until from log where seq > ?", (seen,)).fetchall()
        if rows:
            seen = rows[-1][0]
        db.execute("insert into log (sent_at, paused_until) values (?, 0)", (time.monotonic(),))
        db.execute("update state set next_start = ? where id = 1", (time.monotonic(),))
        db.execute("commit")
        waits.append(time.perf_counter() - began)
    db.close()
    out.put((waits, first, time.perf_counter()))


def measure(kind: str, processes: int, each: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="commbox-store-"))
    path = str(folder / ("b.bin" if kind == "flock" else "b.sqlite"))
    if kind == "sqlite":
        db = sqlite3.connect(path)
        db.execute("pragma journal_mode=wal")
        db.execute("create table state (id integer primary key, next_start real, paused_until real)")
        db.execute("create table log (seq integer primary key, sent_at real, paused_until real)")
        db.execute("insert into state values (1, 0, 0)")
        db.commit()
        db.close()
    worker = _flock_worker if kind == "flock" else _sqlite_worker
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(path, each, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    parts = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    waits = [w for part, _, _ in parts for w in part]
    # From the first worker's first transaction to the last one's end (imports left out).
    wall = max(end for _, _, end in parts) - min(began for _, began, _ in parts)
    waits.sort()
    return {
        "transactions_per_second": len(waits) / wall,
        "median_ms": 1000 * statistics.median(waits),
        "p99_ms": 1000 * waits[int(0.99 * (len(waits) - 1))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_store", description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,4,8")
    parser.add_argument("--each", type=int, default=2000)
    args = parser.parse_args(argv)
    print("| store | processes | transactions/s (all) | median ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for processes in (int(p) for p in args.processes.split(",")):
        for kind in ("flock", "sqlite"):
            r = measure(kind, processes, args.each)
            print(
                f"| {kind} | {processes} | {r['transactions_per_second']:.0f} | {r['median_ms']:.2f} | "
                f"{r['p99_ms']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
