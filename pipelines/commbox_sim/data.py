"""Deterministic account generator: streams, managers, customers and conversations, plus mutations.

Generation is two-level so that 100,000 conversations start in about a second:

* the *index* (ids, stream, user, created/updated/closed times, status, assignment) is built
  eagerly by replaying each conversation's event timeline without any text;
* the *detail* (messages, HTML, activities) is rebuilt lazily from a per-object RNG seeded with
  ``(seed, object_id)`` and the same timeline, then any mutation events are appended.

Times are integer microseconds since the epoch (UTC) throughout.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, timedelta
from random import Random
from typing import Any

from . import texts
from .business_hours import DAY_NAMES, BusinessCalendar
from .clock import from_us, to_us
from .config import SimConfig

# roles of a message author
CUSTOMER, BOT, AGENT = 0, 1, 2
# event kinds: (t_us, kind, a, b, actor_manager_id)
MSG, STATUS, ASSIGN, ACT = 0, 1, 2, 3

OPEN, RESOLVED, IN_PROCESS, PENDING = 1, 2, 8, 15
ACTIVITY_TYPES = {
    1: "Remark", 2: "StatusChange", 3: "Forward", 4: "ForwardReply", 5: "StreamChange", 6: "AssignChange",
    7: "UpdateObjectTag", 8: "FollowUp", 9: "UpdateObjectIntent", 10: "Attachment", 11: "RuleExecuted",
    12: "Custom", 13: "UpdateObjectPublicity", 14: "Debug", 15: "InvalidExtensionFile", 16: "InvalidFileSize",
    17: "DisallowedFileUpload", 18: "inactivityLogout", 19: "ParticipantChange", 20: "TargetStreamChange",
    21: "ConversationSummary", 22: "LogError", 23: "RedactChild",
}  # fmt: skip

_S = 1_000_000
_DAY = 86_400 * _S
_MASK = (1 << 64) - 1

# Hourly arrival weights (local time), busiest late morning and afternoon.
_HOURLY = (1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 2, 4, 6, 7, 7, 6, 6, 7, 7, 6, 5, 4, 3, 3, 2, 2, 1.5)
_HOURLY_CUM = [sum(_HOURLY[: i + 1]) for i in range(24)]

_WEEKDAYS = "09:00-17:00"
STREAM_PRESETS: tuple[dict[str, Any], ...] = (
    {
        "kind": "chat", "name": "Web Chat", "provider_type": 8, "timezone": "Europe/London", "bot": True,
        "agent_mean_s": 240, "share": 0.35, "module_id": 1,
        "hours": {"mon": "08:00-20:00", "tue": "08:00-20:00", "wed": "08:00-20:00", "thu": "08:00-20:00",
                  "fri": "08:00-20:00", "sat": "09:00-13:00", "sun": None},
    },
    {
        "kind": "mail", "name": "Support Mail", "provider_type": 4, "timezone": "America/New_York", "bot": False,
        "agent_mean_s": 1800, "share": 0.25, "module_id": 3,
        "hours": {"mon": _WEEKDAYS, "tue": _WEEKDAYS, "wed": _WEEKDAYS, "thu": _WEEKDAYS, "fri": _WEEKDAYS,
                  "sat": None, "sun": None},
    },
    {
        "kind": "sms", "name": "SMS", "provider_type": 5, "timezone": "UTC", "bot": False,
        "agent_mean_s": 600, "share": 0.15, "module_id": 3,
        "hours": {"mon": "08:00-18:00", "tue": "08:00-18:00", "wed": "08:00-18:00", "thu": "08:00-18:00",
                  "fri": "08:00-18:00", "sat": "08:00-18:00", "sun": None},
    },
    {
        "kind": "whatsapp", "name": "WhatsApp", "provider_type": 7, "timezone": "Asia/Jerusalem", "bot": True,
        "agent_mean_s": 420, "share": 0.25, "module_id": 1,
        "hours": {"mon": "08:30-17:30", "tue": "08:30-17:30", "wed": "08:30-17:30", "thu": "08:30-17:30",
                  "fri": "08:30-13:00", "sat": None, "sun": "08:30-17:30"},
    },
)  # fmt: skip
# identity slot of a customer per provider type: 0 e-mail, 1 phone, 2 WhatsApp, 3 web visitor
_SLOT = {4: 0, 5: 1, 7: 2, 8: 3}
_SLOT_TYPE = (4, 5, 7, 8)


def mix(*parts: int) -> int:
    """A 64-bit splitmix hash of integers: stable per-object seeds and quirk choices."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x


