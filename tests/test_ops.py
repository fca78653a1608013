"""`commbox-etl status` and `commbox-etl doctor` against the simulator and a temporary DuckDB file."""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta

import dlt
import pytest

from pipelines.cli import main
from pipelines.ops.doctor import run_doctor
from pipelines.ops.runner import run_pipeline
from pipelines.ops.status import format_lag, read_status, render_status
from pipelines.reporting.views import build_views
from tests.helpers import load, make_test_pipeline, source_settings
from tests.test_sla_known_answers import CONVERSATIONS, load_conversations


def test_status_shows_each_streams_window_lag_rows_and_the_last_run(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    load(pipeline, sim)
    stored = pipeline.state["sources"]["commbox"]["resources"]["conversations"]["streams"]
    now = datetime.now(UTC)
    status = read_status(pipeline, now=now)

    truth = sim.truth.objects()
    per_stream = Counter(o["stream_id"] for o in truth)
    assert [s.stream_id for s in status.streams] == sorted(per_stream)
    for stream in status.streams:
        assert stream.last_window_source == "state"
        assert stream.pipeline == pipeline.pipeline_name
        assert stream.last_window_at == datetime.fromisoformat(stored[str(stream.stream_id)]["cursor_at"])
        assert stream.lag_seconds(now) == pytest.approx((now - stream.last_window_at).total_seconds())
        assert stream.rows["objects"] == per_stream[stream.stream_id]
        assert stream.rows["transcripts"] == per_stream[stream.stream_id]
    childs_per_stream = Counter(
        next(o["stream_id"] for o in truth if o["object_id"] == c["object_id"]) for c in sim.truth.childs()
    )
    assert {s.stream_id: s.rows["childs"] for s in status.streams} == dict(childs_per_stream)
    assert status.tables["objects"] == len(truth)
    assert status.tables["managers"] == len(sim.truth.managers())
    assert status.last_load_at is not None and status.last_load_at <= now
    assert status.last_run is not None and status.last_run.ok

    text = render_status(status)
    for stream in status.streams:
        assert str(stream.stream_id) in text
    assert f"objects={len(truth)}" in text
    assert "last load:" in text and " ok" in text
    # loaded without building the views: the reconciliation is "not built", not "0 disagree"
    assert status.reconciliation is None and status.as_dict()["reconciliation"] is None
    assert "first replies vs CommBox firstResponseTime: views not built yet" in text


def test_status_of_a_backfill_falls_back_to_the_newest_change_loaded(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path, name="commbox_backfill")
    start = min(o["created_at"] for o in sim.truth.objects()).date()
    end = max(o["updated_at"] for o in sim.truth.objects()).date() + timedelta(days=1)
    load(pipeline, sim, backfill=(start.isoformat(), end.isoformat()))
    status = read_status(pipeline)
    newest = {}
    for o in sim.truth.objects():
        newest[o["stream_id"]] = max(newest.get(o["stream_id"], o["updated_at"]), o["updated_at"])
    assert {s.stream_id: s.last_window_at for s in status.streams} == newest
    assert {s.last_window_source for s in status.streams} == {"data"}
    assert "newest updated_at" in render_status(status)


def test_status_before_anything_was_loaded(tmp_path):
    status = read_status(make_test_pipeline(tmp_path))
    assert not status.has_dataset and status.streams == []
    assert "nothing loaded yet" in render_status(status)


def test_status_shows_a_failed_last_run(sim, tmp_path):
    pipeline = make_test_pipeline(tmp_path)
    with pytest.raises(Exception, match="rejected"):
        run_pipeline(pipeline, build_views=False, source_overrides=source_settings(sim, api_key="wrong-key"))
    status = read_status(pipeline)
    assert status.last_run is not None and not status.last_run.ok
    assert "failed in extract" in status.last_run.detail
    assert "failed in extract" in render_status(status)


def test_status_counts_first_replies_that_disagree_with_commbox(tmp_path):
    pipeline = make_test_pipeline(tmp_path, name="reconciled")
    load_conversations(pipeline, CONVERSATIONS)
    build_views(pipeline)
    status = read_status(pipeline)
    # conversation 135: CommBox says 10:50, an agent answered at 10:10; 130 and 131 have unknown sides
    agree = len(CONVERSATIONS) - 3
    assert status.reconciliation is not None
    assert status.reconciliation.first_response.as_dict() == {"agree": agree, "disagree": 1, "unknown": 2}
    assert status.as_dict()["reconciliation"] == {
        "first_response": {"agree": agree, "disagree": 1, "unknown": 2},
        "last_response": {"agree": agree + 1, "disagree": 1, "unknown": 1},
    }
    text = render_status(status)
    assert f"first replies vs CommBox firstResponseTime: {agree} agree, 1 disagree (2 unknown)" in text
    assert f"last replies vs CommBox lastResponseTime: {agree + 1} agree, 1 disagree (1 unknown)" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (42, "42s"), (600, "10m"), (3 * 3600 + 120, "3h 2m"), (2 * 86400 + 5 * 3600, "2d 5h")],
)
def test_lag_is_readable(seconds, text):
    assert format_lag(seconds) == text


