"""Validated settings of the source: a bad configuration fails here, before any request is sent."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from .normalise import parse_timestamp
from .settings import ACTIVITY_TYPE_NAMES, DEFAULT_START_DAYS_AGO, MAX_PAGE_SIZE, TIME_FILTER_MODES

PLACEHOLDER_KEYS = frozenset({"", "<your api key>", "your-api-key", "changeme", "replace-me"})
_NAMES_TO_TYPES = {name.lower(): number for number, name in ACTIVITY_TYPE_NAMES.items()}


class ConfigError(ValueError):
    """The configuration cannot work; the message says which key and why, in one line."""


@dataclass(frozen=True)
class SourceSettings:
    base_url: str
    stream_ids: tuple[int, ...]
    start_at: datetime
    end_at: datetime | None
    window_seconds: int
    max_window_seconds: int
    lookback_seconds: int
    safety_margin_seconds: int
    page_size: int
    include_transcripts: bool
    activity_types: tuple[int, ...]
    max_concurrency: int
    max_requests_per_second: float
    max_retry_wait_seconds: float
    request_timeout_seconds: float
    time_filter_mode: str
    created_mode_reread_seconds: int
    backfill: bool
    pseudonymize: bool = False


def parse_moment(value: Any, key: str) -> datetime:
    """A UTC datetime from a date, a datetime, an ISO string (date or timestamp) or unix seconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                return datetime.fromisoformat(text).replace(tzinfo=UTC)
            except ValueError:
                pass
        else:
            try:
                parsed = parse_timestamp(text)
            except ValueError:
                parsed = None
            if parsed is not None:
                return parsed
    raise ConfigError(f"{key}: {value!r} is not a date (YYYY-MM-DD) or an ISO timestamp")


def parse_stream_ids(value: Any) -> tuple[int, ...]:
    """Stream ids from a list, or a comma-separated string as the environment gives them."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip().strip("[]")
        items: Iterable[Any] = [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"stream_ids: expected a list of stream ids, got {type(value).__name__}")
    ids = []
    for item in items:
        if isinstance(item, bool) or not re.fullmatch(r"\d+", str(item).strip()) or int(item) <= 0:
            raise ConfigError(f"stream_ids: {item!r} is not a stream id (a positive integer)")
        ids.append(int(item))
    return tuple(dict.fromkeys(ids))


def parse_activity_types(value: Any) -> tuple[int, ...]:
    """Activity types by number or by name (StatusChange, AssignChange, ...)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.strip().strip("[]").split(",") if part.strip()]
    types = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        text = str(item).strip().strip("'\"")
        if text.isdigit() and int(text) in ACTIVITY_TYPE_NAMES:
            types.append(int(text))
        elif text.lower() in _NAMES_TO_TYPES:
            types.append(_NAMES_TO_TYPES[text.lower()])
        else:
            raise ConfigError(f"activity_types: {item!r} is not an ObjectActivityType (1-23 or its name)")
    return tuple(dict.fromkeys(types))


def _positive(value: Any, key: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a number") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(
            f"{key}: must be {'zero or more' if allow_zero else 'more than zero'}, got {value!r}"
        )
    return number


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.strip().lower() in {"true", "1", "yes"}
    raise ConfigError(f"{key}: {value!r} is not true or false")


def _pseudonymize(value: Any, key: Any) -> bool:
    enabled = _bool(value, "pseudonymize")
    if enabled and (not isinstance(key, str) or not key.strip() or key.strip().lower() in PLACEHOLDER_KEYS):
        raise ConfigError(
            "pseudonymize_key: missing while pseudonymize = true; set sources.commbox.pseudonymize_key "
            "in .dlt/secrets.toml or SOURCES__COMMBOX__PSEUDONYMIZE_KEY (nothing is read without it)"
        )
    return enabled


def validate(
    *,
    api_key: Any,
    base_url: Any,
    stream_ids: Any,
    start_date: Any,
    end_date: Any,
    window_hours: Any,
    max_window_days: Any,
    lookback_seconds: Any,
    safety_margin_seconds: Any,
    page_size: Any,
    include_transcripts: Any,
    activity_types: Any,
    max_concurrency: Any,
    max_requests_per_second: Any,
    max_retry_wait_seconds: Any,
    request_timeout_seconds: Any,
    time_filter_mode: Any,
    created_mode_reread_days: Any,
    backfill: bool,
    pseudonymize: Any = False,
    pseudonymize_key: Any = None,
) -> SourceSettings:
    if not isinstance(api_key, str) or api_key.strip().lower() in PLACEHOLDER_KEYS:
        raise ConfigError(
            "api_key: missing; set sources.commbox.api_key in .dlt/secrets.toml or SOURCES__COMMBOX__API_KEY"
        )
    parsed_url = urlparse(str(base_url or ""))
    if parsed_url.scheme not in {"http", "https"} or not parsed_url.netloc:
        raise ConfigError(f"base_url: {base_url!r} is not an http(s) URL")
    start_at = (
        parse_moment(start_date, "start_date")
        if start_date not in (None, "")
        else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        - timedelta(days=DEFAULT_START_DAYS_AGO)
    )
    end_at = parse_moment(end_date, "end_date") if end_date not in (None, "") else None
    if end_at is not None and end_at <= start_at:
        raise ConfigError(f"end_date: {end_at.date()} is not after start_date {start_at.date()}")
    if backfill and end_at is None:
        raise ConfigError("end_date: a backfill needs an end")
    size = int(_positive(page_size, "page_size"))
    if size > MAX_PAGE_SIZE:
        raise ConfigError(f"page_size: the API returns at most {MAX_PAGE_SIZE} objects a call, got {size}")
    mode = str(time_filter_mode).strip().lower()
    if mode not in TIME_FILTER_MODES:
        raise ConfigError(
            f"time_filter_mode: {time_filter_mode!r} is not one of {', '.join(TIME_FILTER_MODES)}"
        )
    window_seconds = max(1, int(_positive(window_hours, "window_hours") * 3600))
    max_window_seconds = max(window_seconds, int(_positive(max_window_days, "max_window_days") * 86400))
    return SourceSettings(
        base_url=str(base_url).rstrip("/"),
        stream_ids=parse_stream_ids(stream_ids),
        start_at=start_at,
        end_at=end_at,
        window_seconds=window_seconds,
        max_window_seconds=max_window_seconds,
        lookback_seconds=int(_positive(lookback_seconds, "lookback_seconds", allow_zero=True)),
        safety_margin_seconds=int(_positive(safety_margin_seconds, "safety_margin_seconds", allow_zero=True)),
        page_size=size,
        include_transcripts=_bool(include_transcripts, "include_transcripts"),
        activity_types=parse_activity_types(activity_types),
        max_concurrency=max(1, int(_positive(max_concurrency, "max_concurrency"))),
        max_requests_per_second=_positive(
            max_requests_per_second, "max_requests_per_second", allow_zero=True
        ),
        max_retry_wait_seconds=_positive(max_retry_wait_seconds, "max_retry_wait_seconds"),
        request_timeout_seconds=_positive(request_timeout_seconds, "request_timeout_seconds"),
        time_filter_mode=mode,
        created_mode_reread_seconds=int(
            _positive(created_mode_reread_days, "created_mode_reread_days", allow_zero=True) * 86400
        ),
        backfill=backfill,
        pseudonymize=_pseudonymize(pseudonymize, pseudonymize_key),
    )
