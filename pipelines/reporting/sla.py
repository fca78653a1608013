"""SLA configuration and the SLA input tables the reporting views read.

CommBox measures a service level as a target time (first response, next response, resolution) with a
warning once 50% of it has elapsed, a critical warning at 80% and a breach ("exception") after 100%.
Targets may count business hours only. Time zones, daylight-saving changes, holidays and special days
are handled here, in Python, once: the pipeline loads the result as plain UTC tables, so the SQL views
need no time-zone arithmetic and give the same numbers on every warehouse.

Tables yielded by `sla_resources()` (all write disposition `replace`):

- `sla_policies`: one row per policy version: a `default` row (stream_id NULL) and one row per stream
  (`policy_name`), with every key resolved (stream overrides on top of `[sla.default]`), targets in
  seconds, in force over `[effective_from_at, effective_to_at)`. `policy_key` names the version: the
  policy name for the first, `<name>@<effective date>` for later ones.
- `business_windows`: half-open business intervals `[window_start_at, window_end_at)` in UTC, one row
  per opening (merged when they touch), per policy version, from `span_start - 7 days` to
  `span_end + 60 days` (every version over the whole span: a clock keeps the version it started under).
- `calendar_days`: one row per policy version and local date in its time zone, with the UTC bounds
  of that local day (23 or 25 hours long across daylight-saving changes).

Policy history: every version of `[sla]` the warehouse has seen is kept in `sla_policies` (its whole
section, as JSON in `definition`) and read back by the next load. A changed `[sla]` becomes a new
version in force from `[sla] effective_from` (local midnight in each policy's time zone; default: the
day of the load, UTC), so a clock is measured against the version in force when it started and a
change never rewrites the numbers before that date. The first version reaches back to 1970. A new
version dated on or before a later one replaces it (a correction from that date on).
- `sla_statuses`: one row per ObjectStatusType with how it counts (open, paused, resolved).

Configuration (`.dlt/config.toml`; every key is optional, see README: SLA reporting)::

    [sla.default]
    timezone = "UTC"
    business_hours = { mon = "09:00-18:00", fri = "09:00-12:00,13:00-17:00" }
    holidays = ["2024-12-25"]
    special_days = { "2024-12-24" = "09:00-13:00" }
    business_hours_only = true
    first_response_minutes = 60

    [sla.streams.532]
    timezone = "America/New_York"
    name = "Support e-mail"   # the channel's name in the reports (not part of the policy)

    [sla.statuses]
    open = [1, 3, 6, 8, 10]

    [sla]
    effective_from = "2024-07-01"   # when a changed [sla] starts to apply
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dlt
from dlt.extract.resource import DltResource

from ..commbox.enums import STATUS_NAMES, ObjectStatus

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Plain ints: these go into `sla_statuses` rows and are compared with the loaded `status_id`.
DEFAULT_OPEN_STATUSES = tuple(
    map(
        int,
        (
            ObjectStatus.OPEN,
            ObjectStatus.FORWARD,
            ObjectStatus.FORWARD_REPLY,
            ObjectStatus.IN_PROCESS,
            ObjectStatus.FOLLOW_UP,
        ),
    )
)
DEFAULT_PAUSED_STATUSES = tuple(map(int, (ObjectStatus.SCHEDULED, ObjectStatus.PENDING)))
DEFAULT_RESOLVED_STATUSES = tuple(map(int, (ObjectStatus.RESOLVED, ObjectStatus.ARCHIVE)))

WINDOWS_DAYS_BEFORE = 7
WINDOWS_DAYS_AFTER = 60

_POLICY_DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "business_hours": {day: "09:00-18:00" for day in DAYS[:5]},
    "holidays": [],
    "special_days": {},
    "business_hours_only": True,
    "first_response_minutes": 60,
    "next_response_minutes": 60,
    "resolution_minutes": 1440,
    "warning_percent": 50,
    "critical_percent": 80,
    "bot_counts_as_response": False,
}
_SECTION_KEYS = {"default", "streams", "statuses", "effective_from"}
# The first policy version is in force from here: every conversation has a policy.
HISTORY_START = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_KEYS = {"open", "paused", "resolved"}
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_CLOSED = {"", "closed", "none"}

Hours = tuple[tuple[time, time | None], ...]
"""Opening ranges of one day; an end of None means 24:00, an end <= start runs past midnight."""


@dataclass(frozen=True)
class SlaPolicy:
    """One resolved policy (a stream's, or the default)."""

    timezone: str
    business_hours: dict[str, Hours]
    holidays: frozenset[date]
    special_days: dict[date, Hours]
    business_hours_only: bool
    first_response_seconds: int
    next_response_seconds: int
    resolution_seconds: int
    warning_fraction: float
    critical_fraction: float
    bot_counts_as_response: bool
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SlaConfig:
    """The validated `[sla]` section: a default policy, per-stream policies and status categories."""

    default: SlaPolicy
    streams: dict[int, SlaPolicy]
    open_statuses: frozenset[int]
    paused_statuses: frozenset[int]
    resolved_statuses: frozenset[int]
    effective_from: date | None = None
    definition: dict[str, Any] = field(default_factory=dict, compare=False)
    # `[sla.streams.<id>] name`: how the reports call a channel. Not part of the policy (a rename
    # is not a new policy version), so kept out of `definition`.
    stream_names: dict[int, str] = field(default_factory=dict, compare=False)

    def policy_for(self, stream_id: int) -> SlaPolicy:
        return self.streams.get(stream_id, self.default)


def _plain(value: Any) -> Any:
    """dlt config sections come back as mapping-like objects; make them plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _parse_hours(value: Any, where: str) -> Hours:
    if value is None:
        return ()
    parts: list[str]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, list):
        parts = [str(p).strip() for p in value]
    else:
        raise ValueError(f"{where}: expected 'HH:MM-HH:MM' (or a list of them), got {value!r}")
    ranges: list[tuple[time, time | None]] = []
    for part in parts:
        if part.lower() in _CLOSED:
            continue
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"{where}: bad time range {part!r}; expected 'HH:MM-HH:MM', e.g. '09:00-18:00'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
            raise ValueError(f"{where}: bad time in {part!r}")
        start = time(h1, m1)
        end = None if h2 == 24 else time(h2, m2)
        if end == start:
            raise ValueError(f"{where}: empty range {part!r}")
        ranges.append((start, end))
    return tuple(ranges)


def _parse_date(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where}: bad date {value!r}; expected YYYY-MM-DD") from None


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    return value


def _build_policy(values: dict[str, Any], where: str) -> SlaPolicy:
    try:
        ZoneInfo(str(values["timezone"]))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}.timezone: unknown time zone {values['timezone']!r}") from None
    hours_cfg = values["business_hours"]
    if not isinstance(hours_cfg, dict):
        raise ValueError(f"{where}.business_hours: expected a table like {{ mon = '09:00-18:00' }}")
    unknown_days = set(hours_cfg) - set(DAYS)
    if unknown_days:
        raise ValueError(f"{where}.business_hours: unknown day(s) {sorted(unknown_days)}; use {list(DAYS)}")
    business_hours = {day: _parse_hours(hours_cfg.get(day), f"{where}.business_hours.{day}") for day in DAYS}
    if not isinstance(values["holidays"], list):
        raise ValueError(f"{where}.holidays: expected a list of 'YYYY-MM-DD' dates")
    holidays = frozenset(_parse_date(d, f"{where}.holidays") for d in values["holidays"])
    if not isinstance(values["special_days"], dict):
        raise ValueError(f"{where}.special_days: expected a table like {{ '2024-12-24' = '09:00-13:00' }}")
    special_days = {
        _parse_date(d, f"{where}.special_days"): _parse_hours(h, f"{where}.special_days.{d}")
        for d, h in values["special_days"].items()
    }
    business_hours_only = _boolean(values["business_hours_only"], f"{where}.business_hours_only")
    if business_hours_only and not any(business_hours.values()):
        raise ValueError(f"{where}: business_hours_only = true but business_hours has no opening hours")
    warning = _positive(values["warning_percent"], f"{where}.warning_percent")
    critical = _positive(values["critical_percent"], f"{where}.critical_percent")
    if not warning < critical < 100:
        raise ValueError(f"{where}: need warning_percent < critical_percent < 100, got {warning}, {critical}")

    def seconds(key: str) -> int:
        return round(_positive(values[key], f"{where}.{key}") * 60)

    return SlaPolicy(
        timezone=str(values["timezone"]),
        business_hours=business_hours,
        holidays=holidays,
        special_days=special_days,
        business_hours_only=business_hours_only,
        first_response_seconds=seconds("first_response_minutes"),
        next_response_seconds=seconds("next_response_minutes"),
        resolution_seconds=seconds("resolution_minutes"),
        warning_fraction=warning / 100,
        critical_fraction=critical / 100,
        bot_counts_as_response=_boolean(values["bot_counts_as_response"], f"{where}.bot_counts_as_response"),
        raw=values,
    )


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = set(values) - set(_POLICY_DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(_POLICY_DEFAULTS)}")


def _status_list(values: dict[str, Any], key: str, default: Iterable[int]) -> frozenset[int]:
    raw = values.get(key, list(default))
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise ValueError(f"sla.statuses.{key}: expected a list of ObjectStatusType ids, got {raw!r}")
    unknown = set(raw) - set(STATUS_NAMES)
    if unknown:
        raise ValueError(f"sla.statuses.{key}: unknown status id(s) {sorted(unknown)}")
    return frozenset(raw)


def load_sla_config(section: Mapping[str, Any] | None = None) -> SlaConfig:
    """Validate the `[sla]` configuration section.

    Args:
        section: the nested `[sla]` mapping (`{"default": {...}, "streams": {"532": {...}},
            "statuses": {...}}`). None reads `dlt.config["sla"]`; a missing section gives the defaults.

    Returns:
        The validated configuration.

    Raises:
        ValueError: on an unknown key, a bad time range, date, time zone, number or status id, so a
            bad configuration fails before the pipeline makes a single request.
    """
    if section is None:
        try:
            section = dlt.config["sla"]
        except KeyError:
            section = {}
    values = _plain(section or {})
    if not isinstance(values, dict):
        raise ValueError(f"sla: expected a table, got {values!r}")
    effective_from = (
        _parse_date(values["effective_from"], "sla.effective_from") if "effective_from" in values else None
    )
    unknown = set(values) - _SECTION_KEYS
    if unknown:
        raise ValueError(
            f"sla: unknown key(s) {sorted(unknown)}; expected [sla.default], [sla.streams.<id>], [sla.statuses]"
        )

    default_values = values.get("default") or {}
    _check_keys(default_values, "sla.default")
    merged_default = {**_POLICY_DEFAULTS, **default_values}
    default = _build_policy(merged_default, "sla.default")

    streams: dict[int, SlaPolicy] = {}
    stream_names: dict[int, str] = {}
    for key, overrides in list((values.get("streams") or {}).items()):
        where = f"sla.streams.{key}"
        try:
            stream_id = int(key)
        except ValueError:
            raise ValueError(f"{where}: stream keys must be numeric stream ids") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"{where}: expected a table of overrides")
        if "name" in overrides:
            overrides = dict(overrides)
            name = overrides.pop("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}.name: expected the channel's name as text, got {name!r}")
            stream_names[stream_id] = name.strip()
            if overrides:
                values["streams"][key] = overrides
            else:  # a name alone is no policy of its own
                del values["streams"][key]
                continue
        _check_keys(overrides, where)
        streams[stream_id] = _build_policy({**merged_default, **overrides}, where)

    statuses = values.get("statuses") or {}
    unknown = set(statuses) - _STATUS_KEYS
    if unknown:
        raise ValueError(
            f"sla.statuses: unknown key(s) {sorted(unknown)}; known keys: {sorted(_STATUS_KEYS)}"
        )
    open_ = _status_list(statuses, "open", DEFAULT_OPEN_STATUSES)
    paused = _status_list(statuses, "paused", DEFAULT_PAUSED_STATUSES)
    resolved = _status_list(statuses, "resolved", DEFAULT_RESOLVED_STATUSES)
    for a, b, sa, sb in (
        (open_, paused, "open", "paused"),
        (open_, resolved, "open", "resolved"),
        (paused, resolved, "paused", "resolved"),
    ):
        if a & b:
            raise ValueError(f"sla.statuses: status id(s) {sorted(a & b)} are both {sa} and {sb}")
    definition = {key: value for key, value in values.items() if key != "effective_from"}
    if stream_names and "streams" in definition and not definition["streams"]:
        del definition["streams"]  # only names were given: the same policy as without them
    return SlaConfig(default, streams, open_, paused, resolved, effective_from, definition, stream_names)


def _day_hours(policy: SlaPolicy, day: date) -> Hours:
    if day in policy.special_days:
        return policy.special_days[day]
    if day in policy.holidays:
        return ()
    return policy.business_hours[DAYS[day.weekday()]]


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0: an ambiguous wall time (the repeated hour when clocks go back) is its first occurrence;
    # a wall time that does not exist (clocks go forward) lands just after the gap.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def business_windows(
    policy: SlaPolicy, first_day: date, last_day: date
) -> list[tuple[datetime, datetime, date]]:
    """Half-open UTC business intervals for local dates `first_day`..`last_day`, merged where they touch.

    Returns:
        `(start_utc, end_utc, local_date)` triples, sorted and non-overlapping; `local_date` is the
        date the (first merged) opening belongs to.
    """
    zone = ZoneInfo(policy.timezone)
    raw: list[tuple[datetime, datetime, date]] = []
    day = first_day
    while day <= last_day:
        for start, end in _day_hours(policy, day):
            start_at = _local(day, start, zone)
            if end is None:
                end_at = _local(day + timedelta(days=1), time(0), zone)
            elif end <= start:
                end_at = _local(day + timedelta(days=1), end, zone)
            else:
                end_at = _local(day, end, zone)
            if end_at > start_at:
                raw.append((start_at, end_at, day))
        day += timedelta(days=1)
    raw.sort()
    merged: list[tuple[datetime, datetime, date]] = []
    for start_at, end_at, local_date in raw:
        if merged and start_at <= merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end_at), last[2])
        else:
            merged.append((start_at, end_at, local_date))
    return merged


def _policy_rows(cfg: SlaConfig, stream_ids: list[int]) -> list[tuple[str, int | None, SlaPolicy]]:
    rows: list[tuple[str, int | None, SlaPolicy]] = [("default", None, cfg.default)]
    for stream_id in sorted(set(stream_ids) | set(cfg.streams)):
        rows.append((str(stream_id), stream_id, cfg.policy_for(stream_id)))
    return rows


def _span_days(policy: SlaPolicy, span_start: datetime, span_end: datetime) -> tuple[date, date]:
    zone = ZoneInfo(policy.timezone)
    first = span_start.astimezone(zone).date() - timedelta(days=WINDOWS_DAYS_BEFORE)
    last = span_end.astimezone(zone).date() + timedelta(days=WINDOWS_DAYS_AFTER)
    return first, last


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PolicyVersion:
    """One version of `[sla]`: its configuration and the local date it is in force from (None for
    the first version, which reaches back to HISTORY_START)."""

    config: SlaConfig
    effective_from: date | None = None


Definition = dict[str, Any]


def _canonical(definition: Mapping[str, Any]) -> Definition:
    """A definition as it reads back from the warehouse (dates as text), so versions compare equal."""
    return dict(json.loads(json.dumps(_plain(definition), sort_keys=True, default=str)))


def policy_history(
    previous: Iterable[tuple[date | None, Mapping[str, Any]]], cfg: SlaConfig, today: date
) -> list[PolicyVersion]:
    """The policy versions to load: the stored ones, plus `cfg` when it differs from the newest.

    Args:
        previous: `(effective_from, definition)` of every stored version (`read_history()`).
        cfg: the `[sla]` configuration of this load.
        today: the date a change applies from when `[sla] effective_from` is not given.

    Returns:
        The versions, oldest first. `cfg` is added in force from `cfg.effective_from` (else
        `today`), replacing any stored version dated on or after it; the past keeps its versions.
    """
    stored = sorted(
        ((when, _canonical(definition)) for when, definition in previous), key=lambda v: v[0] or date.min
    )
    current = _canonical(cfg.definition)
    if not stored:
        return [PolicyVersion(cfg, None)]
    if stored[-1][1] == current:
        kept, added = stored, None
    else:
        start = cfg.effective_from or today
        kept = [(when, definition) for when, definition in stored if when is None or when < start]
        added = start
    versions = [PolicyVersion(load_sla_config(definition), when) for when, definition in kept]
    if added is not None:
        versions.append(PolicyVersion(cfg, added))
    return versions


def read_history(pipeline: Any) -> list[tuple[date | None, Definition]]:
    """Every policy version stored in the pipeline's `sla_policies` table; none before the first load
    or in a table written before policy history (no `definition` column)."""
    from dlt.destinations.exceptions import DatabaseTerminalException, DatabaseUndefinedRelation

    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("sla_policies")
            rows = client.execute_sql(f"select distinct effective_from, definition from {table}")
    except (DatabaseUndefinedRelation, DatabaseTerminalException):
        return []
    history = []
    for when, definition in rows or []:
        if definition is None:
            continue
        history.append(
            (_parse_date(when, "sla_policies.effective_from") if when else None, json.loads(definition))
        )
    return history


def _versions(cfg: SlaConfig | Sequence[PolicyVersion]) -> list[PolicyVersion]:
    return [PolicyVersion(cfg, None)] if isinstance(cfg, SlaConfig) else list(cfg)


@dataclass
class _VersionRow:
    key: str
    name: str
    stream_id: int | None
    policy: SlaPolicy
    version: PolicyVersion
    effective_from_at: datetime
    effective_to_at: datetime | None = None


def _version_rows(cfg: SlaConfig | Sequence[PolicyVersion], stream_ids: list[int]) -> list[_VersionRow]:
    """One row per policy and version; each version of a policy ends where its next one starts."""
    rows: list[_VersionRow] = []
    for index, version in enumerate(_versions(cfg)):
        for name, stream_id, policy in _policy_rows(version.config, stream_ids):
            if index == 0 or version.effective_from is None:
                key, start = name, HISTORY_START
            else:
                key = f"{name}@{version.effective_from.isoformat()}"
                start = _local(version.effective_from, time(0), ZoneInfo(policy.timezone))
            rows.append(_VersionRow(key, name, stream_id, policy, version, start))
    by_name: dict[str, list[_VersionRow]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    for same in by_name.values():
        same.sort(key=lambda row: row.effective_from_at)
        for earlier, later in pairwise(same):
            earlier.effective_to_at = later.effective_from_at
    return rows


_POLICY_COLUMNS = {
    "policy_key": {"data_type": "text", "nullable": False, "primary_key": True},
    "policy_name": {"data_type": "text", "nullable": False},
    "stream_id": {"data_type": "bigint", "nullable": True},
    "is_default": {"data_type": "bool", "nullable": False},
    "effective_from": {"data_type": "date", "nullable": True},
    "effective_from_at": {"data_type": "timestamp", "nullable": False},
    "effective_to_at": {"data_type": "timestamp", "nullable": True},
    "definition": {"data_type": "text", "nullable": False},
    "timezone": {"data_type": "text", "nullable": False},
    "business_hours_only": {"data_type": "bool", "nullable": False},
    "first_response_seconds": {"data_type": "bigint", "nullable": False},
    "next_response_seconds": {"data_type": "bigint", "nullable": False},
    "resolution_seconds": {"data_type": "bigint", "nullable": False},
    "warning_fraction": {"data_type": "double", "nullable": False},
    "critical_fraction": {"data_type": "double", "nullable": False},
    "bot_counts_as_response": {"data_type": "bool", "nullable": False},
    "business_hours": {"data_type": "text", "nullable": True},
    "holidays": {"data_type": "text", "nullable": True},
    "special_days": {"data_type": "text", "nullable": True},
    "windows_from_at": {"data_type": "timestamp", "nullable": False},
    "windows_to_at": {"data_type": "timestamp", "nullable": False},
}
_WINDOW_COLUMNS = {
    "policy_key": {"data_type": "text", "nullable": False, "primary_key": True},
    "stream_id": {"data_type": "bigint", "nullable": True},
    "window_start_at": {"data_type": "timestamp", "nullable": False, "primary_key": True},
    "window_end_at": {"data_type": "timestamp", "nullable": False},
    "local_date": {"data_type": "date", "nullable": False},
    "window_seconds": {"data_type": "bigint", "nullable": False},
}
_DAY_COLUMNS = {
    "policy_key": {"data_type": "text", "nullable": False, "primary_key": True},
    "stream_id": {"data_type": "bigint", "nullable": True},
    "local_date": {"data_type": "date", "nullable": False, "primary_key": True},
    "day_start_at": {"data_type": "timestamp", "nullable": False},
    "day_end_at": {"data_type": "timestamp", "nullable": False},
    "is_business_day": {"data_type": "bool", "nullable": False},
    "business_seconds": {"data_type": "bigint", "nullable": False},
}
_STATUS_COLUMNS = {
    "status_id": {"data_type": "bigint", "nullable": False, "primary_key": True},
    "status_name": {"data_type": "text", "nullable": False},
    "is_open": {"data_type": "bool", "nullable": False},
    "is_paused": {"data_type": "bool", "nullable": False},
    "is_resolved": {"data_type": "bool", "nullable": False},
}


def policy_records(
    cfg: SlaConfig | Sequence[PolicyVersion], stream_ids: list[int], span_start: datetime, span_end: datetime
) -> list[dict[str, Any]]:
    """The `sla_policies` rows, one per policy and version (also handy for tests)."""
    records = []
    for row in _version_rows(cfg, stream_ids):
        key, stream_id, policy = row.key, row.stream_id, row.policy
        first, last = _span_days(policy, _aware(span_start), _aware(span_end))
        zone = ZoneInfo(policy.timezone)
        records.append(
            {
                "policy_key": key,
                "policy_name": row.name,
                "stream_id": stream_id,
                "is_default": stream_id is None,
                "effective_from": row.version.effective_from,
                "effective_from_at": row.effective_from_at,
                "effective_to_at": row.effective_to_at,
                "definition": json.dumps(_canonical(row.version.config.definition), sort_keys=True),
                "timezone": policy.timezone,
                "business_hours_only": policy.business_hours_only,
                "first_response_seconds": policy.first_response_seconds,
                "next_response_seconds": policy.next_response_seconds,
                "resolution_seconds": policy.resolution_seconds,
                "warning_fraction": policy.warning_fraction,
                "critical_fraction": policy.critical_fraction,
                "bot_counts_as_response": policy.bot_counts_as_response,
                "business_hours": json.dumps(policy.raw.get("business_hours"), sort_keys=True),
                "holidays": json.dumps(sorted(d.isoformat() for d in policy.holidays)),
                "special_days": json.dumps(
                    {
                        d.isoformat(): [f"{s:%H:%M}-{e:%H:%M}" if e else f"{s:%H:%M}-24:00" for s, e in h]
                        for d, h in policy.special_days.items()
                    },
                    sort_keys=True,
                ),
                "windows_from_at": _local(first, time(0), zone),
                "windows_to_at": _local(last + timedelta(days=1), time(0), zone),
            }
        )
    return records


def window_records(
    cfg: SlaConfig | Sequence[PolicyVersion], stream_ids: list[int], span_start: datetime, span_end: datetime
) -> Iterator[dict[str, Any]]:
    """The `business_windows` rows of every policy version, each over the whole span."""
    for row in _version_rows(cfg, stream_ids):
        key, stream_id, policy = row.key, row.stream_id, row.policy
        first, last = _span_days(policy, _aware(span_start), _aware(span_end))
        for start_at, end_at, local_date in business_windows(policy, first, last):
            yield {
                "policy_key": key,
                "stream_id": stream_id,
                "window_start_at": start_at,
                "window_end_at": end_at,
                "local_date": local_date,
                "window_seconds": int((end_at - start_at).total_seconds()),
            }


def day_records(
    cfg: SlaConfig | Sequence[PolicyVersion], stream_ids: list[int], span_start: datetime, span_end: datetime
) -> Iterator[dict[str, Any]]:
    """The `calendar_days` rows: every local date of every policy version with its UTC bounds."""
    for row in _version_rows(cfg, stream_ids):
        key, stream_id, policy = row.key, row.stream_id, row.policy
        first, last = _span_days(policy, _aware(span_start), _aware(span_end))
        zone = ZoneInfo(policy.timezone)
        seconds_by_day: dict[date, int] = {}
        for start_at, end_at, local_date in business_windows(policy, first, last):
            seconds_by_day[local_date] = seconds_by_day.get(local_date, 0) + int(
                (end_at - start_at).total_seconds()
            )
        day = first
        while day <= last:
            yield {
                "policy_key": key,
                "stream_id": stream_id,
                "local_date": day,
                "day_start_at": _local(day, time(0), zone),
                "day_end_at": _local(day + timedelta(days=1), time(0), zone),
                "is_business_day": day in seconds_by_day,
                "business_seconds": seconds_by_day.get(day, 0),
            }
            day += timedelta(days=1)


def status_records(cfg: SlaConfig) -> list[dict[str, Any]]:
    """The `sla_statuses` rows: one per ObjectStatusType."""
    return [
        {
            "status_id": status_id,
            "status_name": name,
            "is_open": status_id in cfg.open_statuses,
            "is_paused": status_id in cfg.paused_statuses,
            "is_resolved": status_id in cfg.resolved_statuses,
        }
        for status_id, name in sorted(STATUS_NAMES.items())
    ]


def sla_resources(
    cfg: SlaConfig,
    stream_ids: list[int],
    span_start: datetime,
    span_end: datetime,
    history: Sequence[tuple[date | None, Mapping[str, Any]]] | None = None,
) -> list[DltResource]:
    """dlt resources for the SLA input tables, all with write disposition `replace`.

    Args:
        cfg: the validated configuration (`load_sla_config()`).
        stream_ids: every stream id in the data; each gets its own policy and windows (its overrides,
            or the default's values). A `default` policy (stream_id NULL) is always added and used by
            the views for streams missing here.
        span_start: the earliest timestamp of the loaded data (naive = UTC).
        span_end: the latest; windows and days run to 60 days after it so running clocks still have
            business hours to count.
        history: the stored policy versions; None reads them from the `sla_policies` table of the
            pipeline that runs these resources (`read_history()`), when it extracts them.

    Returns:
        `sla_policies`, `business_windows`, `calendar_days` and `sla_statuses`: every policy version
        (`policy_history()`), the past ones rewritten as they were.
    """
    ids = [int(s) for s in stream_ids if s is not None]
    resolved: list[list[PolicyVersion]] = []

    def versions() -> list[PolicyVersion]:
        # Read when dlt extracts, not when the resources are made: only then is the pipeline that
        # loads them known (dlt.current.pipeline()), and it is read once for all three tables.
        if not resolved:
            previous = history if history is not None else read_history(dlt.current.pipeline())
            resolved.append(policy_history(previous, cfg, datetime.now(UTC).date()))
        return resolved[0]

    def policies() -> Iterator[dict[str, Any]]:
        yield from policy_records(versions(), ids, span_start, span_end)

    def windows() -> Iterator[dict[str, Any]]:
        yield from window_records(versions(), ids, span_start, span_end)

    def days() -> Iterator[dict[str, Any]]:
        yield from day_records(versions(), ids, span_start, span_end)

    return [
        dlt.resource(policies(), name="sla_policies", write_disposition="replace", columns=_POLICY_COLUMNS),
        dlt.resource(
            windows(), name="business_windows", write_disposition="replace", columns=_WINDOW_COLUMNS
        ),
        dlt.resource(days(), name="calendar_days", write_disposition="replace", columns=_DAY_COLUMNS),
        dlt.resource(
            status_records(cfg),
            name="sla_statuses",
            write_disposition="replace",
            columns=_STATUS_COLUMNS,
        ),
    ]