def test_status_command_text_json_and_lag_threshold(sim, tmp_path, cli_env, capsys):
    sim.clock.advance(600)
    assert main(["run", "--no-views", *cli_env]) == 0
    capsys.readouterr()
    assert main(["status", *cli_env]) == 0
    text = capsys.readouterr().out
    assert "last window to" in text and "rows: " in text
    assert main(["status", "--json", *cli_env]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {s["stream_id"] for s in document["streams"]} == {s["stream_id"] for s in sim.truth.streams()}
    assert all(s["lag_seconds"] is not None for s in document["streams"])
    assert document["last_run"]["result"] == "ok"
    # the simulator's clock is in the past, so every stream lags by far more than a minute
    assert main(["status", "--max-lag-hours", "0.01", *cli_env]) == 1
    assert "lag more than" in capsys.readouterr().err
    assert main(["status", "--max-lag-hours", str(24 * 365 * 100), *cli_env]) == 0


def test_doctor_passes_on_a_good_setup(sim, cli_env, capsys):
    assert main(["doctor", *cli_env]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines] == [
        "config",
        "sla",
        "api",
        "key",
        "destination",
        "lock",
    ]
    assert all(line.startswith("ok ") for line in lines), lines


def test_doctor_names_a_rejected_key(sim, cli_env, monkeypatch, capsys):
    monkeypatch.setenv("SOURCES__COMMBOX__API_KEY", "not-the-key")
    assert main(["doctor", *cli_env]) == 1
    out = capsys.readouterr().out
    assert "FAIL key: the API rejected the key (401): set a valid api_key" in out
    assert "ok   api:" in out


def test_doctor_names_an_unreachable_api(sim, cli_env, monkeypatch, capsys):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("SOURCES__COMMBOX__BASE_URL", f"http://127.0.0.1:{port}")
    assert main(["doctor", "--timeout", "3", *cli_env]) == 1
    out = capsys.readouterr().out
    assert "FAIL api: no answer from http://127.0.0.1" in out and "check base_url" in out
    assert "key:" not in out  # not checked when nothing answers
    assert "ok   destination:" in out


def test_doctor_names_a_destination_it_cannot_write(sim, cli_env, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(blocker / "warehouse.duckdb"))
    assert main(["doctor", *cli_env]) == 1
    out = capsys.readouterr().out
    assert "FAIL destination: duckdb dataset commbox_raw is not writable" in out
    assert "ok   key:" in out


def test_doctor_reports_configuration_errors_before_any_request(sim, tmp_path):
    sim.reset_stats()

    def pipeline() -> dlt.Pipeline:
        return make_test_pipeline(tmp_path)

    checks = run_doctor(pipeline, overrides=source_settings(sim, api_key="", page_size=500))
    config = checks[0]
    assert config.name == "config" and not config.ok
    assert "api_key" in config.line() or "page_size" in config.line()
    assert [check.name for check in checks] == ["config", "sla", "destination", "lock"]
    assert sum(sim.stats()["requests"].values()) == 0


@pytest.mark.postgres
def test_status_and_doctor_on_postgres(sim, tmp_path, postgres_credentials):
    def pipeline() -> dlt.Pipeline:
        return make_test_pipeline(tmp_path, destination=dlt.destinations.postgres(postgres_credentials))

    before = read_status(pipeline())
    assert not before.has_dataset
    load(pipeline(), sim)
    status = read_status(pipeline())
    per_stream = Counter(o["stream_id"] for o in sim.truth.objects())
    assert {s.stream_id: s.rows["objects"] for s in status.streams} == dict(per_stream)
    assert {s.last_window_source for s in status.streams} == {"state"}
    assert status.last_load_at is not None
    checks = {check.name: check for check in run_doctor(pipeline, overrides=source_settings(sim))}
    assert checks["destination"].ok, checks["destination"].line()
    assert "postgres dataset commbox_raw" in checks["destination"].message