@dataclass
class Stream:
    index: int
    stream_id: int
    name: str
    kind: str
    provider_type: int
    timezone: str
    hours: dict[str, str | None]
    holidays: list[date]
    sub_streams: list[int]
    bot: bool
    agent_mean_s: float
    module_id: int
    address: str
    calendar: BusinessCalendar
    agent_pool: list[int] = field(default_factory=list)


@dataclass
class Manager:
    manager_id: int
    identity_id: int
    first_name: str
    last_name: str
    email: str
    permission_id: int
    teams: list[int]
    team_names: dict[int, str]
    profiles: list[int]
    max_sync: int
    max_async: int
    brand_id: int


@dataclass
class Conversation:
    """The full detail of one conversation, rebuilt on demand."""

    index: int
    object_id: int
    events: list[tuple[int, int, int, int, int]]
    childs: list[dict[str, Any]]  # oldest first: child_id, t, role, manager_id, text, html, content
    activities: list[dict[str, Any]]  # oldest first: type, t, actor, data


class Dataset:
    """The generated account: index arrays, per-stream sorted keys, lazy detail, mutations."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.seed = cfg.seed
        self.lock = threading.RLock()
        self.end_us = to_us(cfg.end_dt)
        self.start_us = self.end_us - cfg.days * _DAY
        self.version = 0
        self._profiles: dict[int, dict[str, Any]] = {}
        rng = Random(mix(cfg.seed, 1))
        self.brand_id = 200_000 + rng.randrange(50_000)
        self._make_streams(rng)
        self._make_managers(rng)
        self._make_users(rng)
        self._make_objects(rng)
        self._details: OrderedDict[int, Conversation] = OrderedDict()
        self._mutation_round = 0
        self._make_crowded_seconds()

    # ------------------------------------------------------------------ static entities
    def _make_streams(self, rng: Random) -> None:
        ids = sorted(rng.sample(range(300, 20_000), self.cfg.streams))
        first_day = (from_us(self.start_us) - timedelta(days=3)).date()
        self.streams: list[Stream] = []
        for k, sid in enumerate(ids):
            p = STREAM_PRESETS[k % len(STREAM_PRESETS)]
            open_days = [(from_us(self.start_us) + timedelta(days=d)).date() for d in range(1, self.cfg.days)]
            open_days = [d for d in open_days if p["hours"].get(DAY_NAMES[d.weekday()])]
            holidays = sorted(rng.sample(open_days, min(len(open_days), 1 + rng.randrange(2))))
            subs = [0, *sorted(rng.sample(range(2_000, 9_000), 2))]
            suffix = "" if k < len(STREAM_PRESETS) else f" {k // len(STREAM_PRESETS) + 1}"
            address = {
                "chat": f"webchat-{sid}.bumpyardpro.com",
                "mail": f"contact{suffix.strip()}@bumpyardpro.com",
                "sms": f"1212555{sid:04d}",
                "whatsapp": f"97250555{sid:04d}",
            }[p["kind"]]
            self.streams.append(
                Stream(
                    index=k,
                    stream_id=sid,
                    name=p["name"] + suffix,
                    kind=p["kind"],
                    provider_type=p["provider_type"],
                    timezone=p["timezone"],
                    hours=dict(p["hours"]),
                    holidays=holidays,
                    sub_streams=subs,
                    bot=p["bot"],
                    agent_mean_s=p["agent_mean_s"],
                    module_id=p["module_id"],
                    address=address,
                    calendar=BusinessCalendar(p["timezone"], p["hours"], holidays, first_day),
                )
            )
        self.stream_by_id = {s.stream_id: s for s in self.streams}

    def _make_managers(self, rng: Random) -> None:
        n_agents = max(6, 3 * self.cfg.streams)
        team_ids = sorted(rng.sample(range(2_300, 4_500), 3))
        team_names = dict(zip(team_ids, ("VIP", "Billing", "Tier 1"), strict=True))
        profile_ids = sorted(rng.sample(range(234_000, 250_000), 3))
        base = 520_700 + rng.randrange(100)
        self.managers: list[Manager] = []
        used_names: set[tuple[str, str]] = set()
        for i in range(n_agents + 3):
            first, last = texts.person(rng)
            while (first, last) in used_names:
                first, last = texts.person(rng)
            used_names.add((first, last))
            if i == n_agents + 2:
                first, last, perm = "Bot", "", 5
            else:
                perm = 3 if i >= n_agents else 2
            teams = [] if i % 5 == 4 or perm == 5 else sorted(rng.sample(team_ids, 1 + (i % 3 == 0)))
            email = f"{first.lower()}.{last[:1].lower() or 'bot'}@bumpyardpro.com"
            self.managers.append(
                Manager(
                    manager_id=base + i,
                    identity_id=2_192_400 + 3 * i + rng.randrange(3),
                    first_name=first,
                    last_name=last,
                    email=email,
                    permission_id=perm,
                    teams=teams,
                    team_names=team_names,
                    profiles=[] if not teams else sorted(rng.sample(profile_ids, 1 + (i % 2))),
                    max_sync=2 + rng.randrange(3),
                    max_async=4 + rng.randrange(4),
                    brand_id=self.brand_id,
                )
            )
        self.manager_by_id = {m.manager_id: m for m in self.managers}
        self.bot_id = self.managers[-1].manager_id
        agents = [m.manager_id for m in self.managers if m.permission_id == 2]
        n = len(self.streams)
        for s in self.streams:
            s.agent_pool = [*agents[s.index :: n], agents[(s.index + 1) % len(agents)]]

    def _make_users(self, rng: Random) -> None:
        self.n_users = max(40, int(self.cfg.conversations * 0.6))
        self.user_base = 1_769_000 + rng.randrange(500)
        self.identity_base = 1_957_000 + rng.randrange(500)

    def user_id(self, u: int) -> int:
        return self.user_base + 3 * u

    def user_index(self, user_id: int) -> int | None:
        u, r = divmod(user_id - self.user_base, 3)
        return u if r == 0 and 0 <= u < self.n_users else None

    def identity_id(self, u: int, provider_type: int) -> int:
        return self.identity_base + 4 * u + _SLOT[provider_type]

    def identity_owner(self, identity_id: int) -> tuple[int, int] | None:
        u, slot = divmod(identity_id - self.identity_base, 4)
        if 0 <= u < self.n_users and _SLOT_TYPE[slot] in self.user_types(u):
            return u, _SLOT_TYPE[slot]
        return None

    @staticmethod
    def user_types(u: int) -> list[int]:
        """Provider types of a customer's identities: e-mail and phone always, WhatsApp and web often."""
        types = [4, 5]
        if u % 3 != 0:
            types.append(7)
        if u % 2 == 0:
            types.append(8)
        return types

    def pick_user(self, rng: Random, provider_type: int) -> int:
        u = rng.randrange(self.n_users)
        # Only customers with an identity on the channel can write on it (user_types).
        while provider_type == 7 and u % 3 == 0:
            u = (u + 1) % self.n_users
        if provider_type == 8 and u % 2 == 1:
            u -= 1
        return u

    def user_profile(self, u: int) -> dict[str, Any]:
        """The customer's profile (a shared cached dict: do not modify)."""
        profile = self._profiles.get(u)
        if profile is None:
            profile = self._profiles[u] = self._make_profile(u)
            if len(self._profiles) > 200_000:
                self._profiles.clear()
        return profile

    def _make_profile(self, u: int) -> dict[str, Any]:
        rng = Random(mix(self.seed, 3, u))
        first, last = texts.person(rng)
        named = rng.random() > 0.12
        email = f"{first.lower()}.{last.lower()}{rng.randrange(100)}@{rng.choice(texts.EMAIL_DOMAINS)}"
        phone = (
            f"9725{rng.randrange(10_000_000, 99_999_999)}"
            if u % 2
            else f"1212{rng.randrange(1_000_000, 9_999_999)}"
        )
        return {
            "user_id": self.user_id(u),
            "first_name": first if named else None,
            "last_name": last if named else None,
            "email": email,
            "phone1": phone,
            "phone2": f"9725{rng.randrange(10_000_000, 99_999_999)}" if rng.random() < 0.3 else None,
            "unique_id": 266_000 + u,
            "gender": rng.choice(("Male", "Female", None)),
            "locale": rng.choice(("en_US", "en_GB", "he_IL", None)),
            "birthday": f"01/{1 + rng.randrange(12):02d}/{1950 + rng.randrange(50)}"
            if rng.random() < 0.4
            else None,
            "remarks": "test remark.." if rng.random() < 0.1 else None,
            "identities": [
                {
                    "identity_id": self.identity_id(u, t),
                    "provider_type": t,
                    "provider_id": email
                    if t == 4
                    else (f"web-{self.identity_id(u, t)}" if t == 8 else phone),
                }
                for t in self.user_types(u)
            ],
        }

    # ------------------------------------------------------------------ conversations
    def _creation_times(self, rng: Random) -> list[tuple[int, int]]:
        n = self.cfg.conversations
        shares = [STREAM_PRESETS[s.index % len(STREAM_PRESETS)]["share"] for s in self.streams]
        cum = [sum(shares[: i + 1]) for i in range(len(shares))]
        out: list[tuple[int, int]] = []
        if self.cfg.bursts and n >= 50:
            for b in range(1 + (len(self.streams) > 2)):
                s = self.streams[(b * 3) % len(self.streams)]
                size = max(20, min(400, int(n * 0.08)))
                day = 1 + rng.randrange(max(1, self.cfg.days - 2))
                hour_start = self.start_us + day * _DAY + (10 + rng.randrange(6)) * 3600 * _S
                for _ in range(size):
                    out.append((hour_start + rng.randrange(3600 * _S), s.index))
        start_date = from_us(self.start_us).date()
        midnights = [
            [to_us_midnight(start_date + timedelta(days=d), s.calendar) for d in range(-1, self.cfg.days + 1)]
            for s in self.streams
        ]
        while len(out) < n:
            k = bisect.bisect_left(cum, rng.random() * cum[-1])
            d = rng.randrange(-1, self.cfg.days + 1)
            day = start_date + timedelta(days=d)
            if day.weekday() >= 5 and rng.random() < 0.5:
                continue
            hour = bisect.bisect_left(_HOURLY_CUM, rng.random() * _HOURLY_CUM[-1])
            t = midnights[k][d + 1] + hour * 3600 * _S + rng.randrange(3600 * _S)
            if self.start_us <= t < self.end_us:
                out.append((t, k))
        out.sort()
        return out

    def _make_objects(self, rng: Random) -> None:
        created = self._creation_times(rng)
        n = len(created)
        oid = 62_800_000 + rng.randrange(100_000)
        self.oid: list[int] = []
        self.stream_ix: list[int] = []
        self.sub: list[int] = []
        self.user: list[int] = []
        self.created: list[int] = []
        self.cut: list[int] = []
        self.updated: list[int] = [0] * n
        self.closed: list[int] = [0] * n  # 0 = not closed
        self.status: list[int] = [0] * n
        self.priority: list[int] = [0] * n
        self.first_resp: list[int] = [0] * n
        self.last_resp: list[int] = [0] * n
        self.assigned: list[int] = [0] * n
        self.last_assigned: list[int] = [0] * n
        self.n_childs: list[int] = [0] * n
        self.obj_version: list[int] = [0] * n
        self.extra: dict[int, list[tuple[int, int, int, int, int]]] = {}
        self.index_of: dict[int, int] = {}
        for i, (t, k) in enumerate(created):
            oid += 1 + rng.randrange(3)
            s = self.streams[k]
            self.oid.append(oid)
            self.index_of[oid] = i
            self.stream_ix.append(k)
            r = rng.random()
            self.sub.append(s.sub_streams[0 if r < 0.6 else (1 if r < 0.85 else 2)])
            self.user.append(self.pick_user(rng, s.provider_type))
            self.created.append(t)
            self.cut.append(self.end_us)
            self._summarize(i, self.timeline(i))
        self._build_sorted()

    def timeline(self, i: int) -> list[tuple[int, int, int, int, int]]:
        """The conversation's events, oldest first: base life cycle cut at its horizon, then mutations."""
        events = _life_cycle(
            Random(mix(self.seed, 2, self.oid[i])),
            self.created[i],
            self.streams[self.stream_ix[i]],
            self.bot_id,
        )
        cut = self.cut[i]
        if events[-1][0] >= cut:
            events = [e for e in events if e[0] < cut] or events[:1]
        extra = self.extra.get(i)
        return events + extra if extra else events

    def _summarize(self, i: int, events: list[tuple[int, int, int, int, int]]) -> None:
        status = OPEN
        closed = 0
        assigned = last_assigned = 0
        first_resp = last_resp = 0
        priority = self.created[i]
        n_childs = 0
        for t, kind, a, b, _actor in events:
            if kind == MSG:
                n_childs += 1
                if a == AGENT:
                    last_resp = t
                    if not first_resp:
                        first_resp = t
                elif a == CUSTOMER:
                    priority = t
            elif kind == STATUS:
                status = b
                closed = t if b == RESOLVED else 0
            elif kind == ASSIGN:
                assigned = b
                if b:
                    last_assigned = b
        self.updated[i] = events[-1][0]
        self.closed[i] = closed
        self.status[i] = status
        self.priority[i] = priority
        self.first_resp[i] = first_resp
        self.last_resp[i] = last_resp
        self.assigned[i] = assigned
        self.last_assigned[i] = last_assigned
        self.n_childs[i] = n_childs

    def _build_sorted(self) -> None:
        """Per stream: object indexes sorted by each time field, with parallel key lists for bisect."""
        self.sorted: dict[str, list[tuple[list[int], list[int]]]] = {}
        fields = {
            "created": self.created,
            "updated": self.updated,
            "closed": self.closed,
            "priority": self.priority,
        }
        for name, values in fields.items():
            per_stream: list[tuple[list[int], list[int]]] = []
            for s in self.streams:
                pairs = sorted(
                    (values[i], i)
                    for i in range(len(self.oid))
                    if self.stream_ix[i] == s.index and (name != "closed" or values[i])
                )
                per_stream.append(([p[0] for p in pairs], [p[1] for p in pairs]))
            self.sorted[name] = per_stream
        self.user_objects: dict[int, list[int]] = {}
        for i, u in enumerate(self.user):
            self.user_objects.setdefault(u, []).append(i)

    def _reindex(self, i: int, old: dict[str, int]) -> None:
        k = self.stream_ix[i]
        for name, values in (("updated", self.updated), ("closed", self.closed), ("priority", self.priority)):
            keys, idx = self.sorted[name][k]
            if old[name] > 0:
                p = bisect.bisect_left(keys, old[name])
                while p < len(keys) and idx[p] != i:
                    p += 1
                if p < len(keys):
                    del keys[p], idx[p]
            new = values[i]
            if new > 0:
                p = bisect.bisect_right(keys, new)
                keys.insert(p, new)
                idx.insert(p, i)

    # ------------------------------------------------------------------ lazy detail
    def detail(self, i: int) -> Conversation:
        with self.lock:
            conv = self._details.get(i)
            if conv is not None and conv.index == i and getattr(conv, "_v", -1) == self.obj_version[i]:
                self._details.move_to_end(i)
                return conv
            conv = self._build_detail(i)
            conv._v = self.obj_version[i]  # type: ignore[attr-defined]
            self._details[i] = conv
            if len(self._details) > 4096:
                self._details.popitem(last=False)
            return conv

    def _build_detail(self, i: int) -> Conversation:
        oid = self.oid[i]
        s = self.streams[self.stream_ix[i]]
        events = self.timeline(i)
        mail = s.kind == "mail"
        profile = self.user_profile(self.user[i])
        cust_first, cust_last = profile["first_name"] or "", profile["last_name"] or ""
        # one text RNG for the generated messages; mutation messages get their own seeds
        base_rng = Random(mix(self.seed, 4, oid))
        n_base = sum(1 for e in events[: len(events) - len(self.extra.get(i, ()))] if e[1] == MSG)
        childs: list[dict[str, Any]] = []
        activities: list[dict[str, Any]] = []
        prev_html: str | None = None
        prev_t = 0
        for t, kind, a, b, actor in events:
            if kind == MSG:
                k = len(childs)
                rng = base_rng if k < n_base else Random(mix(self.seed, 4, oid, k))
                text = texts.line(rng, a, k == 0)
                if a == CUSTOMER and rng.random() < 0.08:
                    text += f"\nAttachments: \n{rng.choice(texts.ATTACHMENTS)}"
                if a == AGENT:
                    m = self.manager_by_id[b]
                    sender = f"{m.first_name} {m.last_name} [{m.email}]"
                else:
                    sender = f"{cust_first} {cust_last}".strip() or profile["email"]
                sent = _us_date_text(prev_t) if prev_t else ""
                body, own = texts.to_html(
                    rng, text, mail=mail, quoted=prev_html if mail else None, sender=sender, sent=sent
                )
                childs.append(
                    {
                        "child_id": oid * 1000 + k + 1,
                        "t": t,
                        "role": a,
                        "manager_id": b if a != CUSTOMER else 0,
                        "text": text,
                        "html": body,
                        "own_html": own,
                        "subject": rng.choice(texts.SUBJECTS) if mail else None,
                    }
                )
                prev_html, prev_t = own, t
            elif kind == STATUS:
                activities.append(
                    {"type": 2, "t": t, "actor": actor, "data": {"oldStatus": a, "newStatus": b}}
                )
            elif kind == ASSIGN:
                activities.append(
                    {"type": 6, "t": t, "actor": actor, "data": {"oldManagerId": a, "newManagerId": b}}
                )
            else:
                activities.append(
                    {"type": a, "t": t, "actor": actor, "data": self._activity_data(a, oid, t, b)}
                )
        return Conversation(index=i, object_id=oid, events=events, childs=childs, activities=activities)

    def _activity_data(self, atype: int, oid: int, t: int, extra: int) -> dict[str, Any]:
        rng = Random(mix(self.seed, 5, oid, t))
        if atype == 1:
            return {"text": rng.choice(texts.REMARKS)}
        if atype == 3:
            return {"text": "Forwarded to billing", "to": f"billing{extra % 7}@bumpyardpro.com"}
        if atype == 8:
            return {
                "text": "Follow up with the customer",
                "scheduledTime": _follow_up_text(t + (extra or 1) * 3600 * _S),
            }
        if atype == 7:
            return {"tagId": 1000 + extra % 5, "tagName": texts.TAGS[extra % 5], "action": "add"}
        if atype == 11:
            return {"ruleId": 300 + extra % 4, "ruleName": "Route to agents"}
        if atype == 21:
            return {"text": "Customer asked about an order; agent resolved it."}
        if atype == 10:
            return {"fileName": rng.choice(texts.ATTACHMENTS)}
        return {"text": ACTIVITY_TYPES.get(atype, "Custom")}

    # ------------------------------------------------------------------ queries
    def window(self, k: int, field_name: str, lo_us: int, hi_us: int) -> list[int]:
        keys, idx = self.sorted[field_name][k]
        a = bisect.bisect_left(keys, lo_us)
        b = bisect.bisect_left(keys, hi_us)
        return idx[a:b]

    def objects_of_identity(self, k: int, u: int) -> list[int]:
        return [i for i in self.user_objects.get(u, ()) if self.stream_ix[i] == k]

    # ------------------------------------------------------------------ mutations
    def mutate(
        self,
        now_us: int,
        *,
        new: int = 0,
        messages: int = 0,
        status_changes: int = 0,
        closures: int = 0,
        reassignments: int = 0,
        reopen: int = 0,
        bulk: int = 0,
        bulk_streams: int | None = None,
        backdate_seconds: float = 0,
    ) -> dict[str, list[int]]:
        """Apply changes at ``now_us - backdate``; every touched object's updatedTime moves with them.

        ``bulk`` conversations, spread over ``bulk_streams`` streams (default: all), change inside
        the one second holding ``now_us - backdate`` (see ``bulk_change``).
        """
        with self.lock:
            self._mutation_round += 1
            rng = Random(mix(self.seed, 6, self._mutation_round))
            t = now_us - int(backdate_seconds * _S)
            touched: dict[str, list[int]] = {
                k: []
                for k in ("new", "messages", "status_changes", "closures", "reassignments", "reopen", "bulk")
            }
            if bulk:
                n_streams = len(self.streams) if bulk_streams is None else bulk_streams
                if not 1 <= n_streams <= len(self.streams):
                    raise ValueError(f"bulk_streams must be between 1 and {len(self.streams)}")
                streams = sorted(rng.sample(range(len(self.streams)), n_streams))
                touched["bulk"] = self.bulk_change(rng, t, bulk, streams)
            for _ in range(new):
                touched["new"].append(self._new_object(rng, t))
            unresolved = [i for i in range(len(self.oid)) if self.status[i] != RESOLVED]
            resolved = [i for i in range(len(self.oid)) if self.status[i] == RESOLVED]
            for kind, count, pool in (
                ("messages", messages, unresolved),
                ("status_changes", status_changes, unresolved),
                ("reassignments", reassignments, unresolved),
                ("closures", closures, unresolved),
                ("reopen", reopen, resolved),
            ):
                chosen = rng.sample(pool, min(count, len(pool)))
                for i in chosen:
                    self._apply(i, kind, rng, t)
                    touched[kind].append(self.oid[i])
                if kind == "closures":
                    gone = set(chosen)
                    unresolved[:] = [i for i in unresolved if i not in gone]
            self.version += 1
            return touched

    def bulk_change(self, rng: Random, t: int, count: int, streams: list[int]) -> list[int]:
        """Change ``count`` conversations of ``streams`` inside the second holding ``t``, at most ``t``.

        What an automation rule or a bulk action does: the kinds of change rotate (status change,
        closure, reassignment, new message) so the second holds mixed statuses; a conversation
        already resolved is reopened instead. Only conversations last changed before that second
        are picked, so every touched updatedTime lands in it. Returns the object ids, fewer than
        ``count`` when the streams hold too few such conversations.
        """
        second = t - t % _S
        pools = []
        for k in streams:
            keys, idx = self.sorted["updated"][k]
            # last changed at least a millisecond before the second: _apply keeps 1 ms after it
            eligible = idx[: bisect.bisect_left(keys, second - 1000)]
            pools.append(rng.sample(eligible, len(eligible)))
        kinds = ("status_changes", "closures", "reassignments", "messages")
        touched: list[int] = []
        n = 0
        while len(touched) < count and any(pools):
            pool = pools[n % len(pools)]
            n += 1
            if not pool:
                continue
            i = pool.pop()
            kind = "reopen" if self.status[i] == RESOLVED else kinds[len(touched) % len(kinds)]
            self._apply(i, kind, rng, second + rng.randrange(t - second + 1))
            touched.append(self.oid[i])
        return touched

    def _make_crowded_seconds(self) -> None:
        """Generated history with ``crowded_seconds`` seconds of ``crowded_size`` changes on one stream.

        The seconds fall in the second half of the history (so enough conversations were last
        changed before them) and each rotates to the next stream.
        """
        cfg = self.cfg
        if not cfg.crowded_seconds:
            return
        rng = Random(mix(self.seed, 10))
        half = self.start_us + (self.end_us - self.start_us) // 2
        for c in range(cfg.crowded_seconds):
            t = half + rng.randrange(max(_S, self.end_us - 3600 * _S - half))
            # the last microsecond of the second: the changes spread over the whole second
            self.bulk_change(rng, t - t % _S + _S - 1, cfg.crowded_size, [c % len(self.streams)])
        self.version += 1

    def _new_object(self, rng: Random, t: int) -> int:
        k = rng.randrange(len(self.streams))
        s = self.streams[k]
        i = len(self.oid)
        oid = self.oid[-1] + 1 + rng.randrange(3) if self.oid else 62_800_000
        t = max(t, self.created[-1] + 1 if self.created else t)
        self.oid.append(oid)
        self.index_of[oid] = i
        self.stream_ix.append(k)
        self.sub.append(s.sub_streams[0])
        u = self.pick_user(rng, s.provider_type)
        self.user.append(u)
        self.user_objects.setdefault(u, []).append(i)
        self.created.append(t)
        self.cut.append(t + 1)
        for arr in (self.updated, self.closed, self.status, self.priority, self.first_resp, self.last_resp,
                    self.assigned, self.last_assigned, self.n_childs, self.obj_version):  # fmt: skip
            arr.append(0)
        self._summarize(i, self.timeline(i))
        keys, idx = self.sorted["created"][k]
        p = bisect.bisect_right(keys, t)
        keys.insert(p, t)
        idx.insert(p, i)
        self._reindex(i, {"updated": -1, "closed": 0, "priority": -1})
        return oid

    def _apply(self, i: int, kind: str, rng: Random, t: int) -> None:
        events = self.timeline(i)
        t = max(t, events[-1][0] + 1000)
        s = self.streams[self.stream_ix[i]]
        status, agent = self.status[i], self.assigned[i]
        last_role = next((e[2] for e in reversed(events) if e[1] == MSG), CUSTOMER)
        new: list[tuple[int, int, int, int, int]] = []
        if kind == "messages":
            if last_role == CUSTOMER:
                if not agent:
                    agent = rng.choice(s.agent_pool)
                    new.append((t, ASSIGN, 0, agent, self.bot_id))
                if status != IN_PROCESS:
                    new.append((t, STATUS, status, IN_PROCESS, agent))
                new.append((t, MSG, AGENT, agent, agent))
            else:
                if status == PENDING:
                    new.append((t, STATUS, PENDING, IN_PROCESS, self.bot_id))
                new.append((t, MSG, CUSTOMER, 0, 0))
        elif kind == "status_changes":
            target = {OPEN: IN_PROCESS, IN_PROCESS: PENDING, PENDING: IN_PROCESS}.get(status, IN_PROCESS)
            if not agent:
                agent = rng.choice(s.agent_pool)
                new.append((t, ASSIGN, 0, agent, self.bot_id))
            new.append((t, STATUS, status, target, agent))
        elif kind == "reassignments":
            choices = [m for m in s.agent_pool if m != agent] or s.agent_pool
            target = rng.choice(choices)
            new.append((t, ASSIGN, agent, target, agent or self.bot_id))
        elif kind == "closures":
            new.append((t, STATUS, status, RESOLVED, agent or self.bot_id))
            if agent:
                new.append((t, ASSIGN, agent, 0, agent))
        elif kind == "reopen":
            new.append((t, MSG, CUSTOMER, 0, 0))
            new.append((t, STATUS, RESOLVED, OPEN, self.bot_id))
        self.extra.setdefault(i, []).extend(new)
        old = {"updated": self.updated[i], "closed": self.closed[i], "priority": self.priority[i]}
        self._summarize(i, events + new)
        self.obj_version[i] += 1
        self._reindex(i, old)


