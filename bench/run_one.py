"""One contender, one run, in this (fresh) process: `python -m bench.run_one SPEC.json RESULT.json`.

The spec names the contender (`pipeline`, `limit` or `peer`) and its settings; the result holds the
wall seconds of the run (extract, normalize and load, not the interpreter start) and the rows each
table holds afterwards, and this process's own peak RSS (`own_peak_rss_mb`); the parent takes the
CPU time from `os.wait4`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


def _table_counts(pipeline: Any, tables: dict[str, str]) -> dict[str, int]:
    counts = {}
    with pipeline.sql_client() as client:
        for label, table in tables.items():
            try:
                rows = client.execute_sql(f"select count(*) from {client.make_qualified_table_name(table)}")
                counts[label] = int(rows[0][0])
            except Exception:  # a table that was never created holds no rows
                counts[label] = 0
    return counts


def run_pipeline_contender(spec: dict[str, Any]) -> dict[str, Any]:
    from pipelines.ops.runner import make_pipeline, run_pipeline

    workdir = Path(spec["workdir"])
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "warehouse.duckdb")
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(workdir / "pipelines"))
    steps = _time_steps(pipeline)
    started = time.perf_counter()
    summary = run_pipeline(pipeline, build_views=False, source_overrides=spec["source"])
    wall = time.perf_counter() - started
    views: dict[str, Any] = {}
    if spec.get("views"):
        views = _time_views(pipeline, spec.get("views_donor"))
    return {
        "wall_seconds": wall,
        "rows": _table_counts(pipeline, {t: t for t in ("objects", "childs", "transcripts", "activities")}),
        "rows_this_run": summary.rows,
        "client_requests": summary.requests,
        "client_throttled": summary.throttled,
        "windows": summary.windows,
        "steps": steps,
        "warnings": summary.warnings,
        "views": views,
    }


def _time_steps(pipeline: Any) -> dict[str, float]:
    """Seconds spent in extract, normalize and load (filled in as the run goes)."""
    steps: dict[str, float] = {}
    for name in ("extract", "normalize", "load"):
        method = getattr(pipeline, name)

        def timed(*args: Any, __method: Any = method, __name: str = name, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return __method(*args, **kwargs)
            finally:
                steps[__name] = steps.get(__name, 0.0) + time.perf_counter() - began

        setattr(pipeline, name, timed)
    return steps


def run_views_contender(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the marts on a warehouse an earlier pipeline run left in `workdir`."""
    from pipelines.ops.runner import make_pipeline

    workdir = Path(spec["workdir"])
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "warehouse.duckdb")
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(workdir / "pipelines"))
    return {"wall_seconds": 0.0, "views": _time_views(pipeline, spec.get("views_donor"))}


def _borrow_missing_tables(pipeline: Any, donor: str) -> list[str]:
    """Create the raw tables a run without fan-out never made (activities, transcripts) empty, with
    the column types of a warehouse that has them, so that the views can be built at all."""
    borrowed = []
    with pipeline.sql_client() as client:
        dataset = pipeline.dataset_name
        present = {
            row[0]
            for row in client.execute_sql(
                "select table_name from information_schema.tables where table_schema = %s", dataset
            )
        }
        client.execute_sql(f"attach '{donor}' as donor (read_only)")
        try:
            for table in ("activities", "transcripts"):
                if table not in present:
                    client.execute_sql(
                        f"create table {dataset}.{table} as select * from donor.{dataset}.{table} limit 0"
                    )
                    borrowed.append(table)
        finally:
            client.execute_sql("detach donor")
    return borrowed


