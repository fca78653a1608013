"""The CommBox read API over the generated account: routing, validation, envelopes, caches, stats."""

from __future__ import annotations

import re
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from .data import IN_PROCESS, OPEN, PENDING
from .faults import HTML_ERROR_PAGE, corrupt
from .shapes import drop_nulls

if TYPE_CHECKING:
    from .simulator import Simulator

DESCRIPTIONS = {
    200: "Operation successful",
    400: "Bad Request - The request could not be understood by the server. Incoming parameters might not be valid",
    401: "Unauthorized - The supplied credentials, if any, are not sufficient to access the resource",
    404: "Not found - The requested resource is not found",
    429: "Too Many Requests - Too many requests have been made in a short period of time (Throttling)",
    500: "Server Error - The server could not return the representation due to an internal server error",
    501: "Not Implemented - The requested operation is not supported",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip

TIME_FILTERS = {
    "created": "created", "createdtime": "created",
    "updated": "updated", "updatedtime": "updated",
    "closed": "closed", "closedtime": "closed", "closetime": "closed",
}  # fmt: skip
ORDERS = {
    "createdtime": "created",
    "closedtime": "closed",
    "prioritytime": "priority",
    "updatedtime": "updated",
}
OPEN_STATUSES = (OPEN, IN_PROCESS, PENDING)

_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in (
        ("objects", r"^/streams/(?P<stream>[^/]+)/objects/?$"),
        ("object", r"^/streams/(?P<stream>[^/]+)/objects/(?P<object>[^/]+)/?$"),
        ("transcript", r"^/streams/(?P<stream>[^/]+)/objects/(?P<object>[^/]+)/transcript/?$"),
        ("activities", r"^/objects/(?P<object>[^/]+)/activities/?$"),
        ("managers", r"^/managers/?$"),
        ("user", r"^/users/(?P<user>[^/]+)/?$"),
        ("stats_streams", r"^/stats/streams/?$"),
        ("stats_sla", r"^/stats/streamsSLAExceptions/?$"),
        ("availability", r"^/streams/(?P<stream>[^/]+)/streamavailability(?:/(?P<flag>[^/]+))?/?$"),
        ("systemstatus", r"^/core/systemstatus/?$"),
    )
]
# Known vendor paths that this simulator does not serve for reading: any method answers 501.
_WRITE_ONLY = re.compile(
    r"^/(streams/[^/]+/objects/[^/]+/(child|tags/[^/]+)|objects/[^/]+/(status/[^/]+|stream|content|activitylog"
    r"|remarks|indicators.*)|managers/.+|tags.*|sms/.+|whatsapp/.+|v2/.+|emarsys/.+|forms/.+|auth/ticket|automation/.+)/?$"
)


class ApiError(Exception):
    def __init__(self, status: int, description: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description or DESCRIPTIONS[status]


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delivery: str | None = None
    delay_s: float = 0.0


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.throttled = 0
        self.bytes_sent = 0
        # Requests per second of the machine's clock: what a rate ceiling promises is checked here.
        self.per_second: Counter[int] = Counter()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "total_requests": sum(self.requests.values()),
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "throttled": self.throttled,
            "faults": dict(self.faults),
            "bytes_sent": self.bytes_sent,
            "requests_per_second": {str(k): v for k, v in sorted(self.per_second.items())},
        }


