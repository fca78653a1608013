"""Known-answer tests for the SLA views, on DuckDB and on a real PostgreSQL server.

Every case is a tiny conversation loaded through a real dlt pipeline (`objects`, `childs`,
`activities`, `managers` with the contract's columns, plus the SLA tables from `sla_resources`), then
the views are built and queried. The expected numbers are worked out by hand in each case's comment.

Streams (all business hours Mon-Fri 09:00-18:00 local, holiday 2024-12-25, first and next response
60 minutes, resolution 1440 minutes, warning at 50%, critical at 80%):
  1  S1: UTC, business hours only, bots do not count as a response
  2  America/New_York (daylight saving starts 2024-03-10, ends 2024-11-03)
  3  UTC, bot_counts_as_response = true
  4  UTC, business_hours_only = false (targets count calendar time)

Messages are written (side, time[, manager_id[, message_id]]) with side "c" customer, "a" agent, "b"
bot and "u" unknown: `is_manager` NULL, as on an account whose list answers carry no sender.
`objects.first_response_at` / `last_response_at` (the vendor's firstResponseTime / lastResponseTime)
default to the first / last human agent message, as CommBox and the simulator define them; a case may
give other values to make the reconciliation disagree.

2024-03-01 is a Friday. PostgreSQL runs with the server's default time zone America/Los_Angeles, and
the assertions read through a connection that keeps it, so the views must not depend on it.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest

from pipelines.reporting.sla import load_sla_config, sla_resources
from pipelines.reporting.views import build_views

SLA_CONFIG = {
    "default": {
        "timezone": "UTC",
        "business_hours": {day: "09:00-18:00" for day in ("mon", "tue", "wed", "thu", "fri")},
        "holidays": ["2024-12-25"],
        "business_hours_only": True,
        "first_response_minutes": 60,
        "next_response_minutes": 60,
        "resolution_minutes": 1440,
    },
    "streams": {
        "2": {"timezone": "America/New_York"},
        "3": {"bot_counts_as_response": True},
        "4": {"business_hours_only": False},
    },
}
AGENT_A, AGENT_B, BOT = 501, 502, 900
OPEN, RESOLVED, PENDING = 1, 2, 15


def at(text: str) -> datetime:
    """'2024-03-04 09:00' (UTC unless an offset is given) -> aware datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- row building: the only place raw rows are made -------------------------------------------------

_ids = itertools.count(10_000)


@dataclass
class Conversation:
    object_id: int
    stream_id: int = 1
    created: str | None = None  # defaults to the first message
    status_id: int = OPEN
    assigned_manager_id: int | None = AGENT_A
    messages: list[tuple] = field(default_factory=list)  # (side, time[, manager_id[, message_id]])
    status_changes: list[tuple] = field(default_factory=list)  # (time, from, to)
    assign_changes: list[tuple] = field(default_factory=list)  # (time, from, to)
    # the vendor's (firstResponseTime, lastResponseTime); "derived" = first/last agent message
    vendor_responses: tuple[str | None, str | None] | str = "derived"

    def created_at(self) -> datetime:
        return at(self.created) if self.created else at(self.messages[0][1])

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        childs = []
        for message in self.messages:
            side, when = message[0], message[1]
            manager_id = message[2] if len(message) > 2 else (None if side in "cu" else AGENT_A)
            child_id = message[3] if len(message) > 3 else next(_ids)
            childs.append(
                {
                    "child_id": child_id,
                    "object_id": self.object_id,
                    "stream_id": self.stream_id,
                    "created_at": at(when),
                    "is_manager": None if side == "u" else side != "c",
                    "manager_id": manager_id,
                    "user_id": 7000 + self.object_id if side == "c" else None,
                }
            )
        activities = [
            {
                "activity_id": f"{self.object_id}-s-{i}",
                "object_id": self.object_id,
                "stream_id": self.stream_id,
                "activity_type": 2,
                "activity_type_name": "StatusChange",
                "created_at": at(when),
                "status_from_id": old,
                "status_to_id": new,
                "manager_from_id": None,
                "manager_to_id": None,
            }
            for i, (when, old, new) in enumerate(self.status_changes)
        ] + [
            {
                "activity_id": f"{self.object_id}-a-{i}",
                "object_id": self.object_id,
                "stream_id": self.stream_id,
                "activity_type": 6,
                "activity_type_name": "AssignChange",
                "created_at": at(when),
                "status_from_id": None,
                "status_to_id": None,
                "manager_from_id": old,
                "manager_to_id": new,
            }
            for i, (when, old, new) in enumerate(self.assign_changes)
        ]
        times = [c["created_at"] for c in childs] + [a["created_at"] for a in activities]
        if self.vendor_responses == "derived":
            agent_times = [at(m[1]) for m in self.messages if m[0] == "a"]
            first, last = (min(agent_times), max(agent_times)) if agent_times else (None, None)
        else:
            first, last = (at(t) if t else None for t in self.vendor_responses)
        obj = {
            "object_id": self.object_id,
            "stream_id": self.stream_id,
            "sub_stream_id": None,
            "object_type": 4,
            "status_id": self.status_id,
            "created_at": self.created_at(),
            "updated_at": max([self.created_at(), *times]),
            "closed_at": None,
            "first_response_at": first,
            "last_response_at": last,
            "assigned_manager_id": self.assigned_manager_id,
            "user_id": 7000 + self.object_id,
        }
        return {"objects": [obj], "childs": childs, "activities": activities}