def _time_views(pipeline: Any, donor: str | None = None) -> dict[str, Any]:
    """Build the reporting views as a run does (SLA tables, then views), then time `select *` of
    each mart, fully fetched, twice."""
    try:
        from pipelines.ops.runner import build_reporting_views as build_views
    except ImportError as error:
        return {"skipped": f"the reporting views are not importable ({error})"}
    borrowed = _borrow_missing_tables(pipeline, donor) if donor else []
    started = time.perf_counter()
    try:
        built = build_views(pipeline)
    except Exception as error:  # the views are another engineer's work in progress
        return {"skipped": f"build_views failed: {type(error).__name__}: {error}"}
    result: dict[str, Any] = {
        "build_seconds": time.perf_counter() - started,
        "marts": {},
        "empty_tables": borrowed,
    }
    marts = [name for name in built if str(name).split(".")[-1].startswith(("fct_", "agg_", "dim_"))]
    from pipelines.reporting.views import reading_views

    # As the report reads them: the marts are views, read under the settings they were built with.
    with reading_views(pipeline) as client:
        for name in marts:
            qualified = name if "." in str(name) else f"commbox_reporting.{name}"
            timings = []
            rows = 0
            for _ in range(2):
                began = time.perf_counter()
                rows = len(client.execute_sql(f"select * from {qualified}"))
                timings.append(time.perf_counter() - began)
            result["marts"][str(name).split(".")[-1]] = {
                "first_seconds": timings[0],
                "seconds": min(timings),
                "rows": rows,
            }
    return result


def run_limit_contender(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.limit import fetch_all

    started = time.perf_counter()
    result = fetch_all(
        spec["base_url"],
        spec["api_key"],
        {int(k): v for k, v in spec["streams"].items()},
        start=spec["start"],
        end=spec["end"],
        concurrency=spec["concurrency"],
        activity_types=tuple(spec["activity_types"]),
        transcripts=spec["transcripts"],
    )
    result["wall_seconds"] = time.perf_counter() - started
    return result


def run_peer_contender(spec: dict[str, Any]) -> dict[str, Any]:
    import dlt

    from bench.peer import peer_source

    workdir = Path(spec["workdir"])
    pipeline = dlt.pipeline(
        pipeline_name="commbox_peer",
        destination=dlt.destinations.duckdb(str(workdir / "warehouse.duckdb")),
        dataset_name="peer_raw",
        pipelines_dir=str(workdir / "pipelines"),
    )
    workers = spec["concurrency"]
    started = time.perf_counter()
    source = peer_source(
        spec["base_url"],
        spec["api_key"],
        [int(s) for s in spec["streams"]],
        start=spec["start"],
        end=spec["end"],
        activity_types=tuple(spec["activity_types"]),
        transcripts=spec["transcripts"],
    )
    pipeline.extract(source, workers=workers, max_parallel_items=workers * 4, loader_file_format="parquet")
    pipeline.normalize()
    pipeline.load().raise_on_failed_jobs()
    wall = time.perf_counter() - started
    tables = {
        "objects": "objects",
        "childs": "objects__childs",
        "transcripts": "transcripts",
        "activities": "activities",
    }
    return {"wall_seconds": wall, "rows": _table_counts(pipeline, tables)}


CONTENDERS = {
    "pipeline": run_pipeline_contender,
    "limit": run_limit_contender,
    "peer": run_peer_contender,
    "views": run_views_contender,
}


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The budget's pace decisions (one line per overshoot) show how the rate was found.
    logging.getLogger("commbox.client").setLevel(logging.INFO)
    profile = spec.get("profile")
    if profile == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    try:
        result = CONTENDERS[spec["contender"]](spec)
        result["ok"] = True
    except Exception as error:
        logging.exception("run failed")
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
    if profile == "pyinstrument":
        profiler.stop()
        Path(spec["profile_output"]).write_text(
            profiler.output_text(unicode=False, color=False, show_all=False)
        )
    result["peak_rss_mb"] = own_peak_rss_mb()
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


def own_peak_rss_mb() -> float | None:
    """This process's peak RSS (VmHWM): the address space `exec` gave it, and nothing else.

    Not `ru_maxrss`, which Linux carries over `exec` from the process that spawned it: a contender
    started by a harness that had once held 576 MB (the 300,000-conversation dataset's truth) reported
    576 MB however little it used itself (`bench/README.md`, "Session 6"). None where /proc is not
    there."""
    return status_mb("VmHWM")


def status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (`VmRSS`, `VmHWM`), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
