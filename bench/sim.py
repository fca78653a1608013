"""The simulator as a separate process (it must not share the GIL with what is measured), and its admin API."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "demo-key"


class SimProcess:
    """`python -m pipelines.commbox_sim` on a free loopback port, with a frozen clock so that runs
    are byte-for-byte repeatable; the clock moves only when the harness advances it."""

    def __init__(
        self,
        conversations: int,
        *,
        latency_ms: float = 0.0,
        rps: float = 0.0,
        seed: int = 7,
        days: int = 30,
        streams: int = 4,
        burst: int | None = None,
        profile: str = "default",
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="commbox-bench-sim-"))
        ready = self._dir / "ready"
        cmd = [
            sys.executable, "-m", "pipelines.commbox_sim", "--port", "0", "--ready-file", str(ready),
            "--seed", str(seed), "--conversations", str(conversations), "--days", str(days),
            "--streams", str(streams), "--latency-ms", str(latency_ms), "--rps", str(rps), "--frozen-clock",
        ]  # fmt: skip
        if burst is not None:
            cmd += ["--burst", str(burst)]
        if profile != "default":
            cmd += ["--profile", profile]
        self.args = cmd[3:]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start: {' '.join(cmd)}")
            time.sleep(0.05)
        self.base_url = ready.read_text().strip()
        self.conversations = conversations

    def admin(self, name: str, body: dict[str, Any] | None = None) -> Any:
        """GET (no body) or POST (body) `/_sim/<name>`; the admin surface is never counted in stats."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_sim/{name}", data=data, method="GET" if body is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def configure(self, **switches: Any) -> Any:
        return self.admin("configure", switches)

    def advance(self, seconds: float) -> None:
        self.admin(f"advance?seconds={seconds}", {})

    def reset_stats(self) -> None:
        self.admin("reset_stats", {})

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