MANAGERS = [
    {
        "manager_id": AGENT_A,
        "first_name": "Ada",
        "last_name": "A",
        "email": "a@x",
        "permission_id": 2,
        "is_bot": False,
        "team_id": 1,
        "team_name": "T",
    },
    {
        "manager_id": AGENT_B,
        "first_name": "Bo",
        "last_name": "B",
        "email": "b@x",
        "permission_id": 2,
        "is_bot": False,
        "team_id": 1,
        "team_name": "T",
    },
    {
        "manager_id": BOT,
        "first_name": "Bot",
        "last_name": "",
        "email": None,
        "permission_id": 5,
        "is_bot": True,
        "team_id": None,
        "team_name": None,
    },
]

RAW_COLUMNS: dict[str, dict[str, dict[str, Any]]] = {
    "objects": {
        "object_id": {"data_type": "bigint", "primary_key": True},
        "stream_id": {"data_type": "bigint"},
        "sub_stream_id": {"data_type": "bigint"},
        "object_type": {"data_type": "bigint"},
        "status_id": {"data_type": "bigint"},
        "created_at": {"data_type": "timestamp"},
        "updated_at": {"data_type": "timestamp"},
        "closed_at": {"data_type": "timestamp"},
        "first_response_at": {"data_type": "timestamp"},
        "last_response_at": {"data_type": "timestamp"},
        "assigned_manager_id": {"data_type": "bigint"},
        "user_id": {"data_type": "bigint"},
    },
    "childs": {
        "child_id": {"data_type": "bigint", "primary_key": True},
        "object_id": {"data_type": "bigint"},
        "stream_id": {"data_type": "bigint"},
        "created_at": {"data_type": "timestamp"},
        "is_manager": {"data_type": "bool"},
        "manager_id": {"data_type": "bigint"},
        "user_id": {"data_type": "bigint"},
    },
    "activities": {
        "activity_id": {"data_type": "text", "primary_key": True},
        "object_id": {"data_type": "bigint"},
        "stream_id": {"data_type": "bigint"},
        "activity_type": {"data_type": "bigint"},
        "activity_type_name": {"data_type": "text"},
        "created_at": {"data_type": "timestamp"},
        "user_id": {"data_type": "bigint"},
        "status_from_id": {"data_type": "bigint"},
        "status_to_id": {"data_type": "bigint"},
        "manager_from_id": {"data_type": "bigint"},
        "manager_to_id": {"data_type": "bigint"},
    },
    "managers": {
        "manager_id": {"data_type": "bigint", "primary_key": True},
        "first_name": {"data_type": "text"},
        "last_name": {"data_type": "text"},
        "email": {"data_type": "text"},
        "permission_id": {"data_type": "bigint"},
        "is_bot": {"data_type": "bool"},
        "team_id": {"data_type": "bigint"},
        "team_name": {"data_type": "text"},
    },
}


def load_conversations(
    pipeline: dlt.Pipeline, conversations: list[Conversation], sla: dict | None = None
) -> None:
    """Load raw rows and the SLA tables through the real pipeline."""
    tables: dict[str, list[dict[str, Any]]] = {"objects": [], "childs": [], "activities": []}
    for conversation in conversations:
        for name, rows in conversation.rows().items():
            tables[name].extend(rows)
    tables["managers"] = MANAGERS
    resources = [
        dlt.resource(rows, name=name, write_disposition="replace", columns=RAW_COLUMNS[name])
        for name, rows in tables.items()
    ]
    pipeline.run(resources)
    times = [o["created_at"] for o in tables["objects"]] + [o["updated_at"] for o in tables["objects"]]
    cfg = load_sla_config(sla or SLA_CONFIG)
    streams = sorted({o["stream_id"] for o in tables["objects"]})
    pipeline.run(sla_resources(cfg, streams, min(times), max(times)))


