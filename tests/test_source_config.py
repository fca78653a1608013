"""The settings table (`config.SETTINGS`) is the one definition of the source's settings: every key
in it is injected by dlt from the environment into `load_source_config` and `commbox_source`, and
reaches the validated settings the run reads with."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from pipelines.commbox import RunContext, commbox_source, load_source_config, source_for
from pipelines.commbox.config import SETTINGS, ConfigError, validate

# One environment value per setting, each different from its default, and where it lands.
SAMPLES = {
    "api_key": ("unit-test-key", lambda c: c.api_key == "unit-test-key"),
    "base_url": ("http://example.invalid/", lambda c: c.settings.base_url == "http://example.invalid"),
    "stream_ids": ("3,1", lambda c: c.settings.stream_ids == (3, 1)),
    "start_date": ("2024-02-01", lambda c: c.settings.start_at == datetime(2024, 2, 1, tzinfo=UTC)),
    "end_date": ("2024-03-01", lambda c: c.settings.end_at == datetime(2024, 3, 1, tzinfo=UTC)),
    "window_hours": ("2", lambda c: c.settings.window_seconds == 7200),
    "max_window_days": ("2", lambda c: c.settings.max_window_seconds == 2 * 86400),
    "lookback_seconds": ("61", lambda c: c.settings.lookback_seconds == 61),
    "safety_margin_seconds": ("62", lambda c: c.settings.safety_margin_seconds == 62),
    "page_size": ("50", lambda c: c.settings.page_size == 50),
    "include_transcripts": ("false", lambda c: c.settings.include_transcripts is False),
    "activity_types": ("Remark", lambda c: c.settings.activity_types == (1,)),
    "activity_paths": ("PER_TYPE", lambda c: c.settings.activity_paths == "per_type"),
    "max_concurrency": ("3", lambda c: c.settings.max_concurrency == 3),
    "max_requests_per_second": ("7.5", lambda c: c.settings.max_requests_per_second == 7.5),
    "max_retry_wait_seconds": ("9", lambda c: c.settings.max_retry_wait_seconds == 9),
    "request_timeout_seconds": ("11", lambda c: c.settings.request_timeout_seconds == 11),
    "time_filter_mode": ("created", lambda c: c.settings.time_filter_mode == "created"),
    "created_mode_reread_days": ("2", lambda c: c.settings.created_mode_reread_seconds == 2 * 86400),
    "backfill": ("true", lambda c: c.settings.backfill is True),
    "pseudonymize": ("true", lambda c: c.settings.pseudonymize is True),
    "pseudonymize_key": ("unit-test-pepper", lambda c: c.pseudonymize_key == "unit-test-pepper"),
    "checkpoint_conversations": ("12", lambda c: c.settings.checkpoint_conversations == 12),
    "snapshot_max_age_seconds": ("600", lambda c: c.settings.snapshot_max_age_seconds == 600),
    "shared_budget": ("OFF", lambda c: c.settings.shared_budget == "off"),
}


def test_every_setting_has_a_sample():
    assert set(SAMPLES) == set(SETTINGS)


def test_the_source_takes_exactly_the_settings():
    parameters = inspect.signature(commbox_source).parameters
    assert list(parameters) == list(SETTINGS)
    assert all(parameters[name].default is SETTINGS[name].default for name in SETTINGS)


@pytest.mark.parametrize("name", SAMPLES)
def test_each_setting_is_injected_from_the_environment(monkeypatch, name):
    for key, (value, _) in SAMPLES.items():
        monkeypatch.setenv(f"SOURCES__COMMBOX__{key.upper()}", value)
    config = load_source_config()
    assert SAMPLES[name][1](config), name


def test_a_given_setting_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("SOURCES__COMMBOX__API_KEY", "unit-test-key")
    monkeypatch.setenv("SOURCES__COMMBOX__PAGE_SIZE", "50")
    assert load_source_config(page_size=20).settings.page_size == 20


def test_the_run_context_is_the_handle_of_the_source(monkeypatch):
    """The caller builds the context and keeps it; the source's resources read through it."""
    monkeypatch.setenv("SOURCES__COMMBOX__API_KEY", "unit-test-key")
    context = RunContext(load_source_config(base_url="http://example.invalid", stream_ids=[5]))
    source = source_for(context)
    assert "conversations" in source.resources and context.stream_ids() == (5,)
    assert "unit-test-key" not in repr(context.client) and "unit-test-key" not in repr(load_source_config())


def test_validate_refuses_a_key_that_is_no_setting():
    with pytest.raises(ConfigError, match=r"^page_sise: not a setting"):
        validate(api_key="unit-test-key", page_sise=10)
