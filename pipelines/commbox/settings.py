"""Constants and the endpoint table of the CommBox source: data, no logic (the API's enums are in enums.py)."""

from __future__ import annotations

from .enums import ActivityType

DEFAULT_BASE_URL = "https://api.commbox.io"
DEFAULT_RAW_DATASET = "commbox_raw"
DEFAULT_PIPELINE_NAME = "commbox"
DEFAULT_DUCKDB_FILE = "commbox.duckdb"
# DuckDB's memory ceiling on the connections that load and clean up (bench/README.md, "Findings: memory").
DUCKDB_MEMORY_LIMIT = "64MB"
# The reporting models are built with settings of their own: their joins and windows over every
# conversation ran out of memory at 100,000 conversations under the load's 64 MB (and at 128 MB with
# DuckDB's default threads), where one thread under this limit builds them.
DUCKDB_VIEWS_MEMORY_LIMIT = "128MB"
DUCKDB_VIEWS_THREADS = 1

# Endpoints, as in the vendor's OpenAPI description (read side only).
SYSTEM_STATUS = "/core/systemstatus"
STREAM_OBJECTS = "/streams/{stream_id}/objects"
STREAM_OBJECT = "/streams/{stream_id}/objects/{object_id}"
OBJECT_TRANSCRIPT = "/streams/{stream_id}/objects/{object_id}/transcript"
OBJECT_ACTIVITIES = "/objects/{object_id}/activities"
MANAGERS = "/managers"
STATS_STREAMS = "/stats/streams"
STATS_SLA_EXCEPTIONS = "/stats/streamsSLAExceptions"
STREAM_AVAILABILITY = "/streams/{stream_id}/streamavailability/{ignore_automation}"

# "Max: 100 objects - for larger data additional calls are required" (Get Stream Objects).
MAX_PAGE_SIZE = 100
# A window whose count equals the largest count seen so far (and at least this many) is
# treated as possibly capped and verified by splitting: some accounts cap below pageSize.
MIN_SUSPECT_COUNT = 10
# Paging through a single over-full second gives up after this many pages.
MAX_PAGES_PER_SECOND = 1000

# Window defaults (seconds unless the name says otherwise).
DEFAULT_WINDOW_HOURS = 24.0
DEFAULT_MAX_WINDOW_DAYS = 31.0
DEFAULT_LOOKBACK_SECONDS = 3600
DEFAULT_SAFETY_MARGIN_SECONDS = 120
DEFAULT_CREATED_MODE_REREAD_DAYS = 7.0
DEFAULT_START_DAYS_AGO = 30
# A long load commits a checkpoint (a completed load with its state) every so many conversations, so
# a failure loses at most the slice in flight and data shows up while the load runs.
DEFAULT_CHECKPOINT_CONVERSATIONS = 5000
# Windows are handed to dlt together until they hold this many conversations: every item costs dlt
# a schema computation per table (about a millisecond for an arrow table), and a window can hold one
# conversation. The first batch of a slice holds FIRST_BATCH_CONVERSATIONS, each next one twice the
# one before: the fan-out waits for the first, and a run's first windows are slow to list (at 500
# the fan-out of scenario 1 started 1.5 s late). Not more than 100: with batches of 500 the pace
# found against an unknown 200 req/s limit settled at 179 req/s instead of 192 (bench scenario 2),
# and scenario 1 was no faster.
FIRST_BATCH_CONVERSATIONS = 25
BATCH_CONVERSATIONS = 100
# Managers, stream statistics and availability change on their own schedule: read again hourly (and
# on the first run), not on every run of a schedule that may run every few minutes.
DEFAULT_SNAPSHOT_MAX_AGE_SECONDS = 3600

# HTTP defaults.
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_MAX_REQUESTS_PER_SECOND = 0.0  # 0: no client-side ceiling, the server's 429s still pace us
DEFAULT_MAX_RETRY_WAIT_SECONDS = 120.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60.0
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

# Window modes: which object datetime the unix window applies to.
MODE_AUTO = "auto"
MODE_UPDATED = "updated"
MODE_CREATED = "created"
TIME_FILTER_MODES = (MODE_AUTO, MODE_UPDATED, MODE_CREATED)
TIME_FILTER_PARAM = {MODE_UPDATED: "updatedtime", MODE_CREATED: "createdtime"}
# The docs name neither the values of `timeFilter` nor their case. These are tried in turn when the
# API answers 400; None sends no timeFilter at all (the window then applies to creation time).
TIME_FILTER_SPELLINGS: dict[str, tuple[str | None, ...]] = {
    MODE_UPDATED: ("updatedtime", "updatedTime", "UpdatedTime", "updated", "Updated", "updated_time", None),
    MODE_CREATED: ("createdtime", "createdTime", "CreatedTime", "created", "Created", "created_time", None),
}
MIN_NEGOTIATED_PAGE_SIZE = 10


# The SLA views need status and assignment history; Remark is cheap context for agents.
DEFAULT_ACTIVITY_TYPES = (ActivityType.STATUS_CHANGE, ActivityType.ASSIGN_CHANGE)

PERMISSION_BOT = 5

