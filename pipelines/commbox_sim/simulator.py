"""The ``Simulator`` facade: data + clock + HTTP server + switches + ground truth."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .api import Api, Reply
from .clock import SimClock, from_us
from .config import GENERATION_FIELDS, SimConfig
from .data import ACTIVITY_TYPES, AGENT, CUSTOMER, IN_PROCESS, OPEN, PENDING, Dataset
from .faults import Faults
from .render import Renderer
from .server import HttpServer


class Simulator:
    """A CommBox account served over HTTP on loopback.

    >>> sim = Simulator(SimConfig(seed=3, conversations=300))
    >>> url = sim.start()            # doctest: +SKIP
    >>> sim.stop()                   # doctest: +SKIP
    """

    def __init__(self, config: SimConfig | None = None, **switches: Any) -> None:
        cfg = config or SimConfig()
        if switches:
            cfg = cfg.replace(**switches)
        self.config = cfg
        self.dataset = Dataset(cfg)
        self.clock = SimClock(cfg.end_dt, running=cfg.clock_running)
        self.renderer = Renderer(self.dataset, cfg)
        self.faults = Faults(cfg)
        self.api = Api(self)
        self.truth = Truth(self)
        self._server: HttpServer | None = None
        self.base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def api_key(self) -> str:
        return self.config.api_key

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL (``port=0`` picks a free port)."""
        if self._server is not None:
            return self.base_url or ""
        server = HttpServer(self.api.handle, lambda: self.config.slow_body_seconds)
        real_port = server.start(host, port)
        self._server = server
        self.base_url = f"http://{host}:{real_port}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ runtime switches
    def configure(self, **switches: Any) -> SimConfig:
        """Change switches at runtime (faults, caps, quirks, rate limit, latency...)."""
        frozen = set(switches) & GENERATION_FIELDS
        if frozen:
            raise ValueError(f"{sorted(frozen)} shape the generated data; create a new Simulator instead")
        with self.dataset.lock:
            cfg = self.config.replace(**switches)
            if "clock_running" in switches:
                self.clock.set_running(cfg.clock_running)
            self.config = cfg
            self.dataset.cfg = cfg
            self.renderer.cfg = cfg
            self.faults.reconfigure(cfg)
            self.api.clear_caches()
        return cfg

    def mutate(
        self,
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
        """Change the account at ``clock.now()`` (minus ``backdate_seconds``); returns touched object ids per kind.

        ``bulk=N`` changes N conversations over ``bulk_streams`` streams (default: all) inside one
        and the same second, with mixed kinds of change (status change, closure, reassignment,
        new message; reopening when already resolved), as an automation rule would; their ids
        come back under ``"bulk"``.
        """
        return self.dataset.mutate(
            self.clock.now_us(),
            new=new,
            messages=messages,
            status_changes=status_changes,
            closures=closures,
            reassignments=reassignments,
            reopen=reopen,
            bulk=bulk,
            bulk_streams=bulk_streams,
            backdate_seconds=backdate_seconds,
        )

    def stats(self) -> dict[str, Any]:
        return self.api.stats.as_dict()

    def reset_stats(self) -> None:
        self.api.stats.reset()

    def availability(self, stream_index: int, ignore_automation: bool) -> int:
        """0 not active, 1 available, 2 busy, 3 unavailable, at ``clock.now()``."""
        ds = self.dataset
        s = ds.streams[stream_index]
        if s.bot and not ignore_automation:
            return 1
        now = self.clock.now_us()
        if not s.calendar.is_open(now):
            return 3
        waiting = sum(
            1
            for i in ds.window(stream_index, "created", now - 3_600_000_000, now + 1)
            if ds.status[i] == OPEN
        )
        return 2 if waiting > 3 * len(s.agent_pool) else 1

    # ------------------------------------------------------------------ admin surface (/_sim/...)
    def _admin(self, method: str, path: str, qs: str, body: bytes) -> Reply:
        q = dict(parse_qsl(qs))
        name = path[len("/_sim/") :].strip("/")
        try:
            payload = orjson.loads(body) if body.strip() else {}
            if name == "advance" and method == "POST":
                seconds = float(q.get("seconds", payload.get("seconds", 0)))
                result: Any = {"now": self.clock.advance(seconds).isoformat()}
            elif name == "mutate" and method == "POST":
                result = self.mutate(**payload)
            elif name == "configure" and method == "POST":
                if "quirks_off" in payload:
                    payload["quirks_off"] = frozenset(payload["quirks_off"])
                result = _jsonable(dataclasses.asdict(self.configure(**payload)))
            elif name == "config":
                result = _jsonable(dataclasses.asdict(self.config))
            elif name == "clock":
                result = {"now": self.clock.now().isoformat()}
            elif name == "stats":
                result = self.stats()
            elif name == "reset_stats" and method == "POST":
                self.reset_stats()
                result = {"ok": True}
            elif name.startswith("truth/"):
                kind = name.split("/", 1)[1]
                if kind not in (
                    "streams",
                    "objects",
                    "childs",
                    "activities",
                    "transcripts",
                    "users",
                    "managers",
                ):
                    return Reply(404, b'{"error":"unknown truth table"}')
                result = _jsonable(getattr(self.truth, kind)())
            else:
                return Reply(404, b'{"error":"unknown admin endpoint"}')
        except (TypeError, ValueError) as exc:
            return Reply(400, orjson.dumps({"error": str(exc)}))
        return Reply(200, orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))


