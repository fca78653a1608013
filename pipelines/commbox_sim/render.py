"""Entities -> vendor-shaped JSON values, with the vendor's quirks applied deterministically per object.

Every choice that varies between objects (which key-drift variant, which empty-value spelling,
whether ``content`` is broken) comes from a hash of ``(seed, object_id)``, so an object always
looks the same, and the shares are set so that every quirk shows up in any ~200 conversations.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import texts
from .clock import from_us
from .config import SimConfig
from .data import AGENT, BOT, CUSTOMER, Conversation, Dataset, Manager, mix
from .shapes import LIST_ITEM, SINGLE_ITEM, trim

_EMPTY_SPELLINGS = ("null,", "null", "", None)


class Renderer:
    def __init__(self, ds: Dataset, cfg: SimConfig) -> None:
        self.ds = ds
        self.cfg = cfg

    # ------------------------------------------------------------------ scalars
    def ts(self, us: int) -> str:
        """``2024-08-06T07:51:52.2581942Z``: seven digits (the seventh below the microsecond) and Z."""
        dt = from_us(us)
        frac = f"{dt.microsecond:06d}"
        if self.cfg.quirk("seven_digit_times"):
            frac += str((us * 7 + 3) % 10)
        return (
            f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{frac}Z"
        )

    def ts_activity(self, us: int) -> str:
        dt = from_us(us)
        s = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        return s if self.cfg.quirk("zoneless_activity_times") else s + "Z"

    def opt_ts(self, us: int, h: int) -> str | None:
        return self.ts(us) if us else self.empty(h)

    def empty(self, h: int) -> str | None:
        """An empty value: ``"null,"``, ``"null"``, ``""`` or JSON null (quirk), else JSON null."""
        if self.cfg.quirk("null_strings"):
            return _EMPTY_SPELLINGS[h % 4]
        return None

    def num(self, value: int, as_string: bool) -> int | str:
        return str(value) if as_string and self.cfg.quirk("string_numbers") else value

    def phone(self, value: str | None, h: int) -> int | str | None:
        if value is None:
            return self.empty(h)
        return int(value) if self.cfg.quirk("string_numbers") else value

    def message(self, child: dict[str, Any]) -> str:
        return child["html"] if self.cfg.quirk("html_messages") else child["text"]

    def object_hash(self, oid: int) -> int:
        return mix(self.ds.seed, 7, oid)

    def drift(self) -> bool:
        """Drifted key names (``streamid``, ``closeTime``, ``object_id``, ``Locale``, ``trasncript``).

        The vendor's examples use them, so documented shapes have them whatever the quirk says.
        """
        return self.cfg.quirk("key_drift") or bool(self.cfg.documented_keys)

    # ------------------------------------------------------------------ content strings
    def object_content(self, i: int, h: int) -> str:
        ds = self.ds
        s = ds.streams[ds.stream_ix[i]]
        first_assigned = ""
        if ds.last_assigned[i]:
            first_assigned = from_us(ds.first_resp[i] or ds.updated[i]).strftime("%Y-%m-%dT%H:%M:%S")
        if s.kind == "mail":
            value: dict[str, Any] = {
                "cc": [{"name": "", "address": ""}],
                "to": [{"name": "BumpYard", "address": s.address}],
                "subject": "checking up on you",
                "is_email": True,
                "languages": [{"Item1": "en", "Item2": ds.oid[i] % 100000}],
            }
        else:
            value = {
                "guidRT": f"{mix(ds.oid[i], 9):x}"[:25],
                "languages": [{"Item1": "en" if h % 3 else "he", "Item2": ds.oid[i] % 1_000_000}],
                "originUrl": "https://apps.commbox.com/Demo",
                "isConnected": True,
                "first_assigned_time": first_assigned,
                "dropOutAggregationState": 1,
            }
        text = orjson.dumps(value).decode()
        if self.cfg.quirk("invalid_content_json") and (h >> 16) % 6 == 0:
            if s.kind == "mail":
                return "{" + orjson.dumps(text).decode() + "}  "  # a JSON string wrapped in { }
            return text.replace('"isConnected":true', '"isConnected"true')
        return text

    def child_content(self, conv: Conversation, child: dict[str, Any], h: int) -> str:
        if child["subject"] is None:
            return "{}"
        text = orjson.dumps({"subject": "RE: " + child["subject"], "attachments": None}).decode()
        if self.cfg.quirk("invalid_content_json") and (h >> 20) % 5 == 0:
            return "{ " + orjson.dumps(text).decode() + " },   "
        return text

    # ------------------------------------------------------------------ people
    def customer(self, i: int) -> dict[str, Any]:
        return self.ds.user_profile(self.ds.user[i])

    def customer_identity(self, i: int, profile: dict[str, Any]) -> dict[str, Any]:
        ptype = self.ds.streams[self.ds.stream_ix[i]].provider_type
        return next(x for x in profile["identities"] if x["provider_type"] == ptype)

    def name(self, value: str | None, h: int) -> str | None:
        return value if value is not None else self.empty(h >> 3)

    def child_user(self, child: dict[str, Any], i: int, profile: dict[str, Any], h: int) -> dict[str, Any]:
        if child["role"] == CUSTOMER:
            ident = self.customer_identity(i, profile)
            return {
                "id": profile["user_id"],
                "managerId": 0,
                "isManager": False,
                "identity": {
                    "id": ident["identity_id"],
                    "streamProviderId": ident["provider_id"],
                    "streamProviderType": self.num(ident["provider_type"], True),
                    "firstName": profile["first_name"],
                    "lastName": profile["last_name"],
                    "thumbnailUrl": None,
                },
            }
        m = self.ds.manager_by_id[child["manager_id"]]
        return {
            "id": m.manager_id,
            "managerId": m.manager_id,
            "isManager": True,
            "identity": {
                "id": m.identity_id,
                "streamProviderId": m.email,
                "streamProviderType": 0,
                "firstName": m.first_name,
                "lastName": m.last_name or self.empty(h),
                "thumbnailUrl": None,
            },
        }

    # ------------------------------------------------------------------ childs
    def child(
        self, conv: Conversation, child: dict[str, Any], i: int, profile: dict, h: int, *, single: bool
    ) -> dict:
        """One message. ``single``: the Get Object shape (``object_id``), else the list shape (``objectId``)."""
        s = self.ds.streams[self.ds.stream_ix[i]]
        user = self.child_user(child, i, profile, h)
        ident = user["identity"]
        out: dict[str, Any] = {"id": child["child_id"]}
        out["object_id" if single and self.drift() else "objectId"] = conv.object_id
        out["content"] = self.child_content(conv, child, h ^ child["child_id"])
        out["message"] = self.message(child)
        out["createdTime"] = self.ts(child["t"])
        out["streamProviderId"] = ident["streamProviderId"] if child["role"] == CUSTOMER else s.address
        out["streamProviderType"] = self.num(s.provider_type, single)
        if not single:
            out["streamProviderEmail"] = (
                profile["email"] if child["role"] == CUSTOMER else ident["streamProviderId"]
            )
            out["firstName"] = ident["firstName"] if ident["firstName"] is not None else self.empty(h)
            out["lastName"] = ident["lastName"] if ident["lastName"] is not None else self.empty(h)
        if single or self.cfg.list_child_sender:
            out["user"] = user
        return out

    def childs(self, conv: Conversation, i: int, profile: dict, h: int, *, single: bool) -> Any:
        """Newest first; a lone child as an object (quirk)."""
        items = [self.child(conv, c, i, profile, h, single=single) for c in reversed(conv.childs)]
        if len(items) == 1 and self.cfg.quirk("lone_child_object"):
            return items[0]
        return items

    # ------------------------------------------------------------------ objects
    def _user_block(self, profile: dict[str, Any], h: int, *, locale_key: str) -> dict[str, Any]:
        return {
            "id": profile["user_id"],
            "uniqueId": self.num(profile["unique_id"], bool(h & 1)),
            "phone1": self.phone(profile["phone1"], h),
            "phone2": self.phone(profile["phone2"], h >> 2),
            "email": profile["email"],
            "firstName": self.name(profile["first_name"], h),
            "lastName": self.name(profile["last_name"], h),
            "gender": profile["gender"] if profile["gender"] else self.empty(h >> 4),
            "numberIdentities": len(profile["identities"]),
            locale_key: profile["locale"] if profile["locale"] else self.empty(h >> 5),
            "birthday": profile["birthday"] if profile["birthday"] else self.empty(h >> 6),
            "remarks": profile["remarks"] if profile["remarks"] else self.empty(h >> 7),
            "content": "{}",
        }

    def list_object(self, i: int, *, include_childs: bool, include_activities: bool) -> dict[str, Any]:
        """One object as Get Stream Objects serves it (variant A, or variant B for some objects)."""
        ds = self.ds
        oid = ds.oid[i]
        h = self.object_hash(oid)
        conv = ds.detail(i)
        s = ds.streams[ds.stream_ix[i]]
        profile = self.customer(i)
        ident = self.customer_identity(i, profile)
        last = conv.childs[-1]
        drift = self.drift()
        # Variant B of the vendor's list example documents a social post, not a conversation:
        # documented shapes serve every conversation as variant A.
        if drift and h % 5 == 0 and not self.cfg.documented_keys:
            out: dict[str, Any] = {
                "id": oid,
                "streamid": s.stream_id,
                "substreamid": ds.sub[i],
                "type": 4 if s.kind != "mail" else 5,
                "statusId": ds.status[i],
                "createdTime": self.ts(ds.created[i]),
                "updatedTime": self.ts(ds.updated[i]),
                "closedTime": self.opt_ts(ds.closed[i], h >> 40),
                "firstResponseTime": self.opt_ts(ds.first_resp[i], h >> 42),
                "lastResponseTime": self.opt_ts(ds.last_resp[i], h >> 44),
                "priorityTime": self.ts(ds.priority[i]),
                "streamProviderId": s.address,
                "streamProviderType": s.provider_type,
                "message": self.message(last),
                "content": self.object_content(i, h),
                "numChilds": self.num(len(conv.childs), True),
                "numTags": self.num(_num_tags(conv), True),
                "assignedManagerId": ds.assigned[i],
                "lastAssignedManagerId": ds.last_assigned[i],
                "user_identity": ident["identity_id"],
                "userStreamProviderId": ident["provider_id"],
                "userStreamProviderType": self.num(ident["provider_type"], True),
                "isManager": False,
                "user": {
                    "id": profile["user_id"],
                    "identity": {
                        "id": ident["identity_id"],
                        "streamProviderId": ident["provider_id"],
                        "streamProviderType": ident["provider_type"],
                        "streamProviderEmail": profile["email"],
                        "firstName": self.name(profile["first_name"], h),
                        "lastName": self.name(profile["last_name"], h),
                    },
                },
            }
        else:
            out = {
                "objectId": oid,
                "streamId": s.stream_id,
                "substreamId": ds.sub[i],
                "streamProviderId": s.address,
                "streamProviderType": s.provider_type,
                "user_identity": ident["identity_id"],
                "firstName": self.name(profile["first_name"], h),
                "lastName": self.name(profile["last_name"], h),
                "userStreamProviderId": ident["provider_id"],
                "userStreamProviderType": self.num(ident["provider_type"], True),
                "content": self.object_content(i, h),
                "message": self.message(last),
                "createdTime": self.ts(ds.created[i]),
                "updatedTime": self.ts(ds.updated[i]),
                "closedTime": self.opt_ts(ds.closed[i], h >> 40),
                "firstResponseTime": self.opt_ts(ds.first_resp[i], h >> 42),
                "lastResponseTime": self.opt_ts(ds.last_resp[i], h >> 44),
                "priorityTime": self.ts(ds.priority[i]),
                "statusId": ds.status[i],
                "assignedManagerId": ds.assigned[i],
                "lastAssignedManagerId": ds.last_assigned[i],
                "type": 4 if s.kind != "mail" else 5,
                "numTags": _num_tags(conv),
                "user": self._user_block(profile, h, locale_key="Locale" if drift else "locale"),
                "isManager": False,
            }
        if include_childs:
            out["childs"] = self.childs(conv, i, profile, h, single=False)
        if include_activities and self.cfg.list_activity_log != "ignored":
            log = self.activities(conv, None)
            if self.cfg.list_activity_log == "newest":
                # oldest first, as the full log: the newest N of it
                log = log[max(0, len(log) - self.cfg.list_activity_log_newest) :]
            out["activities"] = log
        return trim(out, LIST_ITEM) if self.cfg.documented_keys else out

    def single_object(self, i: int, *, include_childs: bool, include_activities: bool) -> dict[str, Any]:
        """One object as Get Object serves it (``streamid``, ``substreamid``, ``closeTime``, child ``object_id``)."""
        ds = self.ds
        oid = ds.oid[i]
        h = self.object_hash(oid)
        conv = ds.detail(i)
        s = ds.streams[ds.stream_ix[i]]
        profile = self.customer(i)
        ident = self.customer_identity(i, profile)
        drift = self.drift()
        out: dict[str, Any] = {
            "objectId": oid,
            "streamid" if drift else "streamId": s.stream_id,
            "substreamid" if drift else "substreamId": ds.sub[i],
            "streamProviderId": s.address,
            "streamProviderType": self.num(s.provider_type, True),
            "user_identity": self.num(ident["identity_id"], True),
            "firstName": self.name(profile["first_name"], h),
            "lastName": self.name(profile["last_name"], h),
            "userStreamProviderId": ident["provider_id"],
            "userStreamProviderType": self.num(ident["provider_type"], True),
            "content": self.object_content(i, h),
            "message": self.message(conv.childs[-1]),
            "createdTime": self.ts(ds.created[i]),
            "updatedTime": self.ts(ds.updated[i]),
            "closeTime" if drift else "closedTime": self.opt_ts(ds.closed[i], h >> 40),
            "firstResponseTime": self.opt_ts(ds.first_resp[i], h >> 42),
            "lastResponseTime": self.opt_ts(ds.last_resp[i], h >> 44),
            "priorityTime": self.ts(ds.priority[i]),
            "statusId": ds.status[i],
            "assignedManagerId": ds.assigned[i],
            "lastAssignedManagerId": ds.last_assigned[i],
            "type": 4 if s.kind != "mail" else 5,
            "numTags": _num_tags(conv),
            "isManager": False,
            "user": self._user_block(profile, h, locale_key="locale"),
        }
        if include_childs:
            childs = self.childs(conv, i, profile, h, single=True)
            if self.cfg.documented_keys or (self.cfg.quirk("childs_under_user") and (h >> 8) % 4 == 0):
                out["user"]["childs"] = childs
            else:
                out["childs"] = childs
        if include_activities:
            out["activities"] = self.activities(conv, None)
        return trim(out, SINGLE_ITEM) if self.cfg.documented_keys else out

    def transcript_text(self, conv: Conversation) -> str:
        """``\\n[2/29/2024 12:20:25 PM] \\nBot : \\nhello \\n...`` oldest first, plain text."""
        profile = self.customer(conv.index)
        customer = " ".join(x for x in (profile["first_name"], profile["last_name"]) if x) or profile["email"]
        parts = []
        for c in conv.childs:
            dt = from_us(c["t"])
            hour = dt.hour % 12 or 12
            stamp = f"{dt.month}/{dt.day}/{dt.year} {hour}:{dt.minute:02d}:{dt.second:02d} {'AM' if dt.hour < 12 else 'PM'}"
            if c["role"] == BOT:
                who = "Bot "
            elif c["role"] == AGENT:
                m = self.ds.manager_by_id[c["manager_id"]]
                who = f"{m.first_name} {m.last_name}".strip()
            else:
                who = customer
            parts.append(f"\n[{stamp}] \n{who}: \n{texts.html_to_text(c['html'])} ")
        return "".join(parts)

    def transcript(self, i: int) -> dict[str, Any]:
        ds = self.ds
        conv = ds.detail(i)
        h = self.object_hash(ds.oid[i])
        drift = self.drift()
        profile = self.customer(i)
        user = self._user_block(profile, h, locale_key="locale")
        del user["content"]
        return {
            "objectId": ds.oid[i],
            "streamid" if drift else "streamId": ds.streams[ds.stream_ix[i]].stream_id,
            "substreamid" if drift else "substreamId": ds.sub[i],
            "trasncript" if drift else "transcript": self.transcript_text(conv),
            "user": user,
        }

    # ------------------------------------------------------------------ activities
    def activities(self, conv: Conversation, activity_type: int | None) -> list[dict[str, Any]]:
        out = []
        oid_value = self.num(conv.object_id, True)
        for a in conv.activities:
            if activity_type is not None and a["type"] != activity_type:
                continue
            m = self.ds.manager_by_id.get(a["actor"]) or self.ds.manager_by_id[self.ds.bot_id]
            out.append(
                {
                    "objectId": oid_value,
                    "user": {
                        "id": m.manager_id,
                        "first_name": m.first_name,
                        "last_name": m.last_name,
                        "identity": {"identityId": m.identity_id, "thumbnailUrl": ""},
                    },
                    "type": a["type"],
                    "data": orjson.dumps(a["data"]).decode(),
                    "createdTime": self.ts_activity(a["t"]),
                }
            )
        return out

    # ------------------------------------------------------------------ account-level
    def manager(self, m: Manager) -> dict[str, Any]:
        string_id = self.cfg.quirk("string_numbers") and m.manager_id % 2 == 0
        out: dict[str, Any] = {
            "id": m.manager_id,
            "identityId": str(m.identity_id) if string_id else m.identity_id,
            "streamProviderId": m.email,
            "thumbnailUrl": None,
            "brandId": m.brand_id,
            "permissionId": m.permission_id,
            "firstName": m.first_name,
            "lastName": m.last_name,
            "email": m.email,
            "userName": m.email.split("@")[0],
        }
        if m.teams:
            out["team"] = ",".join(str(t) for t in m.teams)
        out["teamId"] = m.teams[0] if m.teams else 0
        out["teamName"] = m.team_names[m.teams[0]] if m.teams else ""
        out["profiles"] = ",".join(str(p) for p in m.profiles)
        out["maxSyncObjectsAssignments"] = m.max_sync
        out["maxAsyncObjectsAssignments"] = m.max_async
        return out

    def user(self, u: int) -> dict[str, Any]:
        ds = self.ds
        profile = ds.user_profile(u)
        h = mix(ds.seed, 8, u)
        uid: int | str = profile["user_id"]
        if self.cfg.quirk("user_id_comma") and h % 4 == 0:
            uid = f"{uid},"
        objects = ds.user_objects.get(u, [])
        identities = []
        for ident in profile["identities"]:
            n = sum(1 for i in objects if ds.streams[ds.stream_ix[i]].provider_type == ident["provider_type"])
            identities.append(
                {
                    "id": ident["identity_id"],
                    "userId": profile["user_id"],
                    "numObjects": n,
                    "userName": None,
                    "streamProviderEmail": profile["email"],
                    "streamProviderId": self.phone(ident["provider_id"], h)
                    if ident["provider_type"] in (5, 7)
                    else ident["provider_id"],
                    "streamProviderType": ident["provider_type"],
                    "firstName": profile["first_name"],
                    "lastName": profile["last_name"],
                    "thumbnailUrl": None,
                    "content": "{}",
                }
            )
        return {
            "id": uid,
            "firstName": self.name(profile["first_name"], h),
            "lastName": self.name(profile["last_name"], h),
            "gender": profile["gender"] if profile["gender"] else self.empty(h >> 4),
            "phone1": self.phone(profile["phone1"], h),
            "phone2": self.phone(profile["phone2"], h >> 2) if profile["phone2"] else None,
            "uniqueId": self.num(profile["unique_id"], True),
            "email": profile["email"],
            "content": "{}",
            "permissionId": 1,
            "numIdentities": len(identities),
            "numObjects": len(objects),
            "locale": profile["locale"] if profile["locale"] else self.empty(h >> 5),
            "remarks": profile["remarks"] if profile["remarks"] else self.empty(h >> 7),
            "userTags": '[{"id":1007,"name":"test","group_name":null}]' if h % 3 == 0 else "[]",
            "teamId": 0,
            "identities": identities,
        }


def _num_tags(conv: Conversation) -> int:
    return sum(1 for a in conv.activities if a["type"] == 7)