# --- the cases ---------------------------------------------------------------------------------------

CONVERSATIONS = [
    # Fri 17:50 -> Mon 09:20: 10 business minutes on Friday + 20 on Monday = 30; 62h30m... calendar:
    # Fri 17:50 -> Mon 09:20 = 2 days 15h30m = 3810 min. Deadline: 60 - 10 = 50 minutes into Monday.
    Conversation(101, messages=[("c", "2024-03-01 17:50"), ("a", "2024-03-04 09:20")]),
    # before opening: only 09:00-09:05 counts.
    Conversation(102, messages=[("c", "2024-03-04 08:00"), ("a", "2024-03-04 09:05")]),
    # a Saturday: no business time at all.
    Conversation(103, messages=[("c", "2024-03-02 10:00"), ("a", "2024-03-02 12:00")]),
    # Wed 17:30-18:00 (30) + Thu 09:00-10:00 (60) = 90 > 60; target reached 30 min into Thursday.
    Conversation(104, messages=[("c", "2024-03-06 17:30"), ("a", "2024-03-07 10:00")]),
    # exactly the target: met (breached means elapsed > target).
    Conversation(105, messages=[("c", "2024-03-04 09:00"), ("a", "2024-03-04 10:00")]),
    # from closing to opening: 0 business minutes, 15 calendar hours.
    Conversation(106, messages=[("c", "2024-03-04 18:00"), ("a", "2024-03-05 09:00")]),
    # next responses (issue example): clocks 09:00->09:10, 09:30->10:00, 17:55->Tue 09:10
    # (5 + 10 = 15 business, 915 calendar), Tue 09:20 still running.
    Conversation(
        108,
        messages=[
            ("c", "2024-03-04 09:00"),
            ("c", "2024-03-04 09:05"),
            ("a", "2024-03-04 09:10"),
            ("a", "2024-03-04 09:12"),
            ("c", "2024-03-04 09:30"),
            ("a", "2024-03-04 10:00"),
            ("c", "2024-03-04 17:55"),
            ("a", "2024-03-05 09:10"),
            ("c", "2024-03-05 09:20"),
        ],
    ),
    # Resolved 10:00 -> Open 11:00 -> Resolved 12:00: two resolutions, one reopen, two resolution
    # clocks of 60 minutes each.
    Conversation(
        109,
        created="2024-03-04 09:00",
        status_id=RESOLVED,
        messages=[("c", "2024-03-04 09:00"), ("a", "2024-03-04 09:30")],
        status_changes=[
            ("2024-03-04 10:00", OPEN, RESOLVED),
            ("2024-03-04 11:00", RESOLVED, OPEN),
            ("2024-03-04 12:00", OPEN, RESOLVED),
        ],
    ),
    # holiday: Tue 12-24 17:30-18:00 (30), Wed 12-25 closed, Thu 09:00-09:45 (45) = 75 > 60;
    # breach 30 minutes into Thursday; calendar Tue 17:30 -> Thu 09:45 = 40h15m = 2415 min.
    Conversation(110, messages=[("c", "2024-12-24 17:30"), ("a", "2024-12-26 09:45")]),
    # DST spring forward in New York (Sun 2024-03-10): Fri 17:30 EST = 22:30Z, Mon 09:31 EDT = 13:31Z.
    # Business: Fri 30 + Mon 31 = 61 > 60; breach at Mon 09:30 EDT = 13:30Z. Calendar: 22:30Z Fri ->
    # 13:31Z Mon = 63h01m = 3781 min (the local wall clock says 64h01m).
    Conversation(111, stream_id=2, messages=[("c", "2024-03-08 22:30"), ("a", "2024-03-11 13:31")]),
    # DST fall back (Sun 2024-11-03): Fri 17:30 EDT = 21:30Z, Mon 09:30 EST = 14:30Z. Business 30 + 30 =
    # 60, met exactly; calendar 65h = 3900 min (wall clock 64h). Breach at Mon 09:30 EST = 14:30Z.
    Conversation(112, stream_id=2, messages=[("c", "2024-11-01 21:30"), ("a", "2024-11-04 14:30")]),
    # equal timestamps, customer's id lower: the customer wrote first, the agent answered at once.
    Conversation(
        113, messages=[("c", "2024-03-05 11:00", None, 1131), ("a", "2024-03-05 11:00", AGENT_A, 1132)]
    ),
    # equal timestamps, agent's id lower: the agent's message came first (outbound), so the customer's
    # message starts the first clock, stopped by the next agent message 20 minutes later.
    Conversation(
        114,
        messages=[
            ("a", "2024-03-05 11:00", AGENT_A, 1141),
            ("c", "2024-03-05 11:00", None, 1142),
            ("a", "2024-03-05 11:20", AGENT_A, 1143),
        ],
    ),
    # a bot answers first; on stream 1 bots do not count: the clock runs until the agent (40 min).
    Conversation(
        115,
        messages=[("c", "2024-03-05 13:00"), ("b", "2024-03-05 13:00:30", BOT), ("a", "2024-03-05 13:40")],
    ),
    # the same on stream 3, where a bot reply counts: 30 seconds, answered by the bot.
    Conversation(
        116,
        stream_id=3,
        messages=[("c", "2024-03-05 13:00"), ("b", "2024-03-05 13:00:30", BOT), ("a", "2024-03-05 13:40")],
    ),
    # reassignment during the clock: A from 08:55, B from 09:30, B answers 10:30 (90 min, breached at
    # 10:00). Responsible = who held it at the breach = B; at the start it was A.
    Conversation(
        117,
        created="2024-03-06 08:55",
        assigned_manager_id=AGENT_B,
        messages=[("c", "2024-03-06 09:00"), ("a", "2024-03-06 10:30", AGENT_B)],
        assign_changes=[("2024-03-06 08:55", None, AGENT_A), ("2024-03-06 09:30", AGENT_A, AGENT_B)],
    ),
    # reassigned only after the breach (10:15): A held it when it breached at 10:00, so A is responsible.
    Conversation(
        118,
        created="2024-03-06 08:55",
        assigned_manager_id=AGENT_B,
        messages=[("c", "2024-03-06 09:00"), ("a", "2024-03-06 10:30", AGENT_B)],
        assign_changes=[("2024-03-06 08:55", None, AGENT_A), ("2024-03-06 10:15", AGENT_A, AGENT_B)],
    ),
    # target runs out exactly at closing time (Mon 17:00 + 60 = 18:00): breach at the next opening,
    # Tue 09:00; warning (30 min) at 17:30, critical (48 min) at 17:48; answered Tue 09:05 = 65 min.
    Conversation(119, messages=[("c", "2024-03-11 17:00"), ("a", "2024-03-12 09:05")]),
    # pausing: Open 09:00, Pending 10:00-12:00, Resolved 13:00: resolution clock runs 2h of 4h.
    Conversation(
        120,
        created="2024-03-12 09:00",
        status_id=RESOLVED,
        messages=[("c", "2024-03-12 09:00"), ("a", "2024-03-12 09:10")],
        status_changes=[
            ("2024-03-12 10:00", OPEN, PENDING),
            ("2024-03-12 12:00", PENDING, OPEN),
            ("2024-03-12 13:00", OPEN, RESOLVED),
        ],
    ),
    # calendar-time stream 4: Fri 17:50 -> Mon 09:20 counts 3810 min > 60, breach Fri 18:50; business
    # seconds are still reported (30 min).
    Conversation(121, stream_id=4, messages=[("c", "2024-03-01 17:50"), ("a", "2024-03-04 09:20")]),
    # open since Mon 09:00, never answered: evaluated at several as_of instants (see test_running_clock).
    Conversation(107, stream_id=1, messages=[("c", "2024-12-30 09:00")]),
    # --- unknown sides (is_manager NULL), Wed 2024-03-13 on stream 1 ---
    # only unknown messages: no customer message is known, yet the first one may be; a possible first
    # response clock from 10:00, running, undetermined. CommBox says an agent answered at 10:05.
    Conversation(
        130,
        messages=[("u", "2024-03-13 10:00", None, 1301), ("u", "2024-03-13 10:05", None, 1302)],
        vendor_responses=("2024-03-13 10:05", "2024-03-13 10:05"),
    ),
    # an unknown message inside the first clock (10:00 -> 10:30) may be the reply: undetermined. CommBox
    # says it was (first response 10:10), which the unknown message explains: reconciliation "unknown".
    Conversation(
        131,
        messages=[
            ("c", "2024-03-13 10:00"),
            ("u", "2024-03-13 10:10", None, 1311),
            ("a", "2024-03-13 10:30"),
        ],
        vendor_responses=("2024-03-13 10:10", "2024-03-13 10:30"),
    ),
    # first clock 10:00 -> 10:20 met (nothing unknown in it); the unknown 10:40 may be a customer
    # starting the second clock before 11:00: 11:00 -> 11:30 is undetermined.
    Conversation(
        132,
        messages=[
            ("c", "2024-03-13 10:00"),
            ("a", "2024-03-13 10:20"),
            ("u", "2024-03-13 10:40"),
            ("c", "2024-03-13 11:00"),
            ("a", "2024-03-13 11:30"),
        ],
    ),
    # an unknown message opens the conversation: a possible first clock 10:00 -> 10:05 (undetermined);
    # the customer's 10:30 -> 11:45 clock is determined: 75 min, breached at 11:30.
    Conversation(
        133,
        messages=[
            ("u", "2024-03-13 10:00", None, 1331),
            ("a", "2024-03-13 10:05"),
            ("c", "2024-03-13 10:30", None, 1333),
            ("a", "2024-03-13 11:45"),
        ],
    ),
    # answered 10:00 -> 10:10 (met); a trailing unknown message may be the customer again: a possible
    # next response clock from 10:30, running, undetermined.
    Conversation(
        134,
        messages=[
            ("c", "2024-03-13 10:00"),
            ("a", "2024-03-13 10:10"),
            ("u", "2024-03-13 10:30", None, 1343),
        ],
    ),
    # --- reconciliation with CommBox's own figures, Thu 2024-03-14 ---
    # CommBox says 10:50, the views see an agent at 10:10 and nothing unknown: a disagreement of -2400 s.
    Conversation(
        135,
        messages=[("c", "2024-03-14 10:00"), ("a", "2024-03-14 10:10")],
        vendor_responses=("2024-03-14 10:50", "2024-03-14 10:50"),
    ),
    # half a second apart: within the tolerance (less than one second), in agreement.
    Conversation(
        136,
        messages=[("c", "2024-03-14 10:00"), ("a", "2024-03-14 10:10:00.250")],
        vendor_responses=("2024-03-14 10:10:00.750", "2024-03-14 10:10:00.750"),
    ),
]