def to_us_midnight(day: date, calendar: BusinessCalendar) -> int:
    return to_us_day(day) - calendar.local_offset_us(day)


def to_us_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days * _DAY


def _us_date_text(t: int) -> str:
    dt = from_us(t)
    hour = dt.hour % 12 or 12
    return f"{dt.month}/{dt.day}/{dt.year}, {hour}:{dt.minute:02d}:{dt.second:02d} {'AM' if dt.hour < 12 else 'PM'}"


def _follow_up_text(t: int) -> str:
    dt = from_us(t)
    return f"{dt.month:02d}/{dt.day:02d}/{dt.year} {dt.hour:02d}:{dt.minute:02d}:00"


def _life_cycle(rng: Random, t0: int, s: Stream, bot_id: int) -> list[tuple[int, int, int, int, int]]:
    """One conversation's events, oldest first, without text. Deterministic from ``rng``.

    Customer opens; on bot channels the bot answers within seconds and may solve it; an agent is
    assigned and replies after a delay shaped by the stream's business hours; customer and agent
    exchange messages (status In Process <-> Pending); sometimes reassigned; most get resolved
    (unassigned on resolution) and a few reopen.
    """
    cal = s.calendar
    r = rng.random
    ev: list[tuple[int, int, int, int, int]] = [(t0, MSG, CUSTOMER, 0, 0)]
    t = t0
    if s.bot:
        n = 1 + int(r() * 3)
        for j in range(n):
            t += _between(r, 1 * _S, 8 * _S)
            ev.append((t, MSG, BOT, bot_id, bot_id))
            if j < n - 1:
                t += _between(r, 5 * _S, 90 * _S)
                ev.append((t, MSG, CUSTOMER, 0, 0))
        if r() < 0.15:
            t += _between(r, 1 * _S, 30 * _S)
            ev.append((t, STATUS, OPEN, RESOLVED, bot_id))
            return ev
        t += _between(r, 1 * _S, 5 * _S)
        ev.append((t, ACT, 11, 0, bot_id))
    if r() < 0.06:
        return ev  # nobody answers: stays open
    pool = s.agent_pool
    agent = pool[int(r() * len(pool))]
    reply = cal.reply_time(t, rng, s.agent_mean_s)
    assign_t = max(t + 1000, reply - _between(r, 10 * _S, 300 * _S))
    ev.append((assign_t, ASSIGN, 0, agent, bot_id))
    t = max(reply, assign_t + 1000)
    ev.append((t, STATUS, OPEN, IN_PROCESS, agent))
    ev.append((t, MSG, AGENT, agent, agent))
    status = IN_PROCESS
    for _ in range(_between(r, 0, 5)):
        if r() < 0.35:
            t += _between(r, 5 * _S, 120 * _S)
            ev.append((t, STATUS, status, PENDING, agent))
            status = PENDING
            if r() < 0.3:
                ev.append((t, ACT, 8, 24, agent))
        if r() < 0.15:
            t += _between(r, 5 * _S, 300 * _S)
            ev.append((t, ACT, 1, 0, agent))
        if r() < 0.1:
            t += _between(r, 5 * _S, 60 * _S)
            ev.append((t, ACT, 7, int(r() * 5), agent))
        t += int(rng.expovariate(1 / 2400) * _S) + 20 * _S
        ev.append((t, MSG, CUSTOMER, 0, 0))
        if status == PENDING:
            ev.append((t, STATUS, PENDING, IN_PROCESS, bot_id))
            status = IN_PROCESS
        if s.kind != "mail" and r() < 0.3:
            t += _between(r, 3 * _S, 60 * _S)
            ev.append((t, MSG, CUSTOMER, 0, 0))
        if r() < 0.12:
            new = pool[int(r() * len(pool))]
            if new != agent:
                t += _between(r, 10 * _S, 600 * _S)
                ev.append((t, ASSIGN, agent, new, agent))
                agent = new
        if s.kind == "mail" and r() < 0.1:
            t += _between(r, 10 * _S, 600 * _S)
            ev.append((t, ACT, 3, int(r() * 7), agent))
        t = cal.reply_time(t, rng, s.agent_mean_s)
        ev.append((t, MSG, AGENT, agent, agent))
    if r() < 0.1:
        t += _between(r, 30 * _S, 600 * _S)
        ev.append((t, STATUS, status, PENDING, agent))
    elif r() < 0.9:
        t += _between(r, 30 * _S, 3600 * _S)
        ev.append((t, STATUS, status, RESOLVED, agent))
        ev.append((t, ASSIGN, agent, 0, agent))
        if r() < 0.3:
            ev.append((t, ACT, 21, 0, bot_id))
        if r() < 0.1:
            t += int(rng.expovariate(1 / 86_400) * _S) + 60 * _S
            ev.append((t, MSG, CUSTOMER, 0, 0))
            ev.append((t, STATUS, RESOLVED, OPEN, bot_id))
            t = cal.reply_time(t, rng, s.agent_mean_s)
            ev.append((t, ASSIGN, 0, agent, bot_id))
            ev.append((t, STATUS, OPEN, IN_PROCESS, agent))
            ev.append((t, MSG, AGENT, agent, agent))
            if r() < 0.7:
                t += _between(r, 30 * _S, 3600 * _S)
                ev.append((t, STATUS, IN_PROCESS, RESOLVED, agent))
                ev.append((t, ASSIGN, agent, 0, agent))
    return ev


def _between(r, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi) from ``r()``; ``Random.randrange`` is several times slower."""
    return lo + int(r() * (hi - lo))
