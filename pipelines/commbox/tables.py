"""Declared column types of the raw tables (docs/raw_tables.md).

Declaring them means a column the SQL views rely on exists from the first load, even when every
value so far was empty, and has the same type on every destination. Columns not declared here are
still loaded: dlt infers and evolves them.

`object_updated_at` on childs, activities and transcripts is the version (`updatedTime`) of the
conversation the row was read with; it is part of their primary keys (see `pipelines/ops/versions.py`). It is
nullable so that warehouses loaded before it existed take it as an added column: their rows carry
NULL, which `keep_newest` ranks below every version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# The version column of the rows that belong to one version of a conversation.
VERSION_COLUMN = "object_updated_at"
# Tables whose rows belong to one version of a conversation, besides `objects` itself.
VERSIONED_TABLES = ("childs", "activities", "transcripts")
# The version of a conversation whose updatedTime and createdTime are both unreadable.
VERSION_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)

TS = {"data_type": "timestamp", "timezone": True}
BIGINT = {"data_type": "bigint"}
TEXT = {"data_type": "text"}
BOOL = {"data_type": "bool"}


def _columns(**types: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"name": name, "nullable": True, **hint} for name, hint in types.items()}


TABLE_COLUMNS: dict[str, dict[str, dict[str, Any]]] = {
    "holes": _columns(
        hole_id=TEXT,
        stream_id=BIGINT,
        window_start=BIGINT,
        window_end=BIGINT,
        start_at=TS,
        mode=TEXT,
        is_open=BOOL,
        is_backfill=BOOL,
        first_seen_at=TS,
        last_tried_at=TS,
        filled_at=TS,
        tries=BIGINT,
    ),
    "objects": _columns(
        object_id=BIGINT,
        stream_id=BIGINT,
        sub_stream_id=BIGINT,
        object_type=BIGINT,
        status_id=BIGINT,
        created_at=TS,
        updated_at={**TS, "dedup_sort": "desc"},
        closed_at=TS,
        first_response_at=TS,
        last_response_at=TS,
        priority_at=TS,
        assigned_manager_id=BIGINT,
        last_assigned_manager_id=BIGINT,
        user_id=BIGINT,
        user_identity_id=BIGINT,
        stream_provider_id=TEXT,
        stream_provider_type=BIGINT,
        user_stream_provider_id=TEXT,
        user_stream_provider_type=BIGINT,
        first_name=TEXT,
        last_name=TEXT,
        num_childs=BIGINT,
        num_tags=BIGINT,
        is_manager=BOOL,
        message=TEXT,
        content=TEXT,
    ),
    "childs": _columns(
        child_id=BIGINT,
        object_id=BIGINT,
        stream_id=BIGINT,
        position=BIGINT,
        created_at=TS,
        is_manager=BOOL,
        manager_id=BIGINT,
        user_id=BIGINT,
        identity_id=BIGINT,
        stream_provider_id=TEXT,
        stream_provider_type=BIGINT,
        stream_provider_email=TEXT,
        first_name=TEXT,
        last_name=TEXT,
        message=TEXT,
        content=TEXT,
        object_updated_at=TS,
    ),
    "activities": _columns(
        activity_id=TEXT,
        object_id=BIGINT,
        stream_id=BIGINT,
        activity_type=BIGINT,
        activity_type_name=TEXT,
        created_at=TS,
        user_id=BIGINT,
        user_first_name=TEXT,
        user_last_name=TEXT,
        identity_id=BIGINT,
        data=TEXT,
        status_from_id=BIGINT,
        status_to_id=BIGINT,
        manager_from_id=BIGINT,
        manager_to_id=BIGINT,
        text=TEXT,
        object_updated_at=TS,
    ),
    "transcripts": _columns(
        object_id=BIGINT,
        stream_id=BIGINT,
        sub_stream_id=BIGINT,
        transcript=TEXT,
        user_id=BIGINT,
        object_updated_at=TS,
    ),
    "users": _columns(
        user_id=BIGINT,
        # A block naming the customer by id only gives no row (normalise.names_more_than_the_id); of
        # one customer's rows in a load the merge keeps one with a unique id (NULLs sort last
        # ascending on DuckDB and PostgreSQL), not whichever of the load's files came first.
        unique_id={**TEXT, "dedup_sort": "asc"},
        phone1=TEXT,
        phone2=TEXT,
        email=TEXT,
        first_name=TEXT,
        last_name=TEXT,
        gender=TEXT,
        locale=TEXT,
        birthday={"data_type": "date"},
        remarks=TEXT,
        content=TEXT,
        number_identities=BIGINT,
        is_manager=BOOL,
    ),
    "user_identities": _columns(
        identity_id=BIGINT,
        user_id=BIGINT,
        stream_provider_id=TEXT,
        stream_provider_type=BIGINT,
        # One identity seen in several conversations of a load: the merge keeps the row that knows
        # the e-mail address (NULLs sort last ascending on DuckDB and PostgreSQL), not any one.
        stream_provider_email={**TEXT, "dedup_sort": "asc"},
        first_name=TEXT,
        last_name=TEXT,
    ),
    "managers": _columns(
        manager_id=BIGINT,
        identity_id=BIGINT,
        first_name=TEXT,
        last_name=TEXT,
        email=TEXT,
        user_name=TEXT,
        permission_id=BIGINT,
        is_bot=BOOL,
        team_ids=TEXT,
        team_id=BIGINT,
        team_name=TEXT,
        profiles=TEXT,
    ),
    "streams": _columns(
        stream_id=BIGINT,
        open_count=BIGINT,
        sla_breach_count=BIGINT,
        sla_critical_count=BIGINT,
        availability_state=BIGINT,
        observed_at=TS,
    ),
    "bad_records": _columns(record_id=TEXT, stream_id=BIGINT, reason=TEXT, payload=TEXT),
}
