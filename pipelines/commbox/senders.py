"""Who sent each message: the agent/customer side of every child, on every shape the API documents.

"Get Stream Objects" documents the children of a *list* answer without a sender (`id, objectId,
content, message, createdTime, streamProviderId, streamProviderType, streamProviderEmail, firstName,
lastName`: no `user`, no `isManager`); only "Get Object" with `includeChilds=true` documents
`user.isManager` per child. So for a conversation whose listed messages carry no side, the source
asks Get Object for it once and takes the side from there. Accounts whose list answers do carry the
sender never trigger a lookup, so they pay nothing: the detection is per conversation, hence per
account. A message whose side is still unknown after that stays NULL: the views call it `unknown`
and never count it as a customer message.

The vendor's own `firstResponseTime` is used as a cross-check: a conversation where no message
found to be an agent's sits at its `firstResponseTime` is counted in the run's warnings (and the
reconciliation model compares the views' first reply with it per conversation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .client import OPTIONAL_ENDPOINT_ERRORS, CommBoxClient, NotFound
from .coerce import Warnings, as_list
from .normalise import child_bundle, coalesce_identities
from .settings import STREAM_OBJECT

SENDER_COLUMNS = ("is_manager", "manager_id", "user_id", "identity_id")
# A first agent reply within this many seconds of `firstResponseTime` agrees with it.
FIRST_RESPONSE_TOLERANCE_SECONDS = 1.0


def needs_sender(bundle: Mapping[str, Any]) -> bool:
    """Whether any message of this conversation bundle has no side."""
    return any(child.get("is_manager") is None for child in bundle.get("childs", ()))


def single_object_childs(raw: Any) -> list[Any]:
    """The children of a Get Object answer: under `childs`, or under `user.childs` as the vendor's
    own example nests them."""
    item = as_list(raw)[0] if isinstance(raw, list) and raw else raw
    if not isinstance(item, Mapping):
        return []
    childs = item.get("childs")
    user = item.get("user")
    if childs is None and isinstance(user, Mapping):
        childs = user.get("childs")
    try:
        return as_list(childs)
    except ValueError:
        return []


def fetch_senders(
    client: CommBoxClient,
    ref: Mapping[str, Any],
    warnings: Warnings,
    scrub: Callable[[Any], Any],
) -> dict[Any, dict[str, Any]]:
    """child id → sender columns, from Get Object (`includeChilds=true`) of one conversation."""
    path = STREAM_OBJECT.format(stream_id=ref["stream_id"], object_id=ref["object_id"])
    try:
        data = client.get(path, {"includeChilds": "true"}).data
    except NotFound:
        warnings["childs: Get Object 404 for a listed conversation; sender side left unknown"] += 1
        return {}
    except OPTIONAL_ENDPOINT_ERRORS as error:
        warnings[f"childs: Get Object unavailable ({type(error).__name__}); sender side left unknown"] += 1
        return {}
    senders: dict[Any, dict[str, Any]] = {}
    for position, raw in enumerate(single_object_childs(scrub(data))):
        row, identity = child_bundle(raw, ref["object_id"], ref["stream_id"], position, Warnings())
        if row is None or row.get("is_manager") is None:
            continue
        found = {column: row.get(column) for column in SENDER_COLUMNS}
        found["identity"] = identity
        senders[row["child_id"]] = found
    return senders


def apply_senders(
    bundle: dict[str, Any], senders: Mapping[Any, Mapping[str, Any]], warnings: Warnings
) -> None:
    """Fill the side of the bundle's messages that have none from `senders`; count what stays unknown."""
    unknown = 0
    for child in bundle.get("childs", ()):
        if child.get("is_manager") is not None:
            continue
        found = senders.get(child["child_id"])
        if found is None:
            unknown += 1
            continue
        for column in SENDER_COLUMNS:
            if child.get(column) is None and found.get(column) is not None:
                child[column] = found[column]
        identity = found.get("identity")
        if identity is not None:
            bundle.setdefault("identities", []).append(identity)
    bundle["identities"] = coalesce_identities(bundle.get("identities", []))
    if unknown:
        warnings["childs: sender side unknown after Get Object, left NULL"] += unknown


def disagrees_with_first_response(bundle: Mapping[str, Any]) -> bool:
    """Whether the API's `firstResponseTime` falls on no message this run found to be an agent's.

    Bots reply as managers too and may answer before any agent, so the check is that some agent-side
    message sits at `firstResponseTime`, not that the earliest one does.
    """
    vendor = bundle.get("object", {}).get("first_response_at")
    if not isinstance(vendor, datetime):
        return False
    return not any(
        child.get("is_manager")
        and isinstance(child.get("created_at"), datetime)
        and abs((child["created_at"] - vendor).total_seconds()) <= FIRST_RESPONSE_TOLERANCE_SECONDS
        for child in bundle.get("childs", ())
    )
