"""Simulator configuration: every switch, with its default, in one dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Each quirk can be turned off on its own (``quirks_off``) or all together (``quirks=False``).
QUIRKS: dict[str, str] = {
    "key_drift": "field names drift between endpoints and variants (streamid, substreamid, closeTime, id, object_id, Locale)",
    "childs_under_user": "Get Object nests `childs` inside `user` for some objects, as the vendor example does",
    "string_numbers": 'numbers as strings and strings as numbers ("4", "5", "528986", phone1 as a number)',
    "user_id_comma": 'some users served with an id like "1769668,"',
    "null_strings": 'empty values as "null", "null,", "" or JSON null',
    "lone_child_object": "a conversation with one child serves `childs` as an object, not a list",
    "invalid_content_json": "`content` sometimes not valid JSON ('\"isConnected\"true', a string wrapped in { })",
    "seven_digit_times": "timestamps with seven fractional digits and Z (off: six digits and Z)",
    "zoneless_activity_times": "activity createdTime without a zone (off: with Z)",
    "html_messages": "message bodies are HTML with &nbsp;, <br> and quoted e-mail threads (off: plain text)",
    "status_as_string": 'envelope status sometimes the string "200" (off: always the number)',
}

# Rate-limit headers the simulator can send with every answer under a rate limit (see faults.py).
RATE_LIMIT_HEADERS = ("", "ietf", "x-ratelimit")

BAD_PAYLOADS = (
    "invalid_json",
    "empty_body",
    "data_null",
    "missing_id",
    "oversize_page",
    "wrong_types",
    "invalid_dates",
    "invalid_utf8",
    "duplicate_across_pages",
)

# How the list answers includeActivityLog, and /objects/{id}/activities without activityType: the
# docs document the first and are silent on the second, so each reading is a switch.
LIST_ACTIVITY_LOGS = ("whole", "ignored", "newest")
UNTYPED_ACTIVITIES = ("all", "refused", "one_type")

# Switches that only shape the generated data; changing them at runtime is refused.
GENERATION_FIELDS = frozenset(
    {"seed", "conversations", "days", "streams", "end", "bursts", "crowded_seconds", "crowded_size"}
)

# A profile is a preset of switches. Only the switches named here can come from a profile: they
# default to None ("the profile decides"), so a switch given explicitly beside a profile wins even
# when its value equals the plain default.
PROFILE_DEFAULTS: dict[str, bool] = {
    "documented_keys": False,
    "list_child_sender": True,
    "omit_nulls": False,
    "documented_status": False,
    "lenient_page_numbers": False,
}
PROFILES: dict[str, dict[str, bool]] = {
    # what this simulator always served: kinder than the vendor's documents
    "default": {},
    # every endpoint in the shape of the vendor's example for it (see docs/simulator-profiles.md)
    "docs": {
        "documented_keys": True,
        "list_child_sender": False,
        "omit_nulls": True,
        "documented_status": True,
    },
    # 1-based pages that answer pageNumber 0 (and negative pages) as page 1
    "lenient-paging": {"lenient_page_numbers": True},
}


@dataclass
class SimConfig:
    """All simulator settings. Generation fields are fixed; the rest can change via ``configure``."""

    # preset of switches (PROFILES); switches given beside it override it
    profile: str = "default"
    # data generation
    seed: int = 7
    conversations: int = 2000
    days: int = 30
    streams: int = 4
    end: str | datetime = "2024-03-31T00:00:00Z"
    bursts: bool = True
    # seconds in the history where ``crowded_size`` conversations of one stream all change
    crowded_seconds: int = 0
    crowded_size: int = 40
    api_key: str = "demo-key"
    # clock: False freezes it at ``end`` (moved only by ``advance``), for byte-identical replays
    clock_running: bool = True
    # shapes
    quirks: bool = True
    quirks_off: frozenset[str] = field(default_factory=frozenset)
    # documented shapes (None: the profile decides; see PROFILE_DEFAULTS)
    documented_keys: bool | None = None  # items carry exactly the keys of the vendor's example
    list_child_sender: bool | None = None  # list childs carry ``user`` (the sender); Get Object always does
    omit_nulls: bool | None = None  # JSON null fields, envelope ``data`` included, are left out
    documented_status: bool | None = None  # envelope status typed as each endpoint's example
    omit_response_time: bool = False  # envelopes without ``response_time``
    # list endpoint semantics
    window_cap: bool = False
    ignore_time_filter: bool = False
    page_base: int = 1
    inclusive_end: bool = False
    max_page_size: int = 100
    # a pageNumber below page_base answers as the first page instead of 400
    lenient_page_numbers: bool | None = None
    # page n after the first starts n * page_overlap items earlier: consecutive pages share items
    page_overlap: int = 0
    # the list endpoint ignores pageNumber and status: always the first page, every status
    unpageable: bool = False
    # stricter accounts: 400 for a pageSize above max_page_size instead of clamping it, and only
    # these exact timeFilter values accepted (None: any spelling of created/updated/closed)
    strict_page_size: bool = False
    time_filter_values: tuple[str, ...] | None = None
    # includeActivityLog on the list: "whole" (every activity of every type, under ``activities``),
    # "ignored" (no ``activities`` key) or "newest" (only the newest ``list_activity_log_newest``)
    list_activity_log: str = "whole"
    list_activity_log_newest: int = 3
    # /objects/{id}/activities without activityType: "all" (every type), "refused" (400) or
    # "one_type" (as if activityType=``activities_untyped_type`` had been sent)
    activities_untyped: str = "all"
    activities_untyped_type: int = 2
    # SLA target behind /stats/streamsSLAExceptions
    sla_first_response_minutes: int = 60
    # throttling
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 10
    retry_after_override: int | None = None
    # "" none (as the vendor documents), "ietf" RateLimit-Limit/-Remaining/-Reset/-Policy (draft 7),
    # "x-ratelimit" X-RateLimit-Limit/-Remaining/-Reset (no window stated)
    rate_limit_headers: str = ""
    quota_exhausted: bool = False
    # latency
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # transport and server faults
    fault_seed: int = 0
    fault_5xx_rate: float = 0.0
    fault_reset_rate: float = 0.0
    fault_truncate_rate: float = 0.0
    fault_html200_rate: float = 0.0
    fault_slow_body_rate: float = 0.0
    slow_body_seconds: float = 2.0
    fail_path_regex: str | None = None
    # payload faults
    bad_payload: str | None = None
    bad_payload_rate: float | None = None
    bad_payload_path_regex: str | None = None
    # caches
    fragment_cache_size: int = 60_000

    def __post_init__(self) -> None:
        self.quirks_off = frozenset(self.quirks_off)
        preset = PROFILES.get(self.profile)
        if preset is None:
            raise ValueError(f"unknown profile {self.profile!r}; known: {sorted(PROFILES)}")
        for name, default in PROFILE_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, preset.get(name, default))
        self.validate()

    @classmethod
    def from_profile(cls, profile: str = "default", **switches: Any) -> SimConfig:
        """A configuration from a profile's preset, with ``switches`` overriding it.

        ``SimConfig.from_profile("docs", conversations=300, seed=3)`` equals
        ``SimConfig(profile="docs", conversations=300, seed=3)``; the class method reads better.
        """
        return cls(profile=profile, **switches)

    @property
    def end_dt(self) -> datetime:
        return parse_end(self.end)

    def quirk(self, name: str) -> bool:
        """True when quirk ``name`` is on."""
        return self.quirks and name not in self.quirks_off

    def validate(self) -> None:
        unknown = set(self.quirks_off) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirks: {sorted(unknown)}; known: {sorted(QUIRKS)}")
        if self.page_base not in (0, 1):
            raise ValueError("page_base must be 0 or 1")
        if self.max_page_size < 1:
            raise ValueError("max_page_size must be >= 1")
        if not 0 <= self.page_overlap < self.max_page_size:
            raise ValueError("page_overlap must be >= 0 and below max_page_size")
        if self.crowded_seconds < 0 or self.crowded_size < 1:
            raise ValueError("crowded_seconds >= 0 and crowded_size >= 1 are required")
        if self.rate_limit_headers not in RATE_LIMIT_HEADERS:
            raise ValueError(f"rate_limit_headers must be one of {RATE_LIMIT_HEADERS}")
        if self.list_activity_log not in LIST_ACTIVITY_LOGS:
            raise ValueError(f"list_activity_log must be one of {LIST_ACTIVITY_LOGS}")
        if self.list_activity_log_newest < 0:
            raise ValueError("list_activity_log_newest must be >= 0")
        if self.activities_untyped not in UNTYPED_ACTIVITIES:
            raise ValueError(f"activities_untyped must be one of {UNTYPED_ACTIVITIES}")
        if self.bad_payload is not None and self.bad_payload not in BAD_PAYLOADS:
            raise ValueError(f"bad_payload must be one of {BAD_PAYLOADS}")
        if self.conversations < 0 or self.days < 1 or self.streams < 1:
            raise ValueError("conversations >= 0, days >= 1 and streams >= 1 are required")

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with ``changes``; a new ``profile`` re-applies its preset to the switches not given."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown switches: {sorted(unknown)}")
        if "profile" in changes:
            changes = {**{n: None for n in PROFILE_DEFAULTS}, **changes}
        return dataclasses.replace(self, **changes)


def parse_end(value: str | datetime) -> datetime:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
