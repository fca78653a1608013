"""`commbox-etl doctor`: configuration, SLA, API, key, destination and lock, one line each with the fix."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import dlt
import requests
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)

from ..commbox import load_source_config
from ..commbox.client import ApiError, AuthError, CommBoxClient
from ..commbox.config import ConfigError, config_error_from_dlt
from ..commbox.redact import redact
from ..commbox.settings import MANAGERS, STATS_STREAMS, SYSTEM_STATUS
from .runner import RunLocked, pipeline_lock, read_sla_config

DOCTOR_TABLE = "_commbox_doctor"


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    warning: bool = False

    def line(self) -> str:
        """One line per check; secrets are redacted (a message may quote a URL or an error)."""
        mark = "warn" if self.warning else ("ok  " if self.ok else "FAIL")
        return redact(f"{mark} {self.name}: {' '.join(self.message.split())}")


@dataclass
class _Context:
    settings: Any = None
    api_key: str | None = None


def _one_line(error: BaseException) -> str:
    return redact(" ".join(str(error).split()))[:300]


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; whatever it raises becomes a failed check of one line, never a traceback."""
    try:
        return check()
    except Exception as error:
        return Check(name, False, f"{type(error).__name__}: {_one_line(error)}")


def _check_config(context: _Context, overrides: dict[str, Any]) -> Check:
    try:
        config = load_source_config(**overrides)
    except ConfigFieldMissingException as missing:
        key = missing.fields[0]
        return Check(
            "config",
            False,
            f"{key} is missing: set it in .dlt/secrets.toml [sources.commbox] or as SOURCES__COMMBOX__{key.upper()}",
        )
    except ConfigValueCannotBeCoercedException as error:
        return Check(
            "config", False, f"{config_error_from_dlt(error)}: fix it in .dlt/config.toml or the environment"
        )
    except ConfigError as error:
        return Check("config", False, f"{error}: fix it in .dlt/config.toml or the environment")
    # the settings and the key as a run resolves them (secrets.toml, environment or override)
    context.settings = settings = config.settings
    context.api_key = config.api_key
    streams = ",".join(map(str, settings.stream_ids)) or "discovered from /stats/streams"
    return Check(
        "config",
        True,
        f"base_url {settings.base_url}, streams {streams}, start_date {settings.start_at.date().isoformat()}",
    )


def _check_sla() -> Check:
    try:
        read_sla_config()
    except ConfigError as error:
        return Check("sla", False, f"{error}: fix the [sla] section of .dlt/config.toml")
    except Exception as error:
        return Check("sla", False, f"cannot read the [sla] section: {_one_line(error)}")
    return Check("sla", True, "[sla] configuration is valid")


def _check_api(context: _Context, timeout: float) -> Check:
    """Does anything answer at base_url? Any HTTP response counts, even a 401."""
    url = context.settings.base_url.rstrip("/") + SYSTEM_STATUS
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as error:
        return Check(
            "api",
            False,
            f"no answer from {context.settings.base_url} ({type(error).__name__}): check base_url and "
            "that this machine can reach it",
        )
    took = time.monotonic() - started
    if response.status_code >= 500:
        return Check(
            "api", False, f"{url} answered {response.status_code}: the API is failing, try again later"
        )
    return Check("api", True, f"{context.settings.base_url} answered in {took:.2f}s")


def _check_key(context: _Context, timeout: float) -> Check:
    settings = context.settings
    client = CommBoxClient(
        settings.base_url,
        context.api_key or "",
        max_attempts=2,
        connect_timeout_seconds=timeout,
        request_timeout_seconds=timeout,
        max_retry_wait_seconds=min(10.0, settings.max_retry_wait_seconds),
    )
    try:
        envelope = client.get(SYSTEM_STATUS)
        client.get(MANAGERS)
    except AuthError:
        return Check(
            "key",
            False,
            "the API rejected the key (401): set a valid api_key in .dlt/secrets.toml or SOURCES__COMMBOX__API_KEY",
        )
    except ApiError as error:
        return Check("key", False, f"{_one_line(error)}: the key could not be checked")
    detail = (
        f", server time {envelope.response_time.astimezone(UTC).isoformat(timespec='seconds')}"
        if envelope.response_time
        else ""
    )
    streams = _check_streams(client, settings.stream_ids)
    return Check("key", True, f"the API accepted the key{detail}{streams}")


