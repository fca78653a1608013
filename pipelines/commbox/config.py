"""Validated settings of the source: a bad configuration fails here, before any request is sent."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from inspect import Parameter, Signature
from typing import Any
from urllib.parse import urlparse

import dlt
from dlt.common.typing import ConfigValueSentinel, TSecretStrValue

from .coerce import parse_timestamp
from .enums import ACTIVITY_TYPE_NAMES
from .redact import MASK, register_secret, url_password
from .settings import (
    DEFAULT_ACTIVITY_TYPES,
    DEFAULT_BASE_URL,
    DEFAULT_CHECKPOINT_CONVERSATIONS,
    DEFAULT_CREATED_MODE_REREAD_DAYS,
    DEFAULT_LOOKBACK_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_MAX_RETRY_WAIT_SECONDS,
    DEFAULT_MAX_WINDOW_DAYS,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    DEFAULT_SAFETY_MARGIN_SECONDS,
    DEFAULT_SNAPSHOT_MAX_AGE_SECONDS,
    DEFAULT_START_DAYS_AGO,
    DEFAULT_WINDOW_HOURS,
    MAX_PAGE_SIZE,
    MODE_AUTO,
    TIME_FILTER_MODES,
)

# `activity_paths`: verify and use a cheaper path (activity_paths.py), or always one request per type.
ACTIVITY_PATH_MODES = ("auto", "per_type")
PLACEHOLDER_KEYS = frozenset({"", "<your api key>", "your-api-key", "changeme", "replace-me"})
_NAMES_TO_TYPES = {name.lower(): number for number, name in ACTIVITY_TYPE_NAMES.items()}


class ConfigError(ValueError):
    """The configuration cannot work; the message says which key and why, in one line."""


@dataclass(frozen=True)
class Setting:
    """One key of `[sources.commbox]`.

    Attributes:
        default: the value when the key is configured nowhere (`dlt.secrets.value`: required secret).
        kind: the type dlt coerces a TOML or environment value to before `validate` sees it.
        bounds: for numbers, the accepted range, inclusive: (low, high, whole numbers only).
    """

    default: Any
    kind: Any
    bounds: tuple[float, float, bool] | None = None


# Every setting of the source, defined once: `commbox_source`'s signature (hence dlt's injection from
# `.dlt/config.toml`, `.dlt/secrets.toml` and SOURCES__COMMBOX__* variables), `validate`'s keywords
# and defaults, and `BOUNDS` are all derived from this table. Ranges: values outside them cannot make
# a useful run (a pace of one request a day, a million threads) and some would hang it, so they are
# refused before any request; docs/configuration.md lists them.
SETTINGS: dict[str, Setting] = {
    "api_key": Setting(dlt.secrets.value, str),
    "base_url": Setting(DEFAULT_BASE_URL, str),
    "stream_ids": Setting(None, Any),
    "start_date": Setting(None, Any),
    "end_date": Setting(None, Any),
    "window_hours": Setting(DEFAULT_WINDOW_HOURS, float, (0.01, 8784.0, False)),
    "max_window_days": Setting(DEFAULT_MAX_WINDOW_DAYS, float, (0.01, 366.0, False)),
    "lookback_seconds": Setting(DEFAULT_LOOKBACK_SECONDS, int, (0, 30 * 86400, True)),
    "safety_margin_seconds": Setting(DEFAULT_SAFETY_MARGIN_SECONDS, int, (0, 86400, True)),
    # One object a page cannot tell a full page from a capped one: every window splits down to a
    # single second (60 conversations took 128,913 requests). Ten is the smallest page the window
    # logic verifies (MIN_SUSPECT_COUNT).
    "page_size": Setting(MAX_PAGE_SIZE, int, (10, MAX_PAGE_SIZE, True)),
    "include_transcripts": Setting(True, bool),
    "activity_types": Setting(None, Any),
    # "auto": read activities by a cheaper documented path (the list's activity log, or every type
    # in one answer) once this run has shown it gives the same rows; "per_type": one request per type.
    "activity_paths": Setting("auto", str),
    "max_concurrency": Setting(DEFAULT_MAX_CONCURRENCY, int, (1, 64, True)),
    # 0 means no ceiling; otherwise at least one request every two seconds.
    "max_requests_per_second": Setting(DEFAULT_MAX_REQUESTS_PER_SECOND, float, (0.5, 1000.0, False)),
    "max_retry_wait_seconds": Setting(DEFAULT_MAX_RETRY_WAIT_SECONDS, float, (0.1, 3600.0, False)),
    "request_timeout_seconds": Setting(DEFAULT_REQUEST_TIMEOUT_SECONDS, float, (1.0, 3600.0, False)),
    "time_filter_mode": Setting(MODE_AUTO, str),
    "created_mode_reread_days": Setting(DEFAULT_CREATED_MODE_REREAD_DAYS, float, (0, 366, False)),
    "backfill": Setting(False, bool),
    "pseudonymize": Setting(False, bool),
    "pseudonymize_key": Setting(None, TSecretStrValue | None),
    # 0 means one load for the whole run; otherwise a load (a checkpoint) every so many conversations.
    "checkpoint_conversations": Setting(DEFAULT_CHECKPOINT_CONVERSATIONS, int, (0, 10_000_000, True)),
    # One request budget for every process reading the account at once (shared_budget.py): "auto"
    # (a folder in the temporary directory), a folder every such process can reach, or "off".
    "shared_budget": Setting("auto", str),
    # Managers, stream statistics, SLA exception counts, availability and the discovered streams are
    # read again once their last reading is this old (0: every run), so that a run that finds no
    # change costs one list call per stream window and nothing else.
    "snapshot_max_age_seconds": Setting(DEFAULT_SNAPSHOT_MAX_AGE_SECONDS, int, (0, 30 * 86400, True)),
}
# Accepted ranges of the numeric settings, inclusive: (low, high, whole numbers only).
BOUNDS: dict[str, tuple[float, float, bool]] = {
    name: setting.bounds for name, setting in SETTINGS.items() if setting.bounds is not None
}
# The keyword-only signature every setting gives a function: dlt injects each parameter it names.
SETTINGS_SIGNATURE = Signature(
    [
        Parameter(name, Parameter.KEYWORD_ONLY, default=setting.default, annotation=setting.kind)
        for name, setting in SETTINGS.items()
    ]
)
# dlt dataset names become schema names: PostgreSQL and BigQuery identifiers, unquoted.
DATASET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


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
    checkpoint_conversations: int = 0
    shared_budget: str = "auto"
    snapshot_max_age_seconds: int = DEFAULT_SNAPSHOT_MAX_AGE_SECONDS
    activity_paths: str = "auto"


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
    """Activity types by number or by name (StatusChange, AssignChange, ...): a TOML array, or a
    comma-separated string as the environment gives it; `[]` or an empty string mean none; None
    (not configured) means the default types."""
    if value is None:
        return tuple(int(t) for t in DEFAULT_ACTIVITY_TYPES)
    if isinstance(value, str):
        value = [part.strip() for part in value.strip().strip("[]").split(",") if part.strip()]
    elif isinstance(value, (bool, float, Mapping)):
        raise ConfigError(f"activity_types: expected a list of activity types, got {type(value).__name__}")
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


def bounded(value: Any, key: str, *, zero_means_none: bool = False) -> float:
    """`value` as a finite number inside `BOUNDS[key]`, else a `ConfigError` naming the range.

    Booleans are refused (TOML `true` is not a number) and so are inf and nan, which would pass any
    comparison-based check or hang a pacing loop.
    """
    low, high, whole = BOUNDS[key]
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a number")
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    if zero_means_none and number == 0:
        return 0.0
    if whole and not number.is_integer():
        raise ConfigError(f"{key}: {value!r} is not a whole number")
    if not low <= number <= high:
        extra = " (or 0 for none)" if zero_means_none else ""
        raise ConfigError(
            f"{key}: {value!r} is outside the accepted range {_shown(low)} to {_shown(high)}{extra}"
        )
    return number


def _shared_budget(value: Any) -> str:
    """`auto`, `off` or a folder (created when missing; it must not be a file)."""
    if value is None:
        return "auto"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"shared_budget: {value!r} is not auto, off or a folder")
    value = value.strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"shared_budget: {value} is a file, not a folder")
    return value


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


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def validate_dataset_name(name: Any, key: str = "dataset") -> str:
    """A dataset name usable as a schema on every destination, else a `ConfigError`."""
    text = str(name or "").strip()
    if not DATASET_NAME.fullmatch(text):
        raise ConfigError(
            f"{key}: {name!r} is not a valid dataset name (letters, digits and underscores, "
            "not starting with a digit, at most 63 characters)"
        )
    return text


def _api_key(value: Any) -> str:
    """The key stripped of surrounding whitespace (files and Kubernetes secrets end in a newline);
    whitespace or control characters inside it are refused, without showing it."""
    if not isinstance(value, str) or value.strip().lower() in PLACEHOLDER_KEYS:
        raise ConfigError(
            "api_key: missing; set sources.commbox.api_key in .dlt/secrets.toml or SOURCES__COMMBOX__API_KEY"
        )
    register_secret(value)
    key = value.strip()
    if any(char.isspace() or not char.isprintable() for char in key):
        raise ConfigError("api_key: contains whitespace or control characters inside it (value not shown)")
    return key


def _base_url(value: Any) -> str:
    text = str(value or "").strip()
    password = url_password(text)
    if password:
        register_secret(password)
    parsed = urlparse(text)
    shown = redact_url(text)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigError(f"base_url: {shown!r} is not an http(s) URL")
    if parsed.username or parsed.password:
        # requests would turn them into Basic auth and drop the Bearer key: the run could only fail.
        raise ConfigError(
            f"base_url: {shown!r} carries a user name or password; the CommBox API authenticates with "
            "api_key only, remove them from the URL"
        )
    return text.rstrip("/")


def redact_url(url: Any) -> str:
    """The URL with the password of its `user:password@` part replaced by `***`."""
    text = str(url or "")
    password = url_password(text)
    return text.replace(f":{password}@", f":{MASK}@", 1) if password else text


def _start(start_date: Any) -> datetime:
    if start_date in (None, ""):
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=DEFAULT_START_DAYS_AGO
        )
    start_at = parse_moment(start_date, "start_date")
    if start_at > datetime.now(UTC):
        # A first run from the future reads nothing and stores a cursor there: silently empty.
        raise ConfigError(f"start_date: {start_at.date()} is in the future")
    return start_at


def _unset(default: Any) -> Any:
    """A setting's value when nobody gave one: a required secret's marker counts as missing."""
    return None if isinstance(default, ConfigValueSentinel) else default


def validate(**raw: Any) -> SourceSettings:
    """Every setting of the source checked and typed, before any request.

    Args:
        **raw: settings by name, as `SETTINGS` names them; a missing one takes its default.

    Returns:
        The settings the source runs with.

    Raises:
        ConfigError: one line naming the key and what is wrong with it; secrets are never shown.
    """
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a setting of [sources.commbox]")
    given = {name: raw.get(name, _unset(setting.default)) for name, setting in SETTINGS.items()}

    def number(key: str, *, zero_means_none: bool = False) -> float:
        return bounded(given[key], key, zero_means_none=zero_means_none)

    _api_key(given["api_key"])
    if isinstance(given["pseudonymize_key"], str):
        register_secret(given["pseudonymize_key"])
    url = _base_url(given["base_url"])
    start_at = _start(given["start_date"])
    end_date = given["end_date"]
    end_at = parse_moment(end_date, "end_date") if end_date not in (None, "") else None
    if end_at is not None and end_at <= start_at:
        raise ConfigError(f"end_date: {end_at.date()} is not after start_date {start_at.date()}")
    backfill = given["backfill"]
    if backfill and end_at is None:
        raise ConfigError("end_date: a backfill needs an end")
    size = int(number("page_size"))
    mode = str(given["time_filter_mode"]).strip().lower()
    if mode not in TIME_FILTER_MODES:
        raise ConfigError(
            f"time_filter_mode: {given['time_filter_mode']!r} is not one of {', '.join(TIME_FILTER_MODES)}"
        )
    activity_paths = str(given["activity_paths"]).strip().lower()
    if activity_paths not in ACTIVITY_PATH_MODES:
        raise ConfigError(
            f"activity_paths: {given['activity_paths']!r} is not one of {', '.join(ACTIVITY_PATH_MODES)}"
        )
    window_seconds = max(1, int(number("window_hours") * 3600))
    max_window_seconds = max(window_seconds, int(number("max_window_days") * 86400))
    return SourceSettings(
        base_url=url,
        stream_ids=parse_stream_ids(given["stream_ids"]),
        start_at=start_at,
        end_at=end_at,
        window_seconds=window_seconds,
        max_window_seconds=max_window_seconds,
        lookback_seconds=int(number("lookback_seconds")),
        safety_margin_seconds=int(number("safety_margin_seconds")),
        page_size=size,
        include_transcripts=_bool(given["include_transcripts"], "include_transcripts"),
        activity_types=parse_activity_types(given["activity_types"]),
        max_concurrency=int(number("max_concurrency")),
        max_requests_per_second=number("max_requests_per_second", zero_means_none=True),
        max_retry_wait_seconds=number("max_retry_wait_seconds"),
        request_timeout_seconds=number("request_timeout_seconds"),
        time_filter_mode=mode,
        created_mode_reread_seconds=int(number("created_mode_reread_days") * 86400),
        backfill=backfill,
        pseudonymize=_pseudonymize(given["pseudonymize"], given["pseudonymize_key"]),
        checkpoint_conversations=int(number("checkpoint_conversations")),
        shared_budget=_shared_budget(given["shared_budget"]),
        snapshot_max_age_seconds=int(number("snapshot_max_age_seconds")),
        activity_paths=activity_paths,
    )


@dataclass(frozen=True)
class SourceConfig:
    """One run's configuration: the validated settings and, kept out of every repr, its secrets."""

    settings: SourceSettings
    api_key: str = field(repr=False)
    pseudonymize_key: str | None = field(default=None, repr=False)


