"""Turn CommBox payloads, quirks included, into flat rows with one name and one type per column.

The vendor's own examples drift between endpoints (`streamId`/`streamid`, `closedTime`/`closeTime`),
send numbers as strings and strings as numbers, spell empty values four ways, send one child as an
object instead of a list, and wrap `content` JSON in ways that do not always parse. Everything here is
pure: payload in, rows out, and a `Warnings` counter for what had to be repaired or could not be.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

from .settings import (
    ACTIVITY_TYPE_NAMES,
    CHILD_FIELDS,
    IDENTITY_FIELDS,
    INT_COLUMNS,
    MANAGER_FIELDS,
    MANAGER_FROM_KEYS,
    MANAGER_TO_KEYS,
    OBJECT_FIELDS,
    PERMISSION_BOT,
    STATUS_FROM_KEYS,
    STATUS_TO_KEYS,
    TEXT_COLUMNS,
    TIMESTAMP_COLUMNS,
    TRANSCRIPT_FIELDS,
    USER_FIELDS,
    ZERO_IS_NULL,
)

Row = dict[str, Any]
NULL_STRINGS = frozenset({"null", "null,", ""})
_TS = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
)
_US_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$")
_ISO_DATE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})")
_INT = re.compile(r"^\s*(-?\d+)\s*,?\s*$")
_WRAPPED_JSON = re.compile(r'^\s*\{\s*"(.*)"\s*\}\s*,?\s*$', re.DOTALL)


class BadRecord(ValueError):
    """A payload item that cannot be keyed; it is kept raw in `bad_records` instead of a table."""


class Warnings(Counter[str]):
    """Counts repairs and rejections by kind, for the run summary and the log."""


def clean(value: Any) -> Any:
    """None for the API's spellings of empty ("null", "null,", ""), the value otherwise."""
    if isinstance(value, str) and value.strip().lower() in NULL_STRINGS:
        return None
    return value


def to_int(value: Any) -> int | None:
    """An integer from an int, an integral float or a numeric string such as "1769668,".

    Raises ValueError beyond the signed 64-bit range too: every destination stores these as
    BIGINT, and one out-of-range id would otherwise fail the whole load package, run after run.
    """
    number = _to_int(value)
    if number is not None and not -(2**63) <= number < 2**63:
        raise ValueError(f"integer out of the 64-bit range: {value!r}")
    return number


