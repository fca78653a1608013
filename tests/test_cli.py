"""The command line as the README shows it: `commbox-etl simulate --port ...` serves the simulator."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

CLI = [sys.executable, "-m", "pipelines.cli"]


def test_simulate_passes_its_flags_to_the_simulator_and_serves(tmp_path):
    ready = tmp_path / "ready"
    server = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", "--conversations", "60", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            assert server.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        reply = requests.get(
            ready.read_text().strip() + "/core/systemstatus",
            headers={"Authorization": "Bearer demo-key"},
            timeout=10,
        )
        assert reply.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_simulate_help_is_the_simulators_and_unknown_flags_elsewhere_fail():
    help_text = subprocess.run([*CLI, "simulate", "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--port" in help_text.stdout
    bogus = subprocess.run([*CLI, "run", "--bogus"], capture_output=True, text=True, timeout=60)
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr
