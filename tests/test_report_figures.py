"""The SLA report's figures (`report_data`): channel and agent names, counts that add up, and known
answers over tiny hand-computed conversations loaded through the real pipeline (DuckDB)."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.reporting.report_data import ClockCounts, agent_names, channel_names
from pipelines.reporting.sla import load_sla_config

# --- channel names: [sla.streams.<id>] name ------------------------------------------------------


def test_a_channel_name_is_read_and_is_not_a_policy():
    named = load_sla_config({"streams": {"510": {"name": " Support e-mail "}}})
    plain = load_sla_config({})
    assert named.stream_names == {510: "Support e-mail"}
    # a name alone is no policy of its own and no new policy version
    assert named.streams == {} and named.definition == plain.definition
    both = load_sla_config({"streams": {"533": {"name": "Chat", "first_response_minutes": 5}}})
    assert both.stream_names == {533: "Chat"}
    assert both.streams[533].first_response_seconds == 300
    assert both.definition == {"streams": {"533": {"first_response_minutes": 5}}}


@pytest.mark.parametrize("bad", [5, "", "   ", ["Chat"], True])
def test_a_bad_channel_name_names_the_key(bad):
    with pytest.raises(ValueError, match=r"^sla\.streams\.510\.name: expected the channel's name as text"):
        load_sla_config({"streams": {"510": {"name": bad}}})


def test_channel_names_come_from_configuration_then_the_api_then_the_id():
    names = channel_names([1, 2, 3], configured={1: "E-mail"}, from_api={1: "mail-1", 2: "WhatsApp"})
    assert names == {1: "E-mail", 2: "WhatsApp", 3: "stream 3"}


def test_two_channels_with_one_name_keep_their_ids():
    assert channel_names([1, 2, 3], configured={1: "Chat", 2: "Chat", 3: "Mail"}) == {
        1: "Chat (1)",
        2: "Chat (2)",
        3: "Mail",
    }


def test_two_agents_with_one_name_are_told_apart():
    names = agent_names([(501, "Dana", "Levi"), (502, "Dana", "Levi"), (503, "Ann", None), (504, None, " ")])
    assert names == {501: "Dana Levi (501)", 502: "Dana Levi (502)", 503: "Ann", 504: "agent 504"}


def test_clock_counts_add_up_and_attainment_counts_running_past_target():
    counts = ClockCounts(clocks=10, met=4, breached=1, running=3, running_past_target=1, undetermined=2)
    assert counts.met + counts.breached + counts.running + counts.undetermined == counts.clocks
    assert counts.decided == 6
    assert counts.attainment == pytest.approx(4 / 6)
    assert counts.breach_rate == pytest.approx(2 / 6)
    assert ClockCounts().attainment is None
    assert (counts + counts).as_tuple() == (20, 8, 2, 6, 2, 4)
    assert date(2024, 3, 6).weekday() == 2  # the week helpers below count from Monday


def test_report_with_a_bad_channel_name_exits_2_naming_the_key(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("SLA__STREAMS__510__NAME", '["Chat"]')
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "warehouse.duckdb"))
    assert main(["report", "--pipelines-dir", str(tmp_path / "pipelines")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sla.streams.510.name" in err[0] and "Traceback" not in err[0]