# (object_id, metric, clock_number) -> expected: business min, calendar min, state, breach_at, extra
EVENT_CASES = [
    (101, "first_response", 1, 30, 3810, "met", "2024-03-04 09:50", {}),
    (102, "first_response", 1, 5, 65, "met", None, {}),
    (103, "first_response", 1, 0, 120, "met", None, {}),
    (104, "first_response", 1, 90, 990, "breached", "2024-03-07 09:30", {}),
    (105, "first_response", 1, 60, 60, "met", "2024-03-04 10:00", {}),
    (106, "first_response", 1, 0, 900, "met", None, {}),
    (108, "first_response", 1, 10, 10, "met", None, {}),
    (108, "next_response", 2, 30, 30, "met", None, {}),
    (108, "next_response", 3, 15, 915, "met", None, {}),
    (109, "resolution", 1, 60, 60, "met", None, {}),
    (109, "resolution", 2, 60, 60, "met", None, {}),
    (110, "first_response", 1, 75, 2415, "breached", "2024-12-26 09:30", {}),
    (111, "first_response", 1, 61, 3781, "breached", "2024-03-11 13:30", {}),
    (112, "first_response", 1, 60, 3900, "met", "2024-11-04 14:30", {}),
    (113, "first_response", 1, 0, 0, "met", None, {"response_message_id": 1132}),
    (114, "first_response", 1, 20, 20, "met", None, {"start_message_id": 1142}),
    (115, "first_response", 1, 40, 40, "met", None, {"responder_side": "agent"}),
    (116, "first_response", 1, 0.5, 0.5, "met", None, {"responder_side": "bot", "responder_manager_id": BOT}),
    (117, "first_response", 1, 90, 90, "breached", "2024-03-06 10:00",
     {"start_manager_id": AGENT_A, "responsible_manager_id": AGENT_B}),
    (118, "first_response", 1, 90, 90, "breached", "2024-03-06 10:00",
     {"start_manager_id": AGENT_A, "responsible_manager_id": AGENT_A}),
    (119, "first_response", 1, 65, 965, "breached", "2024-03-12 09:00",
     {"warning_at": at("2024-03-11 17:30"), "critical_at": at("2024-03-11 17:48")}),
    (120, "resolution", 1, 120, 240, "met", None, {"paused_seconds": 7200}),
    (121, "first_response", 1, 30, 3810, "breached", "2024-03-01 18:50", {"elapsed_seconds": 3810 * 60}),
    (132, "first_response", 1, 20, 20, "met", None, {"is_undetermined": False}),
    (133, "next_response", 2, 75, 75, "breached", "2024-03-13 11:30", {"start_message_id": 1333}),
    (134, "first_response", 1, 10, 10, "met", None, {}),
    (135, "first_response", 1, 10, 10, "met", None, {}),
]  # fmt: skip

