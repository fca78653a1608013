"""The crontab line of docs/operations.md, run as cron would: `sh -c`, an almost empty environment, twice.

The line is taken from the page with only its folder and log file replaced, so the documented line
is the tested one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.ops.runner import pipeline_lock
from tests.helpers import source_settings

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^commbox-etl summary (?P<pairs>(?:[a-z_.]+=\S+ ?)+)$", re.MULTILINE)


def _crontab_line() -> str:
    blocks = re.findall(r"```cron\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if "commbox-etl run " in line]
    assert lines, "docs/operations.md shows no crontab line for `commbox-etl run`"
    return lines[0]


@pytest.fixture
def deployment(tmp_path, sim):
    """A deployment folder as the crontab line expects: the virtualenv and `.dlt/` config in it."""
    folder = tmp_path / "srv" / "commbox-etl"
    (folder / ".dlt").mkdir(parents=True)
    (folder / ".venv").symlink_to(ROOT / ".venv")
    settings = source_settings(sim)
    (folder / ".dlt" / "config.toml").write_text(
        f'[sources.commbox]\nbase_url = "{sim.base_url}"\nstart_date = "{settings["start_date"]}"\n'
        "max_retry_wait_seconds = 30\n"
    )
    (folder / ".dlt" / "secrets.toml").write_text(f'[sources.commbox]\napi_key = "{sim.api_key}"\n')
    (tmp_path / "home").mkdir()
    return folder


def _cron(deployment: Path, tmp_path: Path) -> tuple[int, str]:
    """Run the crontab command the way cron does; return its exit code and the log's new lines."""
    schedule, command = re.match(r"^(\S+ \S+ \S+ \S+ \S+) (.*)$", _crontab_line()).groups()
    assert schedule == "*/15 * * * *"
    log = tmp_path / "commbox-etl.log"
    before = log.read_text() if log.exists() else ""
    command = command.replace("/srv/commbox-etl", str(deployment)).replace(
        "/var/log/commbox-etl.log", str(log)
    )
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "cron"}
    # dlt's working folder is ~/.dlt (/var/dlt for root); keep this test's in its own folder
    env["DLT_DATA_DIR"] = str(tmp_path / "home" / ".dlt")
    result = subprocess.run(["/bin/sh", "-c", command], env=env, timeout=600)
    return result.returncode, log.read_text()[len(before) :]


def _summary(text: str) -> dict[str, str]:
    lines = SUMMARY.findall(text)
    assert len(lines) == 1, text[-3000:]
    return dict(pair.split("=", 1) for pair in lines[0].split())


def test_crontab_line_runs_reruns_and_logs_one_parsable_summary(sim, deployment, tmp_path):
    sim.clock.advance(600)
    code, log = _cron(deployment, tmp_path)
    assert code == 0, log[-3000:]
    first = _summary(log)
    assert first["result"] == "ok" and first["pipeline"] == "commbox"
    assert int(first["rows.objects"]) == len(sim.truth.objects())
    assert int(first["windows"]) > 0 and int(first["requests"]) > 0
    assert first["throttled"] == "0" and float(first["duration_s"]) > 0
    # the pipeline's working folder (state, trace, lock) is dlt's data folder
    assert (tmp_path / "home" / ".dlt" / "pipelines" / "commbox").is_dir()

    sim.clock.advance(60)
    code, log = _cron(deployment, tmp_path)
    assert code == 0, log[-3000:]
    again = _summary(log)
    assert again["conversations"] == "0" and "rows.objects" not in again


def test_crontab_line_exits_3_while_a_run_holds_the_lock(deployment, tmp_path):
    # the lock the cron run will look for: pipeline `commbox` in dlt's data folder
    running = SimpleNamespace(
        pipelines_dir=str(tmp_path / "home" / ".dlt" / "pipelines"), pipeline_name="commbox"
    )
    with pipeline_lock(running):  # type: ignore[arg-type]
        code, log = _cron(deployment, tmp_path)
    assert code == 3
    assert "another run of pipeline 'commbox' is in progress" in log
    assert "summary" not in log


def test_crontab_line_fails_loudly_with_a_rejected_key(sim, deployment, tmp_path):
    (deployment / ".dlt" / "secrets.toml").write_text('[sources.commbox]\napi_key = "wrong-key"\n')
    code, log = _cron(deployment, tmp_path)
    assert code == 1
    assert "rejected" in log.splitlines()[-1]