def _check_streams(client: CommBoxClient, configured: tuple[int, ...]) -> str:
    try:
        rows = client.get(STATS_STREAMS).data or []
    except ApiError:
        return ""
    seen = set()
    for row in rows if isinstance(rows, list) else [rows]:
        if isinstance(row, dict):
            with contextlib.suppress(TypeError, ValueError):
                seen.add(int(str(row.get("streamId", row.get("streamid"))).strip().rstrip(",")))
    if not configured:
        return f"; {len(seen)} streams visible"
    missing = sorted(set(configured) - seen)
    if missing:
        return f"; streams {missing} have no open conversations in /stats/streams (check stream_ids)"
    return f"; all {len(configured)} configured streams visible"


def _check_destination(make: Callable[[], dlt.Pipeline]) -> Check:
    """Create (if needed) the dataset, create, fill, read and drop a scratch table."""
    try:
        pipeline = make()
    except ConfigError as error:
        return Check("destination", False, f"{error}")
    where = f"{pipeline.destination.destination_name} dataset {pipeline.dataset_name}"
    scratch = f"{DOCTOR_TABLE}_{os.getpid()}"
    try:
        with pipeline.sql_client() as client:
            if not client.has_dataset():
                client.create_dataset()
            name = client.make_qualified_table_name(scratch)
            client.execute_sql(f"create table {name} (checked_at bigint)")
            try:
                client.execute_sql(f"insert into {name} (checked_at) values ({int(time.time())})")
                count = client.execute_sql(f"select count(*) from {name}")[0][0]
            finally:
                client.execute_sql(f"drop table {name}")
    except ConfigFieldMissingException as missing:
        destination = pipeline.destination.destination_name
        return Check(
            "destination",
            False,
            f"{where}: {', '.join(missing.fields)} missing: set [destination.{destination}] credentials "
            f"in .dlt/secrets.toml or DESTINATION__{destination.upper()}__CREDENTIALS",
        )
    except Exception as error:
        return Check(
            "destination",
            False,
            f"{where} is not writable ({_one_line(error)}): check the credentials and that the user may "
            "create schemas and tables",
        )
    if count != 1:
        return Check("destination", False, f"{where}: a scratch row did not read back")
    location = ""
    if pipeline.destination.destination_name == "duckdb":
        with contextlib.suppress(Exception):
            location = f" ({pipeline.destination_client().config.credentials.database})"  # type: ignore[attr-defined]
    return Check("destination", True, f"{where}{location} is writable")


def _check_lock(make: Callable[[], dlt.Pipeline]) -> Check:
    try:
        pipeline = make()
        with pipeline_lock(pipeline):
            pass
    except RunLocked as error:
        return Check("lock", True, f"{error}", warning=True)
    except Exception as error:
        return Check("lock", False, f"cannot take the run lock: {_one_line(error)}")
    return Check("lock", True, "no run in progress")


def run_doctor(
    make_pipeline: Callable[[], dlt.Pipeline],
    overrides: dict[str, Any] | None = None,
    timeout: float = 15.0,
) -> list[Check]:
    """Every check, in order; later checks that depend on a failed one are skipped.

    Args:
        make_pipeline: builds the pipeline to check the destination with (`runner.make_pipeline`).
        overrides: source arguments instead of the configuration (tests).
        timeout: seconds to wait for the API.
    """
    context = _Context()
    checks = [
        _guarded("config", lambda: _check_config(context, dict(overrides or {}))),
        _guarded("sla", _check_sla),
    ]
    if context.settings is not None:
        api = _guarded("api", lambda: _check_api(context, timeout))
        checks.append(api)
        if api.ok:
            checks.append(_guarded("key", lambda: _check_key(context, timeout)))
    checks.append(_guarded("destination", lambda: _check_destination(make_pipeline)))
    checks.append(_guarded("lock", lambda: _check_lock(make_pipeline)))
    return checks