# Clocks whose start or stop depends on an unknown-side message: state and severity 'undetermined',
# neither met nor breached. (object_id, metric, clock_number, started_at, start_message_id,
# stopped_at, stop_reason, calendar minutes or None while running)
UNDETERMINED_CASES = [
    (130, "first_response", 1, "2024-03-13 10:00", 1301, None, None, None),
    (131, "first_response", 1, "2024-03-13 10:00", None, "2024-03-13 10:30", "responded", 30),
    (132, "next_response", 2, "2024-03-13 11:00", None, "2024-03-13 11:30", "responded", 30),
    (133, "first_response", 1, "2024-03-13 10:00", 1331, "2024-03-13 10:05", "responded", 5),
    (134, "next_response", 2, "2024-03-13 10:30", 1343, None, None, None),
]  # fmt: skip


# --- destinations ---------------------------------------------------------------------------------


class Warehouse:
    """A loaded warehouse: `query()` reads the views through a plain connection."""

    def __init__(self, pipeline: dlt.Pipeline, connect: Any) -> None:
        self.pipeline = pipeline
        self._connect = connect

    def query(self, sql: str) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, (_normalise(v) for v in row), strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def build(self, as_of: datetime | None = None) -> list[str]:
        return build_views(self.pipeline, as_of=as_of)


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if hasattr(value, "is_finite"):  # Decimal from PostgreSQL
        return float(value)
    return value


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    base = tmp_path_factory.mktemp(f"sla-{request.param}")
    if request.param == "duckdb":
        path = str(base / "sla.duckdb")
        destination = dlt.destinations.duckdb(path)

        def connect() -> Any:
            return duckdb.connect(path, read_only=True)

    else:
        import psycopg2

        server = request.getfixturevalue("postgres_server")
        url = server.loader_url(server.create_database())
        destination = dlt.destinations.postgres(url)

        def connect() -> Any:
            conn = psycopg2.connect(url)
            with conn.cursor() as cur:
                cur.execute("show timezone")
                assert cur.fetchone()[0] == "America/Los_Angeles"  # the views must not care
            return conn

    pipeline = dlt.pipeline(
        pipeline_name=f"sla_known_answers_{request.param}",
        destination=destination,
        dataset_name="commbox_raw",
        pipelines_dir=str(base / "pipelines"),
    )
    load_conversations(pipeline, CONVERSATIONS)
    wh = Warehouse(pipeline, connect)
    wh.build()
    return wh


