"""The vendor's documented shapes: which keys each example response carries, and null-free JSON.

With ``documented_keys`` on, a rendered value is trimmed to the keys the vendor's example shows
for its endpoint (a key the renderer has but the example lacks, such as Get Object's
``firstResponseTime``, is left out). Keys are named by a dotted path from the item, lists are
transparent (``childs`` is a list, or an object for a lone child). Paths not listed keep every
key. The contract tests hold these tables against ``tests/contract/vendor_keys.json``, which is
extracted from the vendor's OpenAPI description.
"""

from __future__ import annotations

from typing import Any

_USER_BLOCK = (
    "id", "uniqueId", "phone1", "phone2", "email", "firstName", "lastName", "gender",
    "numberIdentities", "birthday", "remarks", "content",
)  # fmt: skip
_IDENTITY = ("id", "streamProviderId", "streamProviderType", "firstName", "lastName", "thumbnailUrl")

# Get Stream Objects, variant A of the example (the conversation/mail object; variant B documents
# a social post, which this account never holds). ``activities`` is kept: includeActivityLog asks
# for it, though the example does not show it.
_LIST_KEYS = (
    "objectId", "streamId", "substreamId", "streamProviderId", "streamProviderType", "user_identity",
    "firstName", "lastName", "userStreamProviderId", "userStreamProviderType", "content", "message",
    "createdTime", "updatedTime", "closedTime", "firstResponseTime", "lastResponseTime", "priorityTime",
    "statusId", "assignedManagerId", "lastAssignedManagerId", "type", "numTags", "user", "isManager",
    "childs", "activities",
)  # fmt: skip
# No sender: Get Stream Objects documents no ``user``, ``isManager`` or ``managerId`` per child.
_LIST_CHILD_KEYS = (
    "id", "objectId", "content", "message", "createdTime", "streamProviderId", "streamProviderType",
    "streamProviderEmail", "firstName", "lastName",
)  # fmt: skip
LIST_ITEM: dict[str, frozenset[str]] = {
    "": frozenset(_LIST_KEYS),
    "user": frozenset((*_USER_BLOCK, "Locale")),
    "childs": frozenset(_LIST_CHILD_KEYS),
}

# Get Object: ``childs`` nested inside ``user`` as the example has them; each child with its sender.
_SINGLE_KEYS = (
    "objectId", "streamid", "substreamid", "streamProviderId", "streamProviderType", "user_identity",
    "firstName", "lastName", "userStreamProviderId", "userStreamProviderType", "content", "message",
    "createdTime", "updatedTime", "closeTime", "statusId", "assignedManagerId", "type", "isManager",
    "user", "activities",
)  # fmt: skip
_SINGLE_CHILD_KEYS = ("id", "object_id", "content", "message", "createdTime", "streamProviderType", "user")
SINGLE_ITEM: dict[str, frozenset[str]] = {
    "": frozenset(_SINGLE_KEYS),
    "user": frozenset((*_USER_BLOCK, "locale", "childs")),
    "user.childs": frozenset(_SINGLE_CHILD_KEYS),
    "user.childs.user": frozenset(("id", "managerId", "isManager", "identity")),
    "user.childs.user.identity": frozenset(_IDENTITY),
}


def trim(value: Any, table: dict[str, frozenset[str]], path: str = "") -> Any:
    """``value`` with every dict at a listed path cut down to the documented keys (a new value)."""
    if isinstance(value, list):
        return [trim(v, table, path) for v in value]
    if not isinstance(value, dict):
        return value
    allowed = table.get(path)
    out = {}
    for key, sub in value.items():
        if allowed is not None and key not in allowed:
            continue
        out[key] = trim(sub, table, f"{path}.{key}" if path else key)
    return out


def drop_nulls(value: Any) -> Any:
    """``value`` without any dict entry whose value is JSON null, at any depth (a new value)."""
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    return value
