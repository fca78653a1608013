"""Scenario 7 (issue 16): parallel processes reading one rate-limited account.

The simulator limits the account (a token bucket: `rps`, burst 10, 429 + Retry-After); 4 streams
are read by 1 process (every stream), 4 processes (one stream each, as the Airflow DAG's earlier
per-stream tasks did) and 8 processes (one stream and half of the period each), each
process with its own pipeline and DuckDB file and the default settings (no
`max_requests_per_second`: the limit is unknown), with the shared budget on (the default) and off.
Each account is sized for a floor (minimum requests / rate) of about `FLOOR_SECONDS`. The
Airflow DAG itself (`dags/commbox.py`: one task reading every stream, then the views) runs too, as
`airflow dags test` in `.airflow-venv` (`make bench` builds it; without it the row says it was
skipped), over the monthly data interval that holds the account, into DuckDB.

Figures per run: the combined share of the allowed rate in wall time (the floor over the span from
the first process's start to the last one's end, extract, normalize and load included, interpreter
start-up not; for the DAG, its extract task's start to end as Airflow recorded them), the share of requests answered 429 (the server's count), the most requests the
server saw in one second against the rate, and whether every conversation was loaded (distinct
`object_id` over all processes' warehouses against the simulator's truth).

`python -m bench.parallel [--rates 20,100] [--processes 1,4,8] [--shared on,off] [--dag on|off]
[--out FILE]` runs it alone and rewrites its section of `--out` (default `bench/results.md`); `python -m bench --only 7` runs it inside `make bench`.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .core import Dataset
from .sim import API_KEY, ROOT, SimProcess

logger = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
RATES = (20.0, 100.0)
PROCESSES = (1, 4, 8)
FLOOR_SECONDS = 30.0
CONCURRENCY = 8
LATENCY_MS = 20.0
BURST = 10
QUICK: dict[str, Any] = {"rates": (20.0,), "processes": (1, 4), "floor_seconds": 10.0, "dag": False}
AIRFLOW = ROOT / ".airflow-venv" / "bin" / "airflow"
DAG_ROW = "DAG (1 task)"
SECTION_START = "<!-- scenario 7: parallel processes (bench/parallel.py) -->"
SECTION_END = "<!-- end of scenario 7 -->"


def _child(spec_path: str, result_path: str) -> int:
    """One process of a run: `run_pipeline` on its streams (and range), timed in wall-clock time so
    that the parent can take the span over every process."""
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("commbox.client").setLevel(logging.INFO)
    workdir = Path(spec["workdir"])
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "warehouse.duckdb")
    from pipelines.ops.runner import make_pipeline, run_pipeline

    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(workdir / "pipelines"))
    began = time.time()
    result: dict[str, Any] = {"began": began}
    try:
        summary = run_pipeline(
            pipeline, build_views=False, backfill=spec.get("backfill"), source_overrides=spec["source"]
        )
        with pipeline.sql_client() as client:
            objects = client.make_qualified_table_name("objects")
            ids = [int(row[0]) for row in client.execute_sql(f"select distinct object_id from {objects}")]
        result.update(
            ok=True,
            object_ids=ids,
            requests=summary.requests,
            throttled=summary.throttled,
            achieved_rps=summary.achieved_rps,
            limit_rps=summary.limit_rps,
        )
    except Exception as error:
        logging.exception("run failed")
        result.update(ok=False, error=f"{type(error).__name__}: {error}"[:500])
    result["ended"] = time.time()
    Path(result_path).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


def _plan(data: Dataset, processes: int) -> list[dict[str, Any]]:
    """Each process's streams and, beyond one process per stream, its part of the period."""
    streams = list(data.streams)
    if processes == 1:
        return [{"stream_ids": streams}]
    per_stream = max(1, processes // len(streams))
    parts = []
    for stream_id in streams:
        step = (data.end - data.start) // per_stream
        for part in range(per_stream):
            start = data.start + part * step
            end = data.end if part == per_stream - 1 else start + step
            parts.append({"stream_ids": [stream_id], "range": (start, end)})
    return parts


def _iso(unix: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def run_once(
    sim: SimProcess, data: Dataset, root: Path, *, rps: float, processes: int, shared: bool
) -> dict[str, Any]:
    """Start `processes` pipeline processes at once against a fresh bucket; wait for all."""
    sim.configure(rate_limit_rps=0)
    sim.configure(rate_limit_rps=rps, rate_limit_burst=BURST)
    sim.reset_stats()
    budget_dir = root / f"budget-{rps:g}-{processes}-{'on' if shared else 'off'}"
    children = []
    for n, part in enumerate(_plan(data, processes)):
        workdir = root / f"{rps:g}-{processes}-{'shared' if shared else 'alone'}-{n}"
        workdir.mkdir(parents=True)
        source = {
            "api_key": API_KEY,
            "base_url": sim.base_url,
            "start_date": data.start_date,
            "stream_ids": part["stream_ids"],
            "max_concurrency": CONCURRENCY,
            "max_retry_wait_seconds": 60,
            "shared_budget": str(budget_dir) if shared else "off",
            # per type, as the floor (minimum requests / rate) counts them
            "activity_paths": "per_type",
        }
        spec: dict[str, Any] = {"workdir": str(workdir), "source": source}
        if "range" in part:
            spec["backfill"] = [_iso(part["range"][0]), _iso(part["range"][1])]
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        result_path = workdir / "result.json"
        log = (workdir / "run.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.parallel", "--child", str(spec_path), str(result_path)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        children.append((proc, result_path, log, workdir))
    results = []
    for proc, result_path, log, workdir in children:
        proc.wait(timeout=1800)
        log.close()
        result = json.loads(result_path.read_text()) if result_path.exists() else {"ok": False}
        if not result.get("ok"):
            result.setdefault("error", (workdir / "run.log").read_text()[-500:])
        results.append(result)
    stats = sim.stats()
    ok = all(r.get("ok") for r in results)
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results) if ok else None
    loaded = {i for r in results for i in r.get("object_ids", [])}
    minimum = data.minimum_requests(fan_out=True)
    per_second = stats.get("requests_per_second", {})
    total = stats["total_requests"]
    return {
        "rps": rps,
        "processes": processes,
        "shared": shared,
        "ok": ok,
        "errors": [r.get("error") for r in results if not r.get("ok")],
        "wall_seconds": wall,
        "floor_seconds": minimum / rps,
        "minimum_requests": minimum,
        "requests": total,
        "throttled": stats["throttled"],
        "answered_2xx": int(stats["status"].get("200", 0)),
        "share_of_allowed_rate_pct": 100 * (minimum / rps) / wall if wall else None,
        "throttled_pct": 100 * stats["throttled"] / max(1, total),
        "busiest_second": max(per_second.values(), default=0),
        "conversations_loaded": len(loaded),
        "conversations": data.conversations,
        "every_conversation_loaded": len(loaded) == data.conversations,
        "limits_found": [r.get("limit_rps") for r in results],
    }


def _monthly_run(data: Dataset, lookback_seconds: float = 3600) -> str | None:
    """The logical date of the manual `@monthly` run whose data interval holds the whole account
    (the month of its last update, read from one lookback before it), or None when it spans more."""
    last = time.gmtime(data.end - 86400)
    month_start = calendar.timegm((last.tm_year, last.tm_mon, 1, 0, 0, 0))
    if data.start < month_start - lookback_seconds:
        return None
    year, month = (last.tm_year + 1, 1) if last.tm_mon == 12 else (last.tm_year, last.tm_mon + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00+00:00"


def _task_span(airflow_db: Path, task_id: str, log: str) -> float | None:
    """Seconds from the moment the task began reading (its `reading updatedTime` line, as a
    process's span starts where it calls the runner) to the task's end as Airflow recorded it; from
    the task's recorded start when the line is missing. `airflow dags test` spends a few seconds
    between the two starting its in-process execution API, which is Airflow's, not the task's."""
    with sqlite3.connect(airflow_db) as db:
        row = db.execute(
            "select start_date, end_date from task_instance where task_id = ? and state = 'success' "
            "order by start_date desc limit 1",
            (task_id,),
        ).fetchone()
    if not row or not row[0] or not row[1]:
        return None
    start, end = (datetime.fromisoformat(str(value).replace(" ", "T")).replace(tzinfo=UTC) for value in row)
    read = re.search(r"^(\S+)Z? \[info\s*\] streams \[[^]]*\]: reading updatedTime", log, re.M)
    if read:
        start = max(start, datetime.fromisoformat(read.group(1).removesuffix("Z")).replace(tzinfo=UTC))
    return (end - start).total_seconds()


def _dag_warehouse(path: Path) -> tuple[list[int], dict[str, Any]]:
    """The conversations the DAG loaded and the pace its task stored (what `status` shows)."""
    import duckdb
    from dlt.common.versioned_state import decompress_state

    with duckdb.connect(str(path), read_only=True) as db:
        ids = [
            int(row[0]) for row in db.execute("select distinct object_id from commbox_raw.objects").fetchall()
        ]
        states = db.execute(
            "select state from commbox_raw._dlt_pipeline_state where pipeline_name = 'commbox_all' "
            "order by _dlt_load_id desc limit 1"
        ).fetchall()
    pace = (
        decompress_state(states[0][0]).get("sources", {}).get("commbox", {}).get("pace", {}) if states else {}
    )
    return ids, pace


def run_dag(sim: SimProcess, data: Dataset, root: Path, *, rps: float) -> dict[str, Any]:
    """The Airflow DAG, `airflow dags test` in `.airflow-venv`, against a fresh bucket: one manual
    run whose data interval holds the account, into a DuckDB file of its own. The span is the
    extract task's (Airflow's own start-up, parsing and the views task are not counted, as a
    process's interpreter start-up is not)."""
    row: dict[str, Any] = {"rps": rps, "processes": DAG_ROW, "shared": True, "ok": False, "errors": []}
    minimum = data.minimum_requests(fan_out=True)
    row.update(
        wall_seconds=None,
        floor_seconds=minimum / rps,
        minimum_requests=minimum,
        requests=0,
        throttled=0,
        share_of_allowed_rate_pct=None,
        throttled_pct=0.0,
        busiest_second=0,
        conversations_loaded=0,
        conversations=data.conversations,
        every_conversation_loaded=False,
        limits_found=[],
    )
    if not AIRFLOW.exists():
        row.update(
            skipped=True, errors=[f"skipped: {AIRFLOW.relative_to(ROOT)} missing (`make bench` builds it)"]
        )
        return row
    logical_date = _monthly_run(data)
    if logical_date is None:
        row["errors"] = ["the account spans more than one monthly data interval"]
        return row
    home = root / f"airflow-{rps:g}"
    home.mkdir(parents=True)
    host, port = sim.base_url.removeprefix("http://").split(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SOURCES__", "DESTINATION__"))}
    source_config = {
        "max_concurrency": CONCURRENCY,
        "max_retry_wait_seconds": 60,
        "shared_budget": str(root / f"budget-{rps:g}-dag"),
        "activity_paths": "per_type",
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW_VAR_COMMBOX_STREAM_IDS=",".join(map(str, data.streams)),
        AIRFLOW_VAR_COMMBOX_SCHEDULE="@monthly",
        AIRFLOW_VAR_COMMBOX_RETRIES="0",
        AIRFLOW_VAR_COMMBOX_DESTINATION="duckdb",
        AIRFLOW_VAR_COMMBOX_SOURCE_CONFIG=json.dumps(source_config),
        AIRFLOW_CONN_COMMBOX_API=json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "schema": "http", "password": API_KEY}
        ),
        DESTINATION__DUCKDB__CREDENTIALS=str(home / "warehouse.duckdb"),
        PYTHONPATH=str(ROOT),
    )
    log_path = home / "airflow.log"
    with log_path.open("wb") as log:
        for args in (["db", "migrate"], ["dags", "test", "commbox", logical_date]):
            if args[0] == "dags":
                # the bucket fills and the server's counts start here, not during Airflow's migration
                sim.configure(rate_limit_rps=0)
                sim.configure(rate_limit_rps=rps, rate_limit_burst=BURST)
                sim.reset_stats()
            done = subprocess.run(
                [str(AIRFLOW), *args], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, timeout=1800
            )
            if done.returncode != 0:
                row["errors"] = [f"airflow {' '.join(args)} failed: " + log_path.read_text()[-400:]]
                return row
    stats = sim.stats()
    ids, pace = _dag_warehouse(home / "warehouse.duckdb")
    wall = _task_span(home / "airflow.db", "commbox.commbox_all", log_path.read_text(errors="replace"))
    total = stats["total_requests"]
    row.update(
        ok=wall is not None,
        errors=[] if wall is not None else ["no successful commbox.commbox_all task in airflow.db"],
        wall_seconds=wall,
        requests=total,
        throttled=stats["throttled"],
        answered_2xx=int(stats["status"].get("200", 0)),
        share_of_allowed_rate_pct=100 * (minimum / rps) / wall if wall else None,
        throttled_pct=100 * stats["throttled"] / max(1, total),
        busiest_second=max(stats.get("requests_per_second", {}).values(), default=0),
        conversations_loaded=len(set(ids)),
        every_conversation_loaded=len(set(ids)) == data.conversations,
        limits_found=[pace.get("limit_rps")],
        achieved_rps=pace.get("achieved_rps"),
    )
    return row


def run(
    rates: tuple[float, ...] = RATES,
    processes: tuple[int, ...] = PROCESSES,
    shared: tuple[bool, ...] = (True, False),
    keep: bool = False,
    floor_seconds: float = FLOOR_SECONDS,
    dag: bool = True,
) -> dict[str, Any]:
    """Every (rate, processes, shared) combination, then the DAG (unless `dag` is false); one
    simulator per rate, sized for the floor."""
    root = Path(tempfile.mkdtemp(prefix="commbox-bench-parallel-"))
    runs: list[dict[str, Any]] = []
    try:
        for rps in rates:
            # About 3.1 requests a conversation (list, transcript, two activity types).
            conversations = int(floor_seconds * rps / 3.1)
            with SimProcess(conversations, latency_ms=LATENCY_MS, streams=4) as sim:
                data = Dataset.read(sim, fan_out=True)
                sim.advance(600)
                for count in processes:
                    for on in shared:
                        logger.info(
                            "scenario 7: %g req/s, %s conversations, %s process(es), shared budget %s",
                            rps,
                            data.conversations,
                            count,
                            "on" if on else "off",
                        )
                        result = run_once(sim, data, root, rps=rps, processes=count, shared=on)
                        logger.info(
                            "  %.0f%% of the rate, %.2f%% 429s, %s/%s conversations",
                            result["share_of_allowed_rate_pct"] or 0,
                            result["throttled_pct"],
                            result["conversations_loaded"],
                            result["conversations"],
                        )
                        runs.append(result)
                if dag:
                    logger.info("scenario 7: %g req/s, the Airflow DAG (airflow dags test)", rps)
                    result = run_dag(sim, data, root, rps=rps)
                    logger.info(
                        "  %.0f%% of the rate, %.2f%% 429s, %s/%s conversations%s",
                        result["share_of_allowed_rate_pct"] or 0,
                        result["throttled_pct"],
                        result["conversations_loaded"],
                        result["conversations"],
                        "".join(f"; {error}" for error in result["errors"]),
                    )
                    runs.append(result)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {"runs": runs, "concurrency": CONCURRENCY, "latency_ms": LATENCY_MS, "burst": BURST}


def markdown(result: dict[str, Any], machine: str) -> str:
    """The section of `bench/results.md`, between its markers."""
    lines = [
        SECTION_START,
        "## Scenario 7: parallel processes share one account's rate (issue 16)",
        "",
        "The simulator limits the account (token bucket, burst "
        f"{result['burst']}, 429 + Retry-After, {result['latency_ms']:g} ms latency); 4 streams are "
        "read by 1 process, by 4 (one stream each, as the DAG's earlier per-stream tasks) and by 8 (one stream "
        "and half the period each), every process with its own pipeline and DuckDB file, default "
        f"settings (no `max_requests_per_second`), `max_concurrency` {result['concurrency']}; "
        f"`{DAG_ROW}`: the Airflow DAG, `airflow dags test` in `.airflow-venv`, its one task reading "
        "the 4 streams (the span is that task's). "
        "Share of the rate: the floor (minimum requests / rate) over the wall time from the first "
        "process's start to the last one's end (extract, normalize, load). Targets: >= 90% of the "
        "rate, <= 2% 429s, every conversation loaded.",
        "",
        f"Machine: {machine}",
        "",
        "| rate | processes | shared budget | wall s | floor s | % of rate | % 429 | busiest second | "
        "conversations loaded |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        share = r["share_of_allowed_rate_pct"]
        lines.append(
            f"| {r['rps']:g}/s | {r['processes']} | {'on' if r['shared'] else 'off'} | "
            f"{r['wall_seconds'] or 0:.1f} | {r['floor_seconds']:.1f} | "
            f"{'-' if share is None else f'{share:.0f}%'} | {r['throttled_pct']:.2f}% | "
            f"{r['busiest_second']} | {r['conversations_loaded']}/{r['conversations']}"
            f"{_outcome(r)} |"
        )
    lines += ["", *result.get("notes", []), "", SECTION_END]
    return "\n".join(lines)


def _outcome(r: dict[str, Any]) -> str:
    if r["ok"]:
        return ""
    errors = "; ".join(map(str, r["errors"]))[:160]
    return f" ({errors})" if r.get("skipped") else f" (failed: {errors})"


def write_section(result: dict[str, Any], path: Path, machine: str) -> None:
    """Put the section into `path`, replacing an earlier one (the rest of the file is kept)."""
    text = path.read_text() if path.exists() else ""
    section = markdown(result, machine)
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1], argv[2])
    parser = argparse.ArgumentParser(prog="python -m bench.parallel", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES))
    parser.add_argument("--processes", default=",".join(map(str, PROCESSES)))
    parser.add_argument("--shared", default="on,off", help="on, off or both")
    parser.add_argument("--dag", default="on", choices=("on", "off"), help="run the Airflow DAG too")
    parser.add_argument("--note", default="", help="machine conditions to record beside the figures")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--floor", type=float, default=FLOOR_SECONDS, help="seconds each account takes at the rate"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .report import machine

    result = run(
        tuple(float(r) for r in args.rates.split(",")),
        tuple(int(p) for p in args.processes.split(",")),
        tuple(part.strip() == "on" for part in args.shared.split(",")),
        keep=args.keep,
        floor_seconds=args.floor,
        dag=args.dag == "on",
    )
    info = machine()
    described = ", ".join(f"{k} {v}" for k, v in info.items()) + (f"; {args.note}" if args.note else "")
    result["machine"] = described
    (args.out.with_name("parallel.json")).write_text(json.dumps(result, indent=1))
    write_section(result, args.out, described)
    return 0 if all(r["ok"] or r.get("skipped") for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