def _event(warehouse: Warehouse, object_id: int, metric: str, clock_number: int) -> dict[str, Any]:
    rows = warehouse.query(
        "select * from commbox_reporting.fct_sla_events "
        f"where object_id = {object_id} and metric = '{metric}' and clock_number = {clock_number}"
    )
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize(
    ("object_id", "metric", "clock_number", "business_min", "calendar_min", "state", "breach_at", "extra"),
    EVENT_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in EVENT_CASES],
)
def test_sla_event(
    warehouse, object_id, metric, clock_number, business_min, calendar_min, state, breach_at, extra
):
    event = _event(warehouse, object_id, metric, clock_number)
    assert event["business_seconds"] == pytest.approx(business_min * 60)
    assert event["calendar_seconds"] == pytest.approx(calendar_min * 60)
    assert event["state"] == state
    if breach_at:
        assert event["breach_at"] == at(breach_at)
    for key, value in extra.items():
        assert (
            event[key] == pytest.approx(value) if isinstance(value, float | int) else event[key] == value
        ), key


def test_next_response_clocks(warehouse):
    rows = warehouse.query(
        "select metric, clock_number, is_running, stop_reason from commbox_reporting.fct_sla_events "
        "where object_id = 108 and metric <> 'resolution' order by clock_number"
    )
    assert [(r["metric"], r["is_running"]) for r in rows] == [
        ("first_response", False),
        ("next_response", False),
        ("next_response", False),
        ("next_response", True),
    ]


