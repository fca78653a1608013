"""Turn CommBox payloads, quirks included, into flat rows with one name and one type per column.

The vendor's own examples drift between endpoints (`streamId`/`streamid`, `closedTime`/`closeTime`),
send numbers as strings and strings as numbers, spell empty values four ways, send one child as an
object instead of a list, and wrap `content` JSON in ways that do not always parse. Everything here is
pure: payload in, rows out, and a `Warnings` counter for what had to be repaired or could not be.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import orjson

from .coerce import (
    Warnings,
    as_list,
    clean,
    first,
    parse_date,
    parse_json_text,
    parse_timestamp,
    to_bool,
    to_int,
    to_text,
)
from .enums import ACTIVITY_TYPE_NAMES, ActivityType
from .settings import (
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


class BadRecord(ValueError):
    """A payload item that cannot be keyed; it is kept raw in `bad_records` instead of a table."""


def bad_record(raw: Any, stream_id: int, reason: str) -> Row:
    """The `bad_records` row of a payload item that could not be keyed: kept raw, not dropped.

    Its id hashes the stream and the payload, so reading the same item again replaces its row.
    """
    payload = orjson.dumps(raw, default=str).decode()
    return {
        "record_id": hashlib.sha1(f"{stream_id}|{payload}".encode()).hexdigest()[:24],
        "stream_id": stream_id,
        "reason": reason,
        "payload": payload,
    }


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

    users: list[Row] = []
    identities: list[Row] = []
    if isinstance(user_raw, Mapping):
        user = user_row(user_raw, warnings)
        if user is not None:
            row["user_id"] = user["user_id"]
            if user.get("is_manager") is None and row.get("is_manager") is not None:
                user["is_manager"] = row["is_manager"]
            if names_more_than_the_id(user):
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
    bundle = {"object": row, "childs": childs, "users": users, "identities": coalesce_identities(identities)}
    if activity_log is not None:
        # The list's activity log (includeActivityLog) is read by activity_paths.py: not an objects column.
        bundle["activity_log"] = activity_log
    return bundle


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


# What a conversation's `user` block gives even when it names the customer by id alone.
ID_ONLY_USER_KEYS = frozenset({"user_id", "is_manager"})


def names_more_than_the_id(user: Row) -> bool:
    """Whether a `users` row says anything about the customer beyond who they are.

    Some list items name their customer by id alone (the key-drifted shape, after the vendor's
    variant B). `users` merges on `user_id` and a merge replaces whole rows, so such a row would
    blank the details an earlier load stored; the conversation's own `user_id` says all it knows.
    """
    return any(value is not None for key, value in user.items() if key not in ID_ONLY_USER_KEYS)


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


def coalesce_identities(rows: list[Row]) -> list[Row]:
    """One row per identity, each field its first non-null value among `rows`.

    A conversation names its customer's identity twice: in its `user` block, without the e-mail
    address, and as the sender of the customer's messages, with it. Loaded as two rows of one key,
    the merge kept either one (on PostgreSQL a different one from load to load), so an identity's
    e-mail address came and went; merged here it is kept whenever the conversation shows it."""
    merged: dict[Any, Row] = {}
    for row in rows:
        key = row["identity_id"]
        if key not in merged:
            merged[key] = dict(row)
            continue
        kept = merged[key]
        for name, value in row.items():
            if kept.get(name) is None and value is not None:
                kept[name] = value
    return list(merged.values())


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

    if activity_type == ActivityType.STATUS_CHANGE:
        columns["status_from_id"] = _int_of(STATUS_FROM_KEYS)
        columns["status_to_id"] = _int_of(STATUS_TO_KEYS)
    elif activity_type == ActivityType.ASSIGN_CHANGE:
        columns["manager_from_id"] = _int_of(MANAGER_FROM_KEYS) or None
        columns["manager_to_id"] = _int_of(MANAGER_TO_KEYS) or None
    return columns


def updated_marker(row: Row) -> str:
    """What decides whether a conversation changed since it was last loaded."""
    updated = row.get("updated_at")
    if isinstance(updated, datetime):
        return updated.isoformat()
    return str(row.get("updated_at_raw"))
