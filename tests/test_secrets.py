"""Secrets: a canary API key with a trailing newline (as files and Kubernetes secrets give it) and a
canary password in `base_url`, through passing and failing commands at DEBUG, are found nowhere:
not in stdout or stderr, not in any file under the working folder (dlt state, load packages, the
trace, which is also unpickled and searched as text), not in the DuckDB warehouse. `doctor` never
prints a traceback.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main
from pipelines.commbox.config import ConfigError
from pipelines.ops.runner import run_pipeline
from tests.fixtures.faults_harness import CANARY_KEY, Cli, files_containing
from tests.helpers import make_test_pipeline, source_settings

CANARY_PASSWORD = "canary-pass-0b5e1d"
NEEDLES = (CANARY_KEY, CANARY_PASSWORD)


@pytest.fixture
def canary(sim_factory: Any) -> Any:
    sim = sim_factory(api_key=CANARY_KEY, conversations=60, clock_running=False)
    sim.clock.advance(600)
    return sim


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://loader:{CANARY_PASSWORD}@")


def _trace_texts(root: Path) -> list[str]:
    """Every trace file under `root`, unpickled and rendered as text (repr and dlt's own str)."""
    texts = []
    for path in root.rglob("trace.pickle"):
        trace = pickle.loads(path.read_bytes())
        texts.append(repr(trace) + str(trace))
    return texts


@pytest.mark.timeout(240)
def test_a_canary_key_and_url_password_appear_nowhere(canary, tmp_path):
    cli = Cli(tmp_path, canary, extra_env={"SOURCES__COMMBOX__API_KEY": CANARY_KEY + "\n"})
    passing = [cli.run(), cli.run("status"), cli.run("doctor")]
    for result in passing:
        assert result.returncode == 0, result.output
    assert "result=ok" in passing[0].stdout
    secret_url = _with_password(canary.base_url)
    failing = [
        cli.run(SOURCES__COMMBOX__API_KEY=CANARY_KEY + "-revoked\n"),
        cli.run(SOURCES__COMMBOX__BASE_URL=secret_url),
        cli.run(
            "backfill", "--start", "2024-03-01", "--end", "2024-03-02", SOURCES__COMMBOX__BASE_URL=secret_url
        ),
        cli.run("doctor", SOURCES__COMMBOX__BASE_URL=secret_url),
        cli.run("doctor", SOURCES__COMMBOX__API_KEY=CANARY_KEY + "-revoked\n"),
    ]
    assert [result.returncode for result in failing] == [1, 2, 2, 2, 1], [r.output for r in failing]
    assert "the API key was rejected" in failing[0].stderr
    assert "base_url" in failing[1].stderr and "***" in failing[1].stderr
    outputs = "".join(cli.transcript)
    assert "DEBUG" in outputs and "Traceback" not in outputs
    assert [needle for needle in NEEDLES if needle in outputs] == []
    traces = _trace_texts(tmp_path / "pipelines")
    assert traces, "the runs left no trace to search"
    assert [needle for needle in NEEDLES if any(needle in text for text in traces)] == []
    assert files_containing(tmp_path, NEEDLES) == []
    assert cli.warehouse.text_hits(NEEDLES) == {}


@pytest.mark.timeout(120)
def test_library_use_keeps_a_refused_url_password_out_of_the_next_trace(
    canary, tmp_path, caplog, monkeypatch
):
    """A `base_url` with a password, from the environment, is refused without showing it, and
    reaches neither the logs nor the trace of the next run in the same process (Airflow)."""
    caplog.set_level(logging.DEBUG)
    pipeline = make_test_pipeline(tmp_path)
    monkeypatch.setenv("SOURCES__COMMBOX__BASE_URL", _with_password(canary.base_url))
    settings = source_settings(canary)
    del settings["base_url"]
    with pytest.raises(ConfigError, match="base_url") as refused:
        run_pipeline(pipeline, build_views=False, source_overrides=settings)
    assert CANARY_PASSWORD not in str(refused.value)
    run_pipeline(
        pipeline, build_views=False, source_overrides=source_settings(canary, api_key=CANARY_KEY + "\n")
    )
    texts = [*_trace_texts(tmp_path / "pipelines"), repr(pipeline.last_trace)]
    assert [needle for needle in NEEDLES if any(needle in text for text in texts)] == []
    assert files_containing(tmp_path, NEEDLES) == []
    assert [r.getMessage() for r in caplog.records if any(n in r.getMessage() for n in NEEDLES)] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("env", "args", "code", "failed"),
    [
        ({"SOURCES__COMMBOX__WINDOW_HOURS": "abc"}, (), 2, "config"),
        ({"SOURCES__COMMBOX__API_KEY": CANARY_KEY + "\n"}, (), 0, None),
        ({"DESTINATION__POSTGRES__CREDENTIALS": "postgresql://u:x@127.0.0.1:1/db"}, ("--destination", "postgres"), 1, "destination"),
        ({}, ("--dataset", "Raw-Data"), 1, "destination lock"),
    ],
)  # fmt: skip
def test_doctor_never_prints_a_traceback(canary, tmp_path, monkeypatch, capsys, env, args, code, failed):
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "SOURCES__COMMBOX__BASE_URL": canary.base_url,
        "SOURCES__COMMBOX__API_KEY": CANARY_KEY,
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor", "--timeout", "5", "--pipelines-dir", str(tmp_path / "p"), *args]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and CANARY_KEY not in out + err
    fails = [line.split(":")[0] for line in out.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL {name}" for name in (failed or "").split()]


def test_the_trace_file_is_rewritten_without_a_secret_a_step_failed_with(tmp_path):
    """dlt writes every failed step's exception text to `trace.pickle`; `scrub_trace` (run after
    every `run_pipeline`) redacts registered secrets and URL passwords there."""
    import dlt

    from pipelines.commbox.redact import register_secret, scrub_trace

    register_secret(CANARY_KEY + "\n")

    @dlt.resource(name="leaky")
    def leaky() -> Any:
        yield {"id": 1}
        raise RuntimeError(f"refused 'Bearer {CANARY_KEY}' at http://u:{CANARY_PASSWORD}@host/")

    pipeline = make_test_pipeline(tmp_path)
    with pytest.raises(Exception, match="refused"):
        pipeline.run(leaky())
    assert files_containing(tmp_path / "pipelines", NEEDLES) != []
    scrub_trace(pipeline)
    assert files_containing(tmp_path / "pipelines", NEEDLES) == []
    texts = _trace_texts(tmp_path / "pipelines")
    assert texts and "refused 'Bearer ***' at http://u:***@host/" in texts[0]