def test_status_history_counts(warehouse):
    (row,) = warehouse.query(
        "select resolutions, reopens, is_one_touch, customer_messages, agent_messages "
        "from commbox_reporting.fct_conversations where object_id = 109"
    )
    assert (row["resolutions"], row["reopens"]) == (2, 1)
    assert not row["is_one_touch"]  # reopened
    assert (row["customer_messages"], row["agent_messages"]) == (1, 1)


@pytest.mark.parametrize(
    ("as_of", "business_min", "state"),
    [
        ("09:29", 29, "ok"),
        ("09:45", 45, "warning"),
        ("09:50", 50, "critical"),
        ("10:00", 60, "critical"),
        ("10:01", 61, "breached"),
    ],
)
def test_running_clock(warehouse, as_of, business_min, state):
    # 48 min is critical (80% of 60); at exactly 60 min it is still not breached (elapsed > target).
    warehouse.build(as_of=at(f"2024-12-30 {as_of}"))
    try:
        event = _event(warehouse, 107, "first_response", 1)
        assert event["is_running"]
        assert event["business_seconds"] == pytest.approx(business_min * 60)
        assert event["state"] == state
        assert event["breach_at"] == at("2024-12-30 10:00")
    finally:
        warehouse.build()


def test_every_view_answers(warehouse):
    for name in warehouse.build():
        warehouse.query(f"select count(*) from commbox_reporting.{name}")
    (daily,) = warehouse.query(
        "select * from commbox_reporting.agg_channel_sla_daily where stream_id = 1 and local_date = date '2024-03-06'"
    )
    # clocks started Wed 03-06 on stream 1: the first responses of 104, 117 and 118 (all breached) and
    # their resolution clocks, never resolved and still running at the end of the data (Dec 30), so
    # breached too -> met 0, breached 6, compliance 0.
    assert daily["breached_events"] == 6
    assert daily["met_events"] == 0
    assert daily["compliance"] == 0


# --- unknown sides and the reconciliation with CommBox's figures -----------------------------------


@pytest.mark.parametrize(
    (
        "object_id",
        "metric",
        "clock_number",
        "started",
        "start_message_id",
        "stopped",
        "stop_reason",
        "calendar_min",
    ),
    UNDETERMINED_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in UNDETERMINED_CASES],
)
def test_clock_depending_on_an_unknown_side_is_undetermined(
    warehouse, object_id, metric, clock_number, started, start_message_id, stopped, stop_reason, calendar_min
):
    event = _event(warehouse, object_id, metric, clock_number)
    assert (event["state"], event["severity"]) == ("undetermined", "undetermined")
    assert event["is_undetermined"] and not event["is_met"] and not event["is_breached"]
    assert (event["warning_at"], event["critical_at"], event["breach_at"]) == (None, None, None)
    assert event["started_at"] == at(started)
    if start_message_id is not None:
        assert event["start_message_id"] == start_message_id
    assert event["stopped_at"] == (at(stopped) if stopped else None)
    assert event["stop_reason"] == stop_reason
    assert event["is_running"] == (stopped is None)
    if calendar_min is not None:
        assert event["calendar_seconds"] == pytest.approx(calendar_min * 60)


def test_unknown_side_is_neither_customer_nor_agent(warehouse):
    sides = warehouse.query(
        "select sender_side, is_response from commbox_reporting.int_messages_classified "
        "where object_id = 131 order by sent_at"
    )
    assert [(r["sender_side"], r["is_response"]) for r in sides] == [
        ("customer", False),
        ("unknown", False),
        ("agent", True),
    ]
    rows = warehouse.query(
        "select object_id, customer_messages, agent_messages, unknown_messages, first_response_state, "
        "undetermined_events from commbox_reporting.fct_conversations where object_id in (130, 131, 135) "
        "order by object_id"
    )
    assert [
        (r["customer_messages"], r["agent_messages"], r["unknown_messages"], r["first_response_state"])
        for r in rows
    ] == [(0, 0, 2, "undetermined"), (1, 1, 1, "undetermined"), (1, 1, 0, "met")]
    assert [r["undetermined_events"] for r in rows] == [1, 1, 0]