class Api:
    """Turns one parsed HTTP request into a ``Reply``; the server only moves bytes."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.stats = Stats()
        self._fragments: OrderedDict[tuple, bytes] = OrderedDict()
        self._windows: OrderedDict[tuple, list[int]] = OrderedDict()

    def clear_caches(self) -> None:
        self._fragments.clear()
        self._windows.clear()

    # ------------------------------------------------------------------ entry point
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes, loopback: bool) -> Reply:
        path, _, qs = target.partition("?")
        if path.startswith("/_sim/"):
            if not loopback:
                return self._error(403, "admin endpoints answer loopback clients only")
            return self.sim._admin(method, path, qs, body)
        sim = self.sim
        cfg = sim.config
        route, params = _match(path)
        stats = self.stats
        stats.requests[route or ("not_implemented" if _WRITE_ONLY.match(path) else "unknown")] += 1
        stats.per_second[int(time.time())] += 1
        retry_after = sim.faults.throttle()
        if retry_after is not None:
            stats.throttled += 1
            limit_headers = sim.faults.rate_limit_headers()
            return self._count(self._error(429, headers=[("Retry-After", str(retry_after)), *limit_headers]))
        if route is None and not _WRITE_ONLY.match(path):
            return self._count(self._error(404))
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != cfg.api_key:
            return self._count(self._error(401))
        if method != "GET" or route is None:
            return self._count(self._error(501))
        draw = sim.faults.draw(target)
        if draw.status_fault:
            stats.faults[f"http_{draw.status_fault}"] += 1
            extra = [("Retry-After", "1")] if draw.status_fault == 503 else []
            reply = self._error(draw.status_fault, headers=extra)
        elif draw.html200:
            stats.faults["html200"] += 1
            reply = Reply(200, HTML_ERROR_PAGE, content_type="text/html; charset=utf-8")
        else:
            try:
                with sim.dataset.lock:
                    data = getattr(self, "_get_" + route)(params, _query(qs), draw.bad_payload)
                reply = self._ok(route, path, data, draw.bad_payload)
            except ApiError as exc:
                reply = self._error(exc.status, exc.description)
        if draw.delivery:
            stats.faults[draw.delivery] += 1
            reply.delivery = draw.delivery
        if draw.delay_s:
            reply.delay_s = draw.delay_s
        reply.headers.extend(sim.faults.rate_limit_headers())
        return self._count(reply)

    def _count(self, reply: Reply) -> Reply:
        self.stats.status[reply.status] += 1
        self.stats.bytes_sent += len(reply.body)
        return reply

    # ------------------------------------------------------------------ envelopes
    def _now(self) -> str:
        r = self.sim.renderer
        us = self.sim.clock.now_us()
        stamp = r.ts(us)
        return stamp if r.cfg.quirk("seven_digit_times") else stamp[:-1] + str((us * 7 + 3) % 10) + "Z"

    def _head(self, status: int | str, description: str) -> dict[str, Any]:
        head: dict[str, Any] = {"status": status, "description": description}
        if not self.sim.config.omit_response_time:
            head["response_time"] = self._now()
        return head

    def _error(self, status: int, description: str | None = None, headers: list | None = None) -> Reply:
        envelope = self._head(status, description or DESCRIPTIONS.get(status, ""))
        if not self.sim.config.omit_nulls:
            envelope["data"] = None
        return Reply(status, orjson.dumps(envelope), headers=headers or [])

    def _ok(self, route: str, path: str, data: bytes, bad: str | None) -> Reply:
        cfg = self.sim.config
        status: int | str = 200
        if cfg.documented_status:
            # the vendor's examples: the string "200" for activities, the number everywhere else
            status = "200" if route == "activities" else 200
        elif cfg.quirk("status_as_string") and (route == "activities" or zlib.crc32(path.encode()) % 3 == 0):
            status = "200"
        description = "System is operational" if route == "systemstatus" else DESCRIPTIONS[200]
        head = orjson.dumps(self._head(status, description))
        # an account that leaves out null fields leaves out a null ``data`` too
        body = head if data == b"null" and cfg.omit_nulls else head[:-1] + b',"data":' + data + b"}"
        if bad and bad not in ("oversize_page", "duplicate_across_pages"):
            self.stats.faults["bad_payload_" + bad] += 1
            body = corrupt(bad, orjson.loads(body))
        return Reply(200, body)

    # ------------------------------------------------------------------ helpers
    def _stream(self, raw: str) -> int:
        sid = _int(raw, 404)
        stream = self.sim.dataset.stream_by_id.get(sid)
        if stream is None:
            raise ApiError(404, f"Stream {raw} not found")
        return stream.index

    def _object(self, raw: str, stream_index: int | None) -> int:
        ds = self.sim.dataset
        i = ds.index_of.get(_int(raw, 404))
        if i is None or (stream_index is not None and ds.stream_ix[i] != stream_index):
            raise ApiError(404, f"Object {raw} not found")
        return i

    def _dumps(self, value: Any) -> bytes:
        """JSON of a rendered value, without null fields when the account leaves them out."""
        return orjson.dumps(drop_nulls(value) if self.sim.config.omit_nulls else value)

    def _fragment(self, kind: str, i: int, childs: bool, acts: bool) -> bytes:
        ds = self.sim.dataset
        cfg = self.sim.config
        # The shape is part of the key: a cached fragment must never outlive a shape switch.
        shape = (
            cfg.documented_keys,
            cfg.list_child_sender,
            cfg.omit_nulls,
            cfg.quirks,
            cfg.quirks_off,
            cfg.list_activity_log,
            cfg.list_activity_log_newest,
        )
        key = (kind, i, ds.obj_version[i], childs, acts, shape)
        frag = self._fragments.get(key)
        if frag is None:
            r = self.sim.renderer
            value = (r.list_object if kind == "list" else r.single_object)(
                i, include_childs=childs, include_activities=acts
            )
            frag = self._dumps(value)
            self._fragments[key] = frag
            if len(self._fragments) > self.sim.config.fragment_cache_size:
                self._fragments.popitem(last=False)
        return frag

    # ------------------------------------------------------------------ endpoints
    def _get_objects(self, p: dict[str, str], q: dict[str, str], bad: str | None) -> bytes:
        ds = self.sim.dataset
        cfg = self.sim.config
        k = self._stream(p["stream"])
        start, end = q.get("unixstarttime"), q.get("unixendtime")
        identity = q.get("useridentityid")
        prov_id, prov_type = q.get("identitystreamproviderid"), q.get("identitystreamprovidertype")
        if (start is None) != (end is None):
            raise ApiError(400, "unixStartTime and unixEndTime must be sent together")
        if (prov_id is None) != (prov_type is None):
            raise ApiError(
                400, "identityStreamProviderId and identityStreamProviderType must be sent together"
            )
        if start is None and identity is None and prov_id is None:
            raise ApiError(400, "A time range (unixStartTime, unixEndTime) or a user filter is required")
        if cfg.time_filter_values is not None and q.get("timefilter") not in (None, *cfg.time_filter_values):
            raise ApiError(400, f"timeFilter must be one of {', '.join(cfg.time_filter_values)}")
        time_filter = TIME_FILTERS.get((q.get("timefilter") or "created").lower())
        if time_filter is None:
            raise ApiError(400, "timeFilter must be created, updated or closed")
        if cfg.ignore_time_filter:
            time_filter = "created"
        order = ORDERS.get((q.get("order") or "createdtime").lower())
        if order is None:
            raise ApiError(400, "order must be one of createdtime, closedtime, prioritytime, updatedtime")
        sort = (q.get("sort") or "desc").lower()
        if sort not in ("asc", "desc"):
            raise ApiError(400, "sort must be asc or desc")
        page = _int(q.get("pagenumber"), 400) if q.get("pagenumber") not in (None, "") else cfg.page_base
        if page < cfg.page_base:
            if not cfg.lenient_page_numbers:
                raise ApiError(400, f"pageNumber starts at {cfg.page_base}")
            page = cfg.page_base  # a lenient account answers page 0 (and below) as its first page
        if cfg.unpageable:
            page = cfg.page_base
        size = _int(q.get("pagesize"), 400) if q.get("pagesize") not in (None, "") else 100
        if size < 1:
            raise ApiError(400, "pageSize must be positive")
        if cfg.strict_page_size and size > cfg.max_page_size:
            raise ApiError(400, f"pageSize must be at most {cfg.max_page_size}")
        size = min(size, cfg.max_page_size)
        statuses = None
        if q.get("status") and not cfg.unpageable:
            statuses = frozenset(_int(x, 400) for x in q["status"].split(",") if x.strip())
        sub = _int(q["substream"], 400) if q.get("substream") not in (None, "") else None
        childs = _bool(q.get("includechilds"))
        acts = _bool(q.get("includeactivitylog"))

        users: tuple[int, ...] | None = None
        if identity is not None or prov_id is not None:
            users = self._identity_filter(k, identity, prov_id, prov_type)
        window = None
        if start is not None:
            lo, hi = _int(start, 400), _int(end, 400)
            window = (lo * 1_000_000, (hi + (1 if cfg.inclusive_end else 0)) * 1_000_000)
        key = (k, time_filter, window, users, statuses, sub, order, sort, cfg.window_cap, ds.version)
        ids = self._windows.get(key)
        if ids is None:
            ids = self._select(k, time_filter, window, users, statuses, sub, order, sort)
            if cfg.window_cap and window is not None:
                ids = ids[:100]
            self._windows[key] = ids
            if len(self._windows) > 256:
                self._windows.popitem(last=False)
        # with page_overlap each page starts that many items before the previous one ended
        offset = (page - cfg.page_base) * max(1, size - cfg.page_overlap)
        if bad == "duplicate_across_pages" and offset:
            self.stats.faults["bad_payload_duplicate_across_pages"] += 1
            offset = max(0, offset - max(1, size // 10))
        chosen = ids[offset : offset + size]
        if bad == "oversize_page":
            self.stats.faults["bad_payload_oversize_page"] += 1
            extra = ids[offset + size : offset + 2 * size + 1] or ids[: size + 1]
            chosen = (chosen + extra)[: size + max(1, size // 2)]
            while chosen and len(chosen) <= size:
                chosen = chosen + chosen
        return b"[" + b",".join(self._fragment("list", i, childs, acts) for i in chosen) + b"]"

    def _identity_filter(
        self, k: int, identity: str | None, prov_id: str | None, prov_type: str | None
    ) -> tuple[int, ...]:
        ds = self.sim.dataset
        if identity is not None:
            owner = ds.identity_owner(_int(identity, 400))
            if owner is None:
                return ()
            u, ptype = owner
        else:
            ptype = _int(prov_type, 400)
            u = -1
            for cand in range(ds.n_users):  # linear, but only for this rare lookup
                prof = ds.user_profile(cand)
                if any(
                    x["provider_id"] == prov_id and x["provider_type"] == ptype for x in prof["identities"]
                ):
                    u = cand
                    break
            if u < 0:
                return ()
        if ds.streams[k].provider_type != ptype:
            return ()
        return tuple(ds.objects_of_identity(k, u))

    def _select(self, k, time_filter, window, users, statuses, sub, order, sort) -> list[int]:
        ds = self.sim.dataset
        if window is not None:
            ids = ds.window(k, time_filter, window[0], window[1])
            if users is not None:
                allowed = set(users)
                ids = [i for i in ids if i in allowed]
        else:
            ids = list(users or ())
        if statuses is not None:
            ids = [i for i in ids if ds.status[i] in statuses]
        if sub is not None:
            ids = [i for i in ids if ds.sub[i] == sub]
        values = {"created": ds.created, "updated": ds.updated, "closed": ds.closed, "priority": ds.priority}[
            order
        ]
        oid = ds.oid
        return sorted(ids, key=lambda i: (values[i], oid[i]), reverse=sort == "desc")

    def _get_object(self, p, q, bad) -> bytes:
        k = self._stream(p["stream"])
        i = self._object(p["object"], k)
        frag = self._fragment("single", i, _bool(q.get("includechilds")), _bool(q.get("includeactivitylog")))
        return b"[" + frag + b"]"

    def _get_transcript(self, p, q, bad) -> bytes:
        k = self._stream(p["stream"])
        i = self._object(p["object"], k)
        return self._dumps([self.sim.renderer.transcript(i)])

    def _get_activities(self, p, q, bad) -> bytes:
        i = self._object(p["object"], None)
        raw = q.get("activitytype")
        atype = _int(raw, 400) if raw not in (None, "") else None
        cfg = self.sim.config
        if atype is None and cfg.activities_untyped == "refused":
            raise ApiError(400, "activityType is required")
        if atype is None and cfg.activities_untyped == "one_type":
            atype = cfg.activities_untyped_type
        ds = self.sim.dataset
        return self._dumps(self.sim.renderer.activities(ds.detail(i), atype))

    def _get_managers(self, p, q, bad) -> bytes:
        r = self.sim.renderer
        return self._dumps([r.manager(m) for m in self.sim.dataset.managers])

    def _get_user(self, p, q, bad) -> bytes:
        ds = self.sim.dataset
        u = ds.user_index(_int(p["user"].rstrip(","), 404))
        if u is None:
            raise ApiError(404, f"User {p['user']} not found")
        return self._dumps(self.sim.renderer.user(u))

    def _open_groups(self, predicate=None) -> list[dict[str, int]]:
        ds = self.sim.dataset
        counts: Counter[tuple[int, int, int, int]] = Counter()
        for i, status in enumerate(ds.status):
            if status in OPEN_STATUSES and (predicate is None or predicate(i)):
                s = ds.streams[ds.stream_ix[i]]
                counts[(s.module_id, s.stream_id, ds.sub[i], status)] += 1
        return [
            {"moduleId": m, "streamId": s, "subStreamId": sub, "statusId": st, "c": c}
            for (m, s, sub, st), c in sorted(counts.items())
        ]

    def _get_stats_streams(self, p, q, bad) -> bytes:
        return self._dumps(self._open_groups())

    def _get_stats_sla(self, p, q, bad) -> bytes:
        ds = self.sim.dataset
        now = self.sim.clock.now_us()
        target = self.sim.config.sla_first_response_minutes * 60_000_000

        def waited(i: int) -> int:
            return (ds.first_resp[i] or now) - ds.created[i]

        breached = self._open_groups(lambda i: waited(i) > target)
        critical = self._open_groups(lambda i: not ds.first_resp[i] and 0.75 * target < waited(i) <= target)
        return self._dumps([{"Item1": breached}, {"Item2": critical}])

    def _get_availability(self, p, q, bad) -> bytes:
        k = self._stream(p["stream"])
        flag = p.get("flag")
        if flag is None:
            flag = q.get("ignoreautomationexsistance")
        if flag is None or flag.lower() not in ("true", "false"):
            raise ApiError(400, "ignoreAutomationExsistance (true/false) is required")
        return self._dumps({"state": self.sim.availability(k, flag.lower() == "true")})

    def _get_systemstatus(self, p, q, bad) -> bytes:
        return b"null"


def _match(path: str) -> tuple[str | None, dict[str, str]]:
    for name, pattern in _ROUTES:
        m = pattern.match(path)
        if m:
            return name, {k: v for k, v in m.groupdict().items() if v is not None}
    return None, {}


def _query(qs: str) -> dict[str, str]:
    if not qs:
        return {}
    return {k.lower(): v for k, v in parse_qsl(qs, keep_blank_values=True)}


def _int(raw: str | None, status: int) -> int:
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ApiError(status, f"not a number: {raw!r}") from None


def _bool(raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise ApiError(400, f"not a boolean: {raw!r}")
