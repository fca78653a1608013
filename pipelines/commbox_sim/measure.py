"""Measure the simulator's throughput from a separate client process.

    python -m pipelines.commbox_sim.measure [--conversations 20000] [--threads 4] [--seconds 5]

Starts the simulator in a subprocess (``python -m pipelines.commbox_sim --port 0``), then drives it
with a thread pool of keep-alive ``http.client`` connections and prints:

* list pages/s: ``GET /streams/{id}/objects`` pages of 100 conversations with childs, first a cold
  pass over distinct pages (rendering from the lazy generator), then warm passes (fragment cache);
* small requests/s: transcript and activities of random conversations.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

KEY = "demo-key"


def _start(conversations: int) -> tuple[subprocess.Popen, str]:
    ready = Path(tempfile.mkdtemp()) / "ready"
    cmd = [
        sys.executable, "-m", "pipelines.commbox_sim", "--port", "0", "--conversations", str(conversations),
        "--ready-file", str(ready),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("simulator did not start")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


class _Client:
    """One keep-alive connection per thread."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.local = threading.local()

    def get(self, path: str) -> bytes:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}")
        return body


def _run(client: _Client, paths: list[str], threads: int, seconds: float | None) -> tuple[int, float, int]:
    """Request ``paths`` (cycled when ``seconds`` is set); returns (requests, elapsed, bytes)."""
    done = 0
    nbytes = 0
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds if seconds else None

    def worker(offset: int) -> None:
        nonlocal done, nbytes
        n = offset
        count = size = 0
        while True:
            if stop_at is None:
                if n >= len(paths):
                    break
            elif time.perf_counter() >= stop_at:
                break
            size += len(client.get(paths[n % len(paths)]))
            count += 1
            n += threads
        with lock:
            done += count
            nbytes += size

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return done, time.perf_counter() - start, nbytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    proc, base = _start(args.conversations)
    try:
        client = _Client(base)
        truth = json.loads(client.get("/_sim/truth/streams"))
        objects = json.loads(client.get("/_sim/truth/objects"))
        end = 4_102_444_800  # 2100-01-01: the whole history
        pages: list[str] = []
        for s in truth:
            n = sum(1 for o in objects if o["stream_id"] == s["stream_id"])
            for p in range(1, n // 100 + 1):
                pages.append(
                    f"/streams/{s['stream_id']}/objects?unixStartTime=0&unixEndTime={end}"
                    f"&includeChilds=true&pageSize=100&pageNumber={p}"
                )
        cold = _run(client, pages, args.threads, None)
        warm = _run(client, pages, args.threads, args.seconds)
        rng = random.Random(1)
        sample = rng.sample(objects, min(3000, len(objects)))
        small = []
        for o in sample:
            small.append(f"/streams/{o['stream_id']}/objects/{o['object_id']}/transcript")
            small.append(f"/objects/{o['object_id']}/activities")
        small_run = _run(client, small, args.threads, args.seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for label, (n, secs, nbytes) in (
        ("list pages (100 convs + childs), cold", cold),
        ("list pages (100 convs + childs), warm", warm),
        ("small requests (transcript/activities)", small_run),
    ):
        print(f"{label:42s} {n / secs:8.0f} req/s  {nbytes / secs / 1e6:7.1f} MB/s  ({n} in {secs:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
