"""Every setting the README shows, given a bad value through the real command line: exit 2, one line on
stderr naming the key, no traceback, no request sent, no hang (each case has a short timeout).

The CLI runs in-process (`pipelines.cli.main`) with the environment as cron would set it, in an
empty working directory so that the repository's `.dlt/config.toml` is not read; two cases run it
in a subprocess to see exactly what an operator's terminal shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.cli import main
from pipelines.commbox.config import BOUNDS, _shown

REPO = Path(__file__).resolve().parents[1]
RUN = ("run", "--no-views")
VIEWS = ("run",)


@pytest.fixture
def small_sim(sim_factory: Any) -> Any:
    return sim_factory(conversations=60, clock_running=False)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small_sim: Any) -> Any:
    """`cli(args, **env)` -> (exit code, stdout, stderr, requests the simulator saw)."""
    for name in list(os.environ):
        if name.startswith(("SOURCES__", "DESTINATION__", "SLA__", "COMMBOX_", "DATASET_NAME")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    start = min(o["created_at"] for o in small_sim.truth.objects()).date().isoformat()
    base = {
        "SOURCES__COMMBOX__BASE_URL": small_sim.base_url,
        "SOURCES__COMMBOX__API_KEY": small_sim.api_key,
        "SOURCES__COMMBOX__START_DATE": start,
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
    }

    def invoke(args: tuple[str, ...], capsys: Any, **env: str) -> tuple[int, str, str, int]:
        for name, value in {**base, **env}.items():
            monkeypatch.setenv(name, value)
        small_sim.reset_stats()
        command, *rest = args
        code = main(
            ["--log-level", "WARNING", command, "--pipelines-dir", str(tmp_path / "pipelines"), *rest]
        )
        out, err = capsys.readouterr()
        return code, out, err, small_sim.stats()["total_requests"]

    return invoke


K = "SOURCES__COMMBOX__"
# (what is configured, the key the one line must name, the command)
BAD: list[tuple[dict[str, str], tuple[str, ...], str]] = [
    *[({K + "WINDOW_HOURS": v}, RUN, "window_hours") for v in ("abc", "inf", "nan", "-1", "0", "100000")],
    *[({K + "MAX_WINDOW_DAYS": v}, RUN, "max_window_days") for v in ("abc", "nan", "0", "1000")],
    *[({K + "LOOKBACK_SECONDS": v}, RUN, "lookback_seconds") for v in ("abc", "-5", "1.5", "inf")],
    *[({K + "SAFETY_MARGIN_SECONDS": v}, RUN, "safety_margin_seconds") for v in ("x", "-1", "999999")],
    *[({K + "PAGE_SIZE": v}, RUN, "page_size") for v in ("abc", "0", "1", "9", "101", "2.5")],
    *[({K + "INCLUDE_TRANSCRIPTS": v}, RUN, "include_transcripts") for v in ("maybe", "2")],
    *[({K + "ACTIVITY_TYPES": v}, RUN, "activity_types") for v in ("[2, 99]", "Nope", "[Remark, Bogus]")],
    *[({K + "MAX_CONCURRENCY": v}, RUN, "max_concurrency") for v in ("0", "1000000", "abc", "inf", "2.5")],
    *[
        ({K + "MAX_REQUESTS_PER_SECOND": v}, RUN, "max_requests_per_second")
        for v in ("0.000001", "-1", "nan", "inf", "1e9", "abc")
    ],
    *[({K + "MAX_RETRY_WAIT_SECONDS": v}, RUN, "max_retry_wait_seconds") for v in ("0", "nan", "-1", "inf")],
    *[({K + "REQUEST_TIMEOUT_SECONDS": v}, RUN, "request_timeout_seconds") for v in ("0", "nan", "1e9")],
    ({K + "TIME_FILTER_MODE": "sideways"}, RUN, "time_filter_mode"),
    *[({K + "ACTIVITY_PATHS": v}, RUN, "activity_paths") for v in ("cheapest", "list_log")],
    *[({K + "CREATED_MODE_REREAD_DAYS": v}, RUN, "created_mode_reread_days") for v in ("-1", "nan", "1000")],
    *[
        ({K + "CHECKPOINT_CONVERSATIONS": v}, RUN, "checkpoint_conversations")
        for v in ("-1", "abc", "1.5", "inf", "1e12")
    ],
    *[
        ({K + "SNAPSHOT_MAX_AGE_SECONDS": v}, RUN, "snapshot_max_age_seconds")
        for v in ("-1", "abc", "1.5", "nan", "1e9")
    ],
    ({K + "PSEUDONYMIZE": "maybe"}, RUN, "pseudonymize"),
    ({K + "PSEUDONYMIZE": "true"}, RUN, "pseudonymize_key"),
    *[({K + "START_DATE": v}, RUN, "start_date") for v in ("2099-01-01", "not-a-date", "2024-13-45")],
    ({K + "END_DATE": "2001-01-01"}, RUN, "end_date"),
    *[({K + "STREAM_IDS": v}, RUN, "stream_ids") for v in ("abc", "-3", "1.5")],
    *[({K + "BASE_URL": v}, RUN, "base_url") for v in ("ftp://example.com", "not a url")],
    *[({K + "API_KEY": v}, RUN, "api_key") for v in ("", "<your api key>", "two words")],
    ({}, ("run", "--no-views", "--dataset", "Raw-Data"), "dataset"),
    ({}, ("run", "--no-views", "--dataset", "9lives"), "dataset"),
    ({"DATASET_NAME": "raw data"}, RUN, "dataset"),
    ({}, ("run", "--no-views", "--destination", "oracle"), "destination"),
    ({}, ("run", "--no-views", "--streams", "1,x"), "stream_ids"),
    ({"SLA__DEFAULT__TIMEZONE": "Mars/Olympus_Mons"}, VIEWS, "timezone"),
    ({"SLA__DEFAULT__FIRST_RESPONSE_MINUTES": "soon"}, VIEWS, "first_response_minutes"),
    ({"SLA__STREAMS__532__TIMEZONE": "Nowhere/Land"}, VIEWS, "timezone"),
    ({}, ("backfill", "--no-views", "--start", "2024-13-01", "--end", "2024-02-01"), "--start"),
    ({}, ("backfill", "--no-views", "--start", "2024-02-01", "--end", "2024-01-01"), "--end"),
    ({}, ("backfill", "--no-views", "--start", "2099-01-01", "--end", "2099-02-01"), "start_date"),
    (
        {"SOURCES__COMMBOX__PAGE_SIZE": "1"},
        ("backfill", "--no-views", "--start", "2024-01-01", "--end", "2024-02-01"),
        "page_size",
    ),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("env", "args", "key"), BAD, ids=[f"{key}={next(iter(env.values()), args[-1])}" for env, args, key in BAD]
)
def test_a_bad_value_is_one_line_naming_the_key_before_any_request(cli, capsys, env, args, key):
    code, out, err, requests = cli(args, capsys, **env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert key in lines[0] and "Traceback" not in out + err, err
    assert requests == 0


def test_every_bounded_key_is_in_the_table():
    """A new numeric setting gets its bad values above, not just a bound."""
    tested = {key for _, _, key in BAD}
    assert set(BOUNDS) <= tested


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("value", "types"), [("[2, 6]", {2, 6}), ("2,6", {2, 6}), ("[]", set()), ("Remark", {1})]
)
def test_activity_types_as_an_array_a_comma_string_or_none(cli, capsys, tmp_path, value, types):
    code, _, err, requests = cli(RUN, capsys, SOURCES__COMMBOX__ACTIVITY_TYPES=value)
    assert code == 0, err
    assert requests > 0
    assert _activity_types(tmp_path) == types


@pytest.mark.timeout(60)
def test_activity_types_as_a_toml_array_in_config_toml(cli, capsys, tmp_path):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text("[sources.commbox]\nactivity_types = [2, 6]\n")
    code, _, err, _ = cli(RUN, capsys)
    assert code == 0, err
    assert _activity_types(tmp_path) == {2, 6}


@pytest.mark.timeout(60)
def test_the_smallest_accepted_page_size_loads_everything(cli, capsys, tmp_path, small_sim):
    code, _, err, _ = cli(RUN, capsys, SOURCES__COMMBOX__PAGE_SIZE=str(int(BOUNDS["page_size"][0])))
    assert code == 0, err
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        loaded = {row[0] for row in conn.execute("select object_id from commbox_raw.objects").fetchall()}
    assert loaded == {o["object_id"] for o in small_sim.truth.objects()}


def _activity_types(tmp_path: Path) -> set[int]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        tables = {
            row[0] for row in conn.execute("select table_name from information_schema.tables").fetchall()
        }
        if "activities" not in tables:
            return set()
        return {row[0] for row in conn.execute("select activity_type from commbox_raw.activities").fetchall()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("SOURCES__COMMBOX__WINDOW_HOURS", "abc", "window_hours"),
        ("SOURCES__COMMBOX__MAX_CONCURRENCY", "1000000", "max_concurrency"),
    ],
)
def test_what_the_terminal_shows_is_one_line(tmp_path, small_sim, name, value, key):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__", "SLA__"))}
    env.update(
        SOURCES__COMMBOX__BASE_URL=small_sim.base_url,
        SOURCES__COMMBOX__API_KEY=small_sim.api_key,
        DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "warehouse.duckdb"),
        PYTHONPATH=str(REPO),
        **{name: value},
    )
    small_sim.reset_stats()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--pipelines-dir", str(tmp_path / "p")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and key in done.stderr and "Traceback" not in done.stderr
    assert small_sim.stats()["total_requests"] == 0


def test_the_configuration_page_shows_real_keys_and_the_real_bounds():
    import inspect
    import re

    from pipelines.commbox import commbox_source

    page = (REPO / "docs" / "configuration.md").read_text()
    parameters = set(inspect.signature(commbox_source).parameters)
    rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|(.*)$", page, re.MULTILINE)
    shown = {key for keys, _ in rows for key in re.findall(r"`([a-z_]+)`", keys)}
    assert shown and shown - parameters == set()
    for keys, rest in rows:
        key = keys.strip("`")
        if key in BOUNDS:
            low, high, _ = BOUNDS[key]
            assert f"{_shown(low)} to {_shown(high)}" in rest, key
    assert set(BOUNDS) <= shown
    for name in re.findall(r"\b(SOURCES__COMMBOX__[A-Z_]+|SLA__[A-Z0-9_]+)", page):
        if name.startswith("SOURCES__"):
            assert name.removeprefix("SOURCES__COMMBOX__").lower() in parameters, name