def _to_int(value: Any) -> int | None:
    value = clean(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _INT.match(value)
        if match:
            return int(match.group(1))
    raise ValueError(f"not an integer: {value!r}")


def to_text(value: Any) -> str | None:
    """Identifiers such as phone numbers arrive as numbers too; they are kept as text."""
    value = clean(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def to_bool(value: Any) -> bool | None:
    value = clean(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}
    raise ValueError(f"not a boolean: {value!r}")


def parse_timestamp(value: Any) -> datetime | None:
    """A UTC datetime from the API's forms: seven fractional digits and Z, or no zone at all (UTC)."""
    value = clean(value)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    match = _TS.match(value)
    if not match:
        raise ValueError(f"not a timestamp: {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    return parsed.astimezone(UTC) if tz is not UTC else parsed


def parse_date(value: Any) -> date | None:
    """Birthdays come as 01/01/1980 (month first, as the API's other US-style dates) or ISO."""
    value = clean(value)
    if value is None:
        return None
    if isinstance(value, str):
        iso = _ISO_DATE.match(value)
        if iso:
            return date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        us = _US_DATE.match(value)
        if us:
            month, day, year = int(us.group(1)), int(us.group(2)), int(us.group(3))
            if month > 12:  # day first after all
                month, day = day, month
            return date(year, month, day)
    raise ValueError(f"not a date: {value!r}")


def parse_json_text(raw: Any) -> Any:
    """The parsed value of a JSON string field, None when it does not parse.

    Some vendor examples wrap the JSON in a second layer (`{ "{\\"subject\\": ...}" }`); that inner
    string is unwrapped and parsed too.
    """
    if isinstance(raw, (dict, list)):
        return raw
    raw = clean(raw)
    if not isinstance(raw, str):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    wrapped = _WRAPPED_JSON.match(raw)
    if wrapped:
        inner = wrapped.group(1)
        try:
            return orjson.loads(orjson.loads(b'"' + inner.encode() + b'"'))
        except orjson.JSONDecodeError:
            return None
    return None


def first(raw: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        if name in raw:
            return raw[name]
    return None


def _map_fields(
    raw: Mapping[str, Any], fields: Mapping[str, tuple[str, ...]], warnings: Warnings, kind: str
) -> Row:
    """Canonical columns from the first alias present; unmapped keys are kept for schema evolution."""
    row: Row = {}
    used: set[str] = set()
    for column, aliases in fields.items():
        for alias in aliases:
            if alias in raw:
                if column not in row or row[column] is None:
                    row[column] = raw[alias]
                used.add(alias)
    for key, value in raw.items():
        if key not in used and key not in row:
            row[key] = clean(value)
    for column in list(row):
        row[column] = _coerce(column, row[column], row, warnings, kind)
    return row


def _coerce(column: str, value: Any, row: Row, warnings: Warnings, kind: str) -> Any:
    try:
        if column in INT_COLUMNS:
            number = to_int(value)
            return None if number == 0 and column in ZERO_IS_NULL else number
        if column in TIMESTAMP_COLUMNS:
            return parse_timestamp(value)
        if column in TEXT_COLUMNS:
            return to_text(value)
        if column == "is_manager":
            return to_bool(value)
    except ValueError:
        # Keep what arrived so nothing is lost, and say so in the run summary.
        warnings[f"{kind}.{column}: unparseable value kept in {column}_raw"] += 1
        row[f"{column}_raw"] = to_text(value)
        return None
    return clean(value) if isinstance(value, str) else value


def _with_content(row: Row) -> Row:
    """Keep `content` as the raw string and, when it parses to an object, also as `content__*` columns."""
    raw = row.get("content")
    if isinstance(raw, (dict, list)):
        row["content"] = orjson.dumps(raw).decode()
        raw = row["content"]
    parsed = parse_json_text(raw)
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            # "" as None: an empty string makes dlt infer text where another pipeline writing the same
            # table (a backfill beside the schedule) inferred a timestamp, and that load fails.
            row[f"content__{key}"] = clean(value)
    return row


def as_list(value: Any) -> list[Any]:
    """`childs` is documented as "Array of objects or objects": a lone child becomes a list of one."""
    value = clean(value)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise ValueError(f"not a list: {type(value).__name__}")


def object_bundle(raw: Mapping[str, Any], stream_id: int, warnings: Warnings) -> dict[str, Any]:
    """The rows one conversation gives: its `objects` row, its childs, its customer and identities.

    Raises:
        BadRecord: the conversation has no usable id, so it cannot be merged.
    """
    if not isinstance(raw, Mapping):
        raise BadRecord(f"conversation is a {type(raw).__name__}, not an object")
    body = dict(raw)
    user_raw = body.pop("user", None)
    childs_raw = body.pop("childs", None)
    activity_log = body.pop("activityLog", body.pop("activities", None))
    row = _with_content(_map_fields(body, OBJECT_FIELDS, warnings, "objects"))
    if row.get("object_id") is None:
        raise BadRecord("conversation without an id")
    if row.get("stream_id") is None:
        row["stream_id"] = stream_id
    if activity_log is not None:
        row["activity_log"] = activity_log

    users: list[Row] = []
    identities: list[Row] = []
    if isinstance(user_raw, Mapping):
        user = user_row(user_raw, warnings)
        if user is not None:
            row["user_id"] = user["user_id"]
            if user.get("is_manager") is None and row.get("is_manager") is not None:
                user["is_manager"] = row["is_manager"]
            users.append(user)
            identity = user_raw.get("identity")
            if isinstance(identity, Mapping):
                ident = identity_row(identity, user["user_id"], warnings)
                if ident is not None:
                    identities.append(ident)
    else:
        row.setdefault("user_id", None)

    childs: list[Row] = []
    try:
        child_items = as_list(childs_raw)
    except ValueError:
        warnings["objects.childs: not a list or object, kept raw"] += 1
        row["childs_raw"] = to_text(childs_raw)
        child_items = []
    for position, child in enumerate(child_items):
        child_row, ident = child_bundle(child, row["object_id"], row["stream_id"], position, warnings)
        if child_row is not None:
            childs.append(child_row)
        if ident is not None:
            identities.append(ident)
    return {"object": row, "childs": childs, "users": users, "identities": identities}


def child_bundle(
    raw: Any, object_id: int, stream_id: int, position: int, warnings: Warnings
) -> tuple[Row | None, Row | None]:
    """A `childs` row (a message) and the identity of its sender, if the payload names one."""
    if not isinstance(raw, Mapping):
        warnings["childs: item is not an object, skipped"] += 1
        return None, None
    body = dict(raw)
    user = body.pop("user", None)
    row = _with_content(_map_fields(body, CHILD_FIELDS, warnings, "childs"))
    if row.get("child_id") is None:
        warnings["childs: message without an id, skipped"] += 1
        return None, None
    # The parent's id is the truth; the child's own copy drifts in name and type.
    row["object_id"] = object_id
    row["stream_id"] = stream_id
    row["position"] = position
    identity_out = None
    if isinstance(user, Mapping):
        try:
            row["user_id"] = to_int(user.get("id"))
            row["manager_id"] = to_int(user.get("managerId")) or None
            row["is_manager"] = to_bool(user.get("isManager"))
        except ValueError:
            warnings["childs.user: unparseable sender kept in user_raw"] += 1
            row["user_raw"] = to_text(dict(user))
        identity = user.get("identity")
        if isinstance(identity, Mapping):
            identity_out = identity_row(identity, row.get("user_id"), warnings)
            if identity_out is not None:
                row["identity_id"] = identity_out["identity_id"]
    if row.get("is_manager") is None and row.get("manager_id"):
        row["is_manager"] = True
    return row, identity_out


def user_row(raw: Mapping[str, Any], warnings: Warnings) -> Row | None:
    body = dict(raw)
    body.pop("identity", None)
    identities = body.pop("identities", None)
    row = _with_content(_map_fields(body, USER_FIELDS, warnings, "users"))
    if row.get("user_id") is None:
        warnings["users: customer without an id, skipped"] += 1
        return None
    birthday = row.get("birthday")
    if birthday is not None and not isinstance(birthday, date):
        try:
            row["birthday"] = parse_date(birthday)
        except ValueError:
            warnings["users.birthday: unparseable value kept in birthday_raw"] += 1
            row["birthday_raw"] = to_text(birthday)
            row["birthday"] = None
    if identities is not None:
        row["identities"] = identities
    return row


def identity_row(raw: Mapping[str, Any], user_id: int | None, warnings: Warnings) -> Row | None:
    row = _map_fields(raw, IDENTITY_FIELDS, warnings, "user_identities")
    if row.get("identity_id") is None:
        return None
    if row.get("user_id") is None:
        row["user_id"] = user_id
    return row


def manager_row(raw: Mapping[str, Any], warnings: Warnings) -> Row:
    if not isinstance(raw, Mapping):
        raise BadRecord(f"manager is a {type(raw).__name__}, not an object")
    row = _map_fields(raw, MANAGER_FIELDS, warnings, "managers")
    if row.get("manager_id") is None:
        raise BadRecord("manager without an id")
    row["team_ids"] = to_text(row.get("team_ids"))
    row["profiles"] = to_text(row.get("profiles"))
    row["is_bot"] = row.get("permission_id") == PERMISSION_BOT
    return row


def transcript_row(raw: Mapping[str, Any], object_id: int, stream_id: int, warnings: Warnings) -> Row:
    if not isinstance(raw, Mapping):
        raise BadRecord(f"transcript is a {type(raw).__name__}, not an object")
    body = dict(raw)
    user = body.pop("user", None)
    row = _map_fields(body, TRANSCRIPT_FIELDS, warnings, "transcripts")
    row["object_id"] = object_id
    row["stream_id"] = row.get("stream_id") or stream_id
    if isinstance(user, Mapping):
        try:
            row["user_id"] = to_int(user.get("id"))
        except ValueError:
            warnings["transcripts.user: unparseable id kept in user_raw"] += 1
            row["user_raw"] = to_text(dict(user))
    return row


def activity_rows(
    items: list[Any], object_id: int, stream_id: int, activity_type: int, warnings: Warnings
) -> list[Row]:
    """`activities` rows for one conversation and type, each with a stable synthetic `activity_id`.

    The API gives activities no id. The key hashes what identifies the event (conversation, type,
    time, actor, data) plus its occurrence number, so two identical events stay two rows and a
    re-read produces the same keys.
    """
    rows: list[Row] = []
    occurrences: Counter[str] = Counter()
    for raw in items:
        if not isinstance(raw, Mapping):
            warnings["activities: item is not an object, skipped"] += 1
            continue
        body = dict(raw)
        user = body.pop("user", None)
        data_raw = body.pop("data", None)
        created_raw = body.pop("createdTime", None)
        type_raw = body.pop("type", activity_type)
        body.pop("objectId", None)
        row: Row = {"object_id": object_id, "stream_id": stream_id}
        try:
            row["activity_type"] = to_int(type_raw)
        except ValueError:
            warnings["activities.type: unparseable value kept in activity_type_raw"] += 1
            row["activity_type_raw"] = to_text(type_raw)
            row["activity_type"] = activity_type
        row["activity_type_name"] = ACTIVITY_TYPE_NAMES.get(row["activity_type"] or -1)
        try:
            row["created_at"] = parse_timestamp(created_raw)
        except ValueError:
            warnings["activities.created_at: unparseable value kept in created_at_raw"] += 1
            row["created_at_raw"] = to_text(created_raw)
            row["created_at"] = None
        actor_id = None
        if isinstance(user, Mapping):
            try:
                actor_id = to_int(user.get("id"))
            except ValueError:
                warnings["activities.user: unparseable id kept in user_raw"] += 1
                row["user_raw"] = to_text(dict(user))
            row["user_first_name"] = clean(user.get("first_name", user.get("firstName")))
            row["user_last_name"] = clean(user.get("last_name", user.get("lastName")))
            identity = user.get("identity")
            if isinstance(identity, Mapping):
                try:
                    row["identity_id"] = to_int(first(identity, ("identityId", "id")))
                except ValueError:
                    row["identity_id"] = None
        row["user_id"] = actor_id
        data_text = to_text(data_raw)
        row["data"] = data_text
        row.update(_activity_data_columns(row["activity_type"], parse_json_text(data_raw)))
        for key, value in body.items():
            row.setdefault(key, clean(value))
        identity_key = "|".join(
            str(part) for part in (object_id, row["activity_type"], to_text(created_raw), actor_id, data_text)
        )
        occurrences[identity_key] += 1
        digest = hashlib.sha1(f"{identity_key}|{occurrences[identity_key]}".encode()).hexdigest()
        row["activity_id"] = digest[:24]
        rows.append(row)
    return rows


def _activity_data_columns(activity_type: int | None, data: Any) -> Row:
    """Before/after columns for the changes the SLA views follow, whatever the key spelling."""
    columns: Row = {}
    if not isinstance(data, Mapping):
        return columns
    text = data.get("text")
    if isinstance(text, str):
        columns["text"] = text

    def _int_of(keys: tuple[str, ...]) -> int | None:
        for key in keys:
            if key in data:
                try:
                    return to_int(data[key])
                except ValueError:
                    return None
        return None

    if activity_type == 2:
        columns["status_from_id"] = _int_of(STATUS_FROM_KEYS)
        columns["status_to_id"] = _int_of(STATUS_TO_KEYS)
    elif activity_type == 6:
        columns["manager_from_id"] = _int_of(MANAGER_FROM_KEYS) or None
        columns["manager_to_id"] = _int_of(MANAGER_TO_KEYS) or None
    return columns


def updated_marker(row: Row) -> str:
    """What decides whether a conversation changed since it was last loaded."""
    updated = row.get("updated_at")
    if isinstance(updated, datetime):
        return updated.isoformat()
    return str(row.get("updated_at_raw"))


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