class Truth:
    """Ground truth in canonical, quirk-free Python values (UTC datetimes, ints, ``None``)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def _ds(self) -> Dataset:
        return self.sim.dataset

    def streams(self) -> list[dict[str, Any]]:
        return [
            {
                "stream_id": s.stream_id,
                "name": s.name,
                "provider_type": s.provider_type,
                "timezone": s.timezone,
                "business_hours": dict(s.hours),
                "holidays": list(s.holidays),
                "sub_stream_ids": list(s.sub_streams),
                "has_bot": s.bot,
                "agent_ids": list(s.agent_pool),
            }
            for s in self._ds.streams
        ]

    def objects(self) -> list[dict[str, Any]]:
        ds = self._ds
        with ds.lock:
            out = []
            for i, oid in enumerate(ds.oid):
                s = ds.streams[ds.stream_ix[i]]
                out.append(
                    {
                        "object_id": oid,
                        "stream_id": s.stream_id,
                        "sub_stream_id": ds.sub[i],
                        "object_type": 5 if s.kind == "mail" else 4,
                        "status_id": ds.status[i],
                        "created_at": from_us(ds.created[i]),
                        "updated_at": from_us(ds.updated[i]),
                        "closed_at": from_us(ds.closed[i]) if ds.closed[i] else None,
                        "first_response_at": from_us(ds.first_resp[i]) if ds.first_resp[i] else None,
                        "last_response_at": from_us(ds.last_resp[i]) if ds.last_resp[i] else None,
                        "priority_at": from_us(ds.priority[i]),
                        "assigned_manager_id": ds.assigned[i] or None,
                        "last_assigned_manager_id": ds.last_assigned[i] or None,
                        "user_id": ds.user_id(ds.user[i]),
                        "user_identity_id": ds.identity_id(ds.user[i], s.provider_type),
                        "num_childs": ds.n_childs[i],
                        "is_open": ds.status[i] in (OPEN, IN_PROCESS, PENDING),
                    }
                )
            return out

    def _details(self):
        ds = self._ds
        with ds.lock:
            for i in range(len(ds.oid)):
                yield i, ds.detail(i)

    def childs(self) -> list[dict[str, Any]]:
        r = self.sim.renderer
        out = []
        for i, conv in self._details():
            for c in conv.childs:
                out.append(
                    {
                        "child_id": c["child_id"],
                        "object_id": conv.object_id,
                        "created_at": from_us(c["t"]),
                        "message": r.message(c),
                        "is_manager": c["role"] != CUSTOMER,
                        "is_bot": c["role"] not in (CUSTOMER, AGENT),
                        "manager_id": c["manager_id"] or None,
                        "user_id": self._ds.user_id(self._ds.user[i])
                        if c["role"] == CUSTOMER
                        else c["manager_id"],
                    }
                )
        return out

    def activities(self) -> list[dict[str, Any]]:
        out = []
        for _i, conv in self._details():
            for a in conv.activities:
                out.append(
                    {
                        "object_id": conv.object_id,
                        "activity_type": a["type"],
                        "activity_name": ACTIVITY_TYPES[a["type"]],
                        "created_at": from_us(a["t"] - a["t"] % 1_000_000),
                        "user_id": a["actor"] or self._ds.bot_id,
                        "data": dict(a["data"]),
                    }
                )
        return out

    def transcripts(self) -> list[dict[str, Any]]:
        r = self.sim.renderer
        return [
            {"object_id": conv.object_id, "transcript": r.transcript_text(conv)}
            for _i, conv in self._details()
        ]

    def users(self) -> list[dict[str, Any]]:
        ds = self._ds
        out = []
        for u in range(ds.n_users):
            p = dict(ds.user_profile(u))
            p["num_objects"] = len(ds.user_objects.get(u, ()))
            out.append(p)
        return out

    def managers(self) -> list[dict[str, Any]]:
        return [
            {
                "manager_id": m.manager_id,
                "identity_id": m.identity_id,
                "first_name": m.first_name,
                "last_name": m.last_name or None,
                "email": m.email,
                "permission_id": m.permission_id,
                "is_bot": m.permission_id == 5,
                "team_ids": list(m.teams),
                "profile_ids": list(m.profiles),
            }
            for m in self._ds.managers
        ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
