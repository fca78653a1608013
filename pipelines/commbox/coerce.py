"""Leaf coercions of the API's loose values: ints, text, booleans, timestamps, dates, JSON text, lists.

The transport (`client.py`), the configuration and the window reader read the API's numbers and
clocks with these, so they live below `normalise.py`, which builds rows from them. Pure functions:
value in, value out (or ValueError).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

NULL_STRINGS = frozenset({"null", "null,", ""})
_TS = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
)
_US_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$")
_ISO_DATE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})")
_INT = re.compile(r"^\s*(-?\d+)\s*,?\s*$")
_WRAPPED_JSON = re.compile(r'^\s*\{\s*"(.*)"\s*\}\s*,?\s*$', re.DOTALL)


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
    """The value of the first of `names` present in `raw` (the API drifts between spellings), else None."""
    for name in names:
        if name in raw:
            return raw[name]
    return None


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