def test_undetermined_clocks_are_counted_apart(warehouse):
    (daily,) = warehouse.query(
        "select * from commbox_reporting.agg_channel_sla_daily where stream_id = 1 and local_date = date '2024-03-13'"
    )
    # 130-134: 8 response clocks (first responses of 132 and 134 met; 133's next response breached; five
    # undetermined) and 5 resolution clocks never resolved, breached at the end of the data (Dec 30).
    assert daily["events"] == 13
    assert (daily["met_events"], daily["breached_events"], daily["undetermined_events"]) == (2, 6, 5)
    assert daily["compliance"] == pytest.approx(2 / 8)
    assert daily["running_events"] == 7  # 130's and 134's possible clocks, the 5 resolution clocks
    # the first response medians leave undetermined clocks out: 132 (20 min) and 134 (10 min) only
    assert daily["median_first_response_seconds"] == pytest.approx(15 * 60)
    (agents,) = warehouse.query(
        "select sum(events) as events, sum(undetermined_events) as undetermined "
        "from commbox_reporting.agg_agent_daily where local_date = date '2024-03-13'"
    )
    assert (agents["events"], agents["undetermined"]) == (13, 5)
    # at the end of Wed 03-13, 130's and 134's possible clocks still run; none before that day
    backlog = warehouse.query(
        "select local_date, undetermined_conversations from commbox_reporting.fct_backlog_daily "
        "where stream_id = 1 and local_date in (date '2024-03-12', date '2024-03-13') order by local_date"
    )
    assert [r["undetermined_conversations"] for r in backlog] == [0, 2]


# object_id -> first agent message, CommBox's firstResponseTime, difference (s), agreement, in agreement
RECONCILIATION_CASES = {
    105: ("2024-03-04 10:00", "2024-03-04 10:00", 0, "agree", True),
    107: (None, None, None, "agree", True),  # never answered: both NULL agree
    115: ("2024-03-05 13:40", "2024-03-05 13:40", 0, "agree", True),  # the bot is not an agent
    114: ("2024-03-05 11:00", "2024-03-05 11:00", 0, "agree", True),  # an outbound first message counts
    130: (None, "2024-03-13 10:05", None, "unknown", None),
    131: ("2024-03-13 10:30", "2024-03-13 10:10", 1200, "unknown", None),
    133: ("2024-03-13 10:05", "2024-03-13 10:05", 0, "agree", True),
    135: ("2024-03-14 10:10", "2024-03-14 10:50", -2400, "disagree", False),
    136: ("2024-03-14 10:10:00.250", "2024-03-14 10:10:00.750", -0.5, "agree", True),
}


def test_first_response_reconciliation(warehouse):
    rows = {
        r["object_id"]: r
        for r in warehouse.query("select * from commbox_reporting.fct_first_response_reconciliation")
    }
    assert set(rows) == {c.object_id for c in CONVERSATIONS}
    for object_id, (computed, commbox, difference, agreement, agrees) in RECONCILIATION_CASES.items():
        row = rows[object_id]
        assert row["first_agent_message_at"] == (at(computed) if computed else None), object_id
        assert row["commbox_first_response_at"] == (at(commbox) if commbox else None), object_id
        if difference is None:
            assert row["first_response_difference_seconds"] is None, object_id
        else:
            assert row["first_response_difference_seconds"] == pytest.approx(difference), object_id
        assert (row["first_response_agreement"], row["is_in_agreement"]) == (agreement, agrees), object_id
    first = Counter(r["first_response_agreement"] for r in rows.values())
    assert first == {"agree": len(rows) - 3, "disagree": 1, "unknown": 2}
    # the last reply: 130 unknown (no agent seen, CommBox has one), 135 disagrees, the rest agree
    last = Counter(r["last_response_agreement"] for r in rows.values())
    assert last == {"agree": len(rows) - 2, "disagree": 1, "unknown": 1}
    assert rows[135]["last_response_difference_seconds"] == pytest.approx(-2400)
    assert rows[135]["is_last_response_in_agreement"] is False


def test_reconciliation_page_tells_the_truth(warehouse):
    """docs/reconciliation.md: its column table is the view's columns, its example query runs."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "reconciliation.md").read_text()
    section = page.split("## Reconciliation", 1)[1]
    documented = {
        name
        for row in re.findall(r"^\| (`[^|]+`) \|", section, re.MULTILINE)
        for name in re.findall(r"`(\w+)`", row)
    }
    (row,) = warehouse.query("select * from commbox_reporting.fct_first_response_reconciliation limit 1")
    assert documented == set(row)
    (query,) = re.findall(r"```sql\n(.*?);?\n```", page, re.DOTALL)
    assert [r["object_id"] for r in warehouse.query(query)] == [135]
    for state in ("ok", "warning", "critical", "breached", "met", "undetermined"):
        assert f"`{state}`" in page
