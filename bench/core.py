"""What every scenario needs: ground truth and the minimum request count of a dataset, and one
measured run of a contender in a fresh process (wall, requests seen by the server, 429s, peak RSS)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .limit import fixed_paths
from .sim import API_KEY, ROOT, SimProcess

# StatusChange and AssignChange: the two activity types the pipeline fetches by default.
ACTIVITY_TYPES = (2, 6)
# Activity requests per conversation of each path the pipeline can read them by
# (pipelines/commbox/activity_paths.py): one per type, one for every type, none (the list's log).
ACTIVITY_PATH_REQUESTS = {"per_type": len(ACTIVITY_TYPES), "all_types": 1, "list_log": 0}


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@dataclass
class Dataset:
    """Ground truth of one simulated account, read from `/_sim/truth/...`."""

    conversations: int
    streams: dict[int, int]  # stream id -> conversations
    start: int  # unix seconds: midnight before the first conversation
    end: int  # unix seconds: past the last update
    start_date: str
    truth: dict[str, int] = field(default_factory=dict)  # table -> rows
    messages_per_conversation: float = 0.0

    @classmethod
    def read(cls, sim: SimProcess, *, fan_out: bool) -> Dataset:
        objects = sim.admin("truth/objects")
        streams: dict[int, int] = {}
        for row in objects:
            streams[row["stream_id"]] = streams.get(row["stream_id"], 0) + 1
        first = min(_epoch(o["created_at"]) for o in objects)
        last = max(_epoch(o["updated_at"]) for o in objects)
        start = int(first // 86400 * 86400)
        childs = sum(int(o["num_childs"]) for o in objects)
        truth = {"objects": len(objects), "childs": childs}
        if fan_out:
            truth["transcripts"] = len(sim.admin("truth/transcripts"))
            truth["activities"] = sum(
                1 for a in sim.admin("truth/activities") if a["activity_type"] in ACTIVITY_TYPES
            )
        return cls(
            conversations=len(objects),
            streams=dict(sorted(streams.items())),
            start=start,
            end=int(last) + 86400,
            start_date=datetime.utcfromtimestamp(start).date().isoformat(),
            truth=truth,
            messages_per_conversation=childs / max(1, len(objects)),
        )

    def list_calls(self) -> int:
        return sum(math.ceil(n / 100) for n in self.streams.values())

    def minimum_requests(
        self, *, fan_out: bool, sender_lookup: bool = False, activity_path: str = "per_type"
    ) -> int:
        """Per stream ceil(objects / 100) list calls, per conversation one transcript and the
        activity requests of `activity_path` (one per type; one for every type; none when the
        list's log holds them), and one Get Object where the list leaves out the messages' sender,
        as the documentation-shaped profile does, plus the fixed calls (clock, stats, SLA
        exceptions, managers, one availability per stream)."""
        activities = ACTIVITY_PATH_REQUESTS[activity_path]
        per_conversation = (1 + activities if fan_out else 0) + (1 if sender_lookup else 0)
        return (
            self.list_calls() + per_conversation * self.conversations + len(fixed_paths(list(self.streams)))
        )


def run_contender(
    spec: dict[str, Any],
    sim: SimProcess,
    *,
    log_dir: Path,
    label: str,
    timeout: float = 3600,
    py_spy: Path | None = None,
) -> dict[str, Any]:
    """Run `bench.run_one` in a fresh interpreter; the server's request counts are reset before.

    With `py_spy`, the run is sampled by `py-spy record --gil` (threads holding the GIL: where the
    CPU-bound time goes) into that file as collapsed stacks; its timings then mean nothing."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handle, spec_path = tempfile.mkstemp(suffix=".json", dir=log_dir)
    os.close(handle)
    result_path = Path(spec_path).with_suffix(".result.json")
    Path(spec_path).write_text(json.dumps(spec))
    sim.reset_stats()
    with (log_dir / f"{label}.log").open("ab") as log:
        began = time.perf_counter()
        command = [sys.executable, "-m", "bench.run_one", spec_path, str(result_path)]
        if py_spy is not None:
            spy = Path(sys.executable).with_name("py-spy")
            command = [
                str(spy),
                "record",
                "--gil",
                "--rate",
                "250",
                "--format",
                "raw",
                "-o",
                str(py_spy),
                "--",
                *command,
            ]
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = _wait4(proc, timeout)
        process_seconds = time.perf_counter() - began
    stats = sim.stats()
    result: dict[str, Any] = (
        json.loads(result_path.read_text())
        if result_path.exists()
        else {"ok": False, "error": f"no result (exit status {status})"}
    )
    result.update(
        label=label,
        process_seconds=process_seconds,
        # The contender's own high-water mark (run_one.own_peak_rss_mb); wait4's ru_maxrss holds
        # the harness's, carried over exec, and is only the fallback where /proc is missing.
        peak_rss_mb=result.get("peak_rss_mb") or usage.ru_maxrss / 1024,  # kilobytes on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        requests=stats["total_requests"],
        requests_by_endpoint=stats["requests"],
        throttled=stats["throttled"],
        status_codes=stats["status"],
    )
    return result


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, Any]:
    """`os.wait4` gives the rusage of this one child (its CPU time), not the sum over every child
    this process has waited for (which `RUSAGE_CHILDREN` would report). Its `ru_maxrss` is not the
    child's own peak: Linux carries the spawning process's high-water mark over `exec`
    (`run_one.own_peak_rss_mb` reads the child's own)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)


def activity_path_used(requests_by_endpoint: dict[str, int], conversations: int) -> str:
    """The activity path a run used, told from the server's counts: the path whose requests per
    conversation are nearest the run's (the few conversations a run reads per type while it
    verifies a cheaper path move the figure by a fraction of a request)."""
    per_conversation = requests_by_endpoint.get("activities", 0) / max(1, conversations)
    return min(ACTIVITY_PATH_REQUESTS, key=lambda path: abs(ACTIVITY_PATH_REQUESTS[path] - per_conversation))


def pipeline_spec(
    sim: SimProcess,
    data: Dataset,
    workdir: Path,
    *,
    concurrency: int,
    fan_out: bool,
    activity_paths: str = "per_type",
    **source: Any,
) -> dict[str, Any]:
    """The pipeline's run spec. Activities are read per type unless `activity_paths="auto"`: the
    scenarios that compare the pipeline with the fetchers (which read per type) or with a rate's
    floor measure the same requests; scenario 6 measures what the cheaper paths save."""
    settings = {
        "api_key": API_KEY,
        "base_url": sim.base_url,
        "start_date": data.start_date,
        "max_concurrency": concurrency,
        "max_retry_wait_seconds": 60,
    }
    if not fan_out:
        settings.update(include_transcripts=False, activity_types=[])
    settings["activity_paths"] = activity_paths
    settings.update(source)
    return {"contender": "pipeline", "workdir": str(workdir), "source": settings}


def fetcher_spec(
    contender: str, sim: SimProcess, data: Dataset, workdir: Path, *, concurrency: int, fan_out: bool
) -> dict[str, Any]:
    return {
        "contender": contender,
        "workdir": str(workdir),
        "base_url": sim.base_url,
        "api_key": API_KEY,
        "streams": {str(k): v for k, v in data.streams.items()},
        "start": data.start,
        "end": data.end,
        "concurrency": concurrency,
        "activity_types": list(ACTIVITY_TYPES) if fan_out else [],
        "transcripts": fan_out,
    }