def source_config(**raw: Any) -> SourceConfig:
    """`validate`d settings with the API key (stripped) and the pseudonymisation key beside them.

    Args:
        **raw: settings by name, as `SETTINGS` names them; a missing one takes its default.

    Raises:
        ConfigError: as `validate`.
    """
    settings = validate(**raw)
    key = raw.get("pseudonymize_key")
    return SourceConfig(settings, _api_key(raw.get("api_key")), str(key) if key is not None else None)


def config_error_from_dlt(error: Exception) -> ConfigError:
    """dlt's own configuration errors (a missing key, a value it cannot coerce to the argument's
    type) as one-line `ConfigError`s naming the key; a secret's value is never shown."""
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigValueCannotBeCoercedException,
    )

    if isinstance(error, ConfigFieldMissingException):
        return ConfigError(
            f"{', '.join(error.fields)}: missing; set it in .dlt/secrets.toml or as "
            f"SOURCES__COMMBOX__{error.fields[0].upper()}"
        )
    if isinstance(error, ConfigValueCannotBeCoercedException):
        key = error.field_name
        hint = getattr(error.hint, "__name__", None) or str(error.hint)
        kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(hint, hint)
        shown = "(value not shown)" if "key" in key else repr(error.field_value)
        return ConfigError(f"{key}: {shown} is not {kind}")
    return ConfigError(" ".join(str(error).split())[:300])


def _env_value(text: str) -> Any:
    """An environment value as TOML would read it (`60`, `true`, `[1, 2]`), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def sla_section(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `[sla]` configuration with `SLA__...` environment variables laid over it.

    dlt looks a whole section up in the TOML files only, so `SLA__DEFAULT__TIMEZONE` would be ignored
    without this; the environment wins, as it does for every other key.
    """
    import dlt

    try:
        section = dlt.config["sla"]
    except KeyError:
        section = {}
    merged: dict[str, Any] = _plain_dict(section)
    for name, value in sorted((environ if environ is not None else os.environ).items()):
        if not name.upper().startswith("SLA__"):
            continue
        path = [part.lower() for part in name.split("__")[1:] if part]
        if not path:
            continue
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = _env_value(value)
    return merged


def _plain_dict(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain_dict(item) for key, item in value.items()}
    return value
