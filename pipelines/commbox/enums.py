"""The API's enumerations (ObjectStatusType, ObjectActivityType): defined once, named once."""

from __future__ import annotations

from enum import IntEnum


class ObjectStatus(IntEnum):
    """ObjectStatusType: a conversation's status (12 is not used by the vendor)."""

    OPEN = 1
    RESOLVED = 2
    FORWARD = 3
    IRRELEVANT = 4
    DELETED = 5
    FORWARD_REPLY = 6
    DRAFT = 7
    IN_PROCESS = 8
    SCHEDULED = 9
    FOLLOW_UP = 10
    AUTOMATED = 11
    SENT = 13
    ARCHIVE = 14
    PENDING = 15


class ActivityType(IntEnum):
    """ObjectActivityType: what an activity records (2 a status change, 6 an assignment change)."""

    REMARK = 1
    STATUS_CHANGE = 2
    FORWARD = 3
    FORWARD_REPLY = 4
    STREAM_CHANGE = 5
    ASSIGN_CHANGE = 6
    UPDATE_OBJECT_TAG = 7
    FOLLOW_UP = 8
    UPDATE_OBJECT_INTENT = 9
    ATTACHMENT = 10
    RULE_EXECUTED = 11
    CUSTOM = 12
    UPDATE_OBJECT_PUBLICITY = 13
    DEBUG = 14
    INVALID_EXTENSION_FILE = 15
    INVALID_FILE_SIZE = 16
    DISALLOWED_FILE_UPLOAD = 17
    INACTIVITY_LOGOUT = 18
    PARTICIPANT_CHANGE = 19
    TARGET_STREAM_CHANGE = 20
    CONVERSATION_SUMMARY = 21
    LOG_ERROR = 22
    REDACT_CHILD = 23


# The vendor's names of the activity types, in its own spelling (`inactivityLogout` included).
ACTIVITY_TYPE_NAMES: dict[int, str] = {
    1: "Remark",
    2: "StatusChange",
    3: "Forward",
    4: "ForwardReply",
    5: "StreamChange",
    6: "AssignChange",
    7: "UpdateObjectTag",
    8: "FollowUp",
    9: "UpdateObjectIntent",
    10: "Attachment",
    11: "RuleExecuted",
    12: "Custom",
    13: "UpdateObjectPublicity",
    14: "Debug",
    15: "InvalidExtensionFile",
    16: "InvalidFileSize",
    17: "DisallowedFileUpload",
    18: "inactivityLogout",
    19: "ParticipantChange",
    20: "TargetStreamChange",
    21: "ConversationSummary",
    22: "LogError",
    23: "RedactChild",
}


# Display names of the statuses, as the vendor's enum spells them ("Forward Reply", "In Process").
STATUS_NAMES: dict[int, str] = {int(status): status.name.replace("_", " ").title() for status in ObjectStatus}