# Drifting field names seen in the vendor's own examples, first match wins.
OBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "object_id": ("objectId", "id", "object_id", "ObjectId"),
    "stream_id": ("streamId", "streamid", "stream_id", "StreamId"),
    "sub_stream_id": ("substreamId", "subStreamId", "substreamid", "sub_stream_id", "SubStreamId"),
    "object_type": ("type", "Type"),
    "status_id": ("statusId", "statusID", "StatusId", "status_id"),
    "created_at": ("createdTime", "CreatedTime", "createDate"),
    "updated_at": ("updatedTime", "UpdatedTime"),
    "closed_at": ("closedTime", "closeTime", "ClosedTime"),
    "first_response_at": ("firstResponseTime",),
    "last_response_at": ("lastResponseTime",),
    "priority_at": ("priorityTime",),
    "assigned_manager_id": ("assignedManagerId",),
    "last_assigned_manager_id": ("lastAssignedManagerId",),
    "user_identity_id": ("user_identity", "userIdentity", "userIdentityId"),
    "stream_provider_id": ("streamProviderId",),
    "stream_provider_type": ("streamProviderType",),
    "user_stream_provider_id": ("userStreamProviderId",),
    "user_stream_provider_type": ("userStreamProviderType",),
    "first_name": ("firstName",),
    "last_name": ("lastName",),
    "num_childs": ("numChilds",),
    "num_tags": ("numTags",),
    "is_manager": ("isManager",),
    "message": ("message",),
    "content": ("content",),
}
CHILD_FIELDS: dict[str, tuple[str, ...]] = {
    "child_id": ("id", "childId", "child_id"),
    "object_id": ("objectId", "object_id"),
    "created_at": ("createdTime",),
    "message": ("message",),
    "content": ("content",),
    "stream_provider_id": ("streamProviderId",),
    "stream_provider_type": ("streamProviderType",),
    "stream_provider_email": ("streamProviderEmail",),
    "first_name": ("firstName",),
    "last_name": ("lastName",),
}
USER_FIELDS: dict[str, tuple[str, ...]] = {
    "user_id": ("id", "userId"),
    "unique_id": ("uniqueId",),
    "phone1": ("phone1",),
    "phone2": ("phone2",),
    "email": ("email",),
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "gender": ("gender",),
    "locale": ("locale", "Locale"),
    "birthday": ("birthday",),
    "remarks": ("remarks",),
    "content": ("content",),
    "number_identities": ("numberIdentities", "numIdentities"),
    "is_manager": ("isManager",),
    "permission_id": ("permissionId",),
}
IDENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "identity_id": ("id", "identityId"),
    "user_id": ("userId",),
    "stream_provider_id": ("streamProviderId",),
    "stream_provider_type": ("streamProviderType",),
    "stream_provider_email": ("streamProviderEmail",),
    "first_name": ("firstName",),
    "last_name": ("lastName",),
    "user_name": ("userName",),
    "thumbnail_url": ("thumbnailUrl",),
}
MANAGER_FIELDS: dict[str, tuple[str, ...]] = {
    "manager_id": ("id", "managerId"),
    "identity_id": ("identityId",),
    "stream_provider_id": ("streamProviderId",),
    "first_name": ("firstName",),
    "last_name": ("lastName",),
    "email": ("email",),
    "user_name": ("userName",),
    "permission_id": ("permissionId",),
    "team_ids": ("team",),
    "team_id": ("teamId",),
    "team_name": ("teamName",),
    "profiles": ("profiles",),
    "brand_id": ("brandId",),
    "thumbnail_url": ("thumbnailUrl",),
}
TRANSCRIPT_FIELDS: dict[str, tuple[str, ...]] = {
    "object_id": ("objectId", "object_id", "id"),
    "stream_id": ("streamid", "streamId"),
    "sub_stream_id": ("substreamid", "subStreamId", "substreamId"),
    "transcript": ("trasncript", "transcript"),
}

# Columns holding ids, counts or enum codes: strings become integers.
INT_COLUMNS = frozenset(
    {
        "object_id",
        "stream_id",
        "sub_stream_id",
        "object_type",
        "status_id",
        "assigned_manager_id",
        "last_assigned_manager_id",
        "user_identity_id",
        "stream_provider_type",
        "user_stream_provider_type",
        "num_childs",
        "num_tags",
        "child_id",
        "user_id",
        "manager_id",
        "identity_id",
        "number_identities",
        "permission_id",
        "team_id",
        "brand_id",
        "activity_type",
    }
)
# Ids where 0 means "none" (unassigned): loaded as NULL.
ZERO_IS_NULL = frozenset({"assigned_manager_id", "last_assigned_manager_id", "manager_id"})
TIMESTAMP_COLUMNS = frozenset(
    {"created_at", "updated_at", "closed_at", "first_response_at", "last_response_at", "priority_at"}
)
# Phone numbers arrive as numbers or strings; they are identifiers, kept as text.
TEXT_COLUMNS = frozenset({"phone1", "phone2", "unique_id", "stream_provider_id", "user_stream_provider_id"})

# Keys of an activity's `data` JSON that carry the before/after of a change.
STATUS_FROM_KEYS = ("oldStatus", "oldStatusId", "fromStatus", "previousStatus", "from")
STATUS_TO_KEYS = ("newStatus", "newStatusId", "toStatus", "status", "statusId", "to")
MANAGER_FROM_KEYS = ("oldManagerId", "fromManagerId", "previousManagerId", "oldManager", "from")
MANAGER_TO_KEYS = ("newManagerId", "toManagerId", "managerId", "newManager", "assignedManagerId", "to")
