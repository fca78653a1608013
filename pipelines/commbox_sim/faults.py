"""Throttling and fault injection: a token bucket, per-request fault draws, broken payloads.

All randomness comes from one ``Random(fault_seed)``, drawn in request order.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

from .config import SimConfig


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` stored; a request takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate

    def peek(self) -> tuple[int, float]:
        """Whole tokens left and the seconds until the next one (0 while one is left)."""
        with self.lock:
            tokens = min(self.burst, self.tokens + (time.monotonic() - self.stamp) * self.rate)
        return int(tokens), 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


@dataclass
class Draw:
    """What happens to one request."""

    status_fault: int = 0  # 500/502/503 instead of the answer
    html200: bool = False
    delivery: str | None = None  # "reset", "truncate", "slow"
    bad_payload: str | None = None
    delay_s: float = 0.0


class Faults:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = Random(cfg.fault_seed)
        self.lock = threading.Lock()
        self.bucket: TokenBucket | None = None
        self.reconfigure(cfg)

    def reconfigure(self, cfg: SimConfig) -> None:
        old = self.cfg
        self.cfg = cfg
        if cfg.fault_seed != old.fault_seed:
            self.rng = Random(cfg.fault_seed)
        if cfg.rate_limit_rps > 0:
            if self.bucket is None or (self.bucket.rate, self.bucket.burst) != (
                cfg.rate_limit_rps,
                cfg.rate_limit_burst,
            ):
                self.bucket = TokenBucket(cfg.rate_limit_rps, cfg.rate_limit_burst)
        else:
            self.bucket = None
        self.fail_re = re.compile(cfg.fail_path_regex) if cfg.fail_path_regex else None
        self.bad_re = re.compile(cfg.bad_payload_path_regex) if cfg.bad_payload_path_regex else None

    def throttle(self) -> int | None:
        """Retry-After seconds when this request must get a 429, else None."""
        cfg = self.cfg
        if cfg.quota_exhausted:
            return cfg.retry_after_override or 60
        if self.bucket is None:
            return None
        wait = self.bucket.take()
        if wait <= 0:
            return None
        return cfg.retry_after_override or max(1, math.ceil(wait))

    def rate_limit_headers(self) -> list[tuple[str, str]]:
        """The bucket as `rate_limit_headers` describes it, after this request took its token.

        "ietf" states the rate as a policy of `q` requests per `w` seconds (draft 7 of the IETF
        RateLimit fields); "x-ratelimit" gives only the bucket's size, what is left and the whole
        seconds until the next token, as many APIs do without saying the window."""
        kind = self.cfg.rate_limit_headers
        if not kind or self.bucket is None:
            return []
        left, wait = self.bucket.peek()
        reset = str(math.ceil(wait))
        if kind == "x-ratelimit":
            return [
                ("X-RateLimit-Limit", str(self.bucket.burst)),
                ("X-RateLimit-Remaining", str(left)),
                ("X-RateLimit-Reset", reset),
            ]
        rate = self.bucket.rate
        window = 1 if float(rate).is_integer() else 60
        quota = round(rate * window)
        return [
            ("RateLimit-Limit", str(quota)),
            ("RateLimit-Remaining", str(left)),
            ("RateLimit-Reset", reset),
            ("RateLimit-Policy", f"{quota};w={window}"),
        ]

    def draw(self, target: str) -> Draw:
        """Decide the faults for one request; ``target`` is the path with its query string."""
        cfg = self.cfg
        d = Draw()
        with self.lock:
            rnd = self.rng.random
            if self.fail_re is not None and self.fail_re.search(target):
                d.status_fault = 500
            elif cfg.fault_5xx_rate and rnd() < cfg.fault_5xx_rate:
                d.status_fault = (500, 502, 503)[int(rnd() * 3)]
            elif cfg.fault_html200_rate and rnd() < cfg.fault_html200_rate:
                d.html200 = True
            if cfg.bad_payload and (self.bad_re is None or self.bad_re.search(target)):
                rate = 1.0 if cfg.bad_payload_rate is None else cfg.bad_payload_rate
                if rate >= 1.0 or rnd() < rate:
                    d.bad_payload = cfg.bad_payload
            if cfg.fault_reset_rate and rnd() < cfg.fault_reset_rate:
                d.delivery = "reset"
            elif cfg.fault_truncate_rate and rnd() < cfg.fault_truncate_rate:
                d.delivery = "truncate"
            elif cfg.fault_slow_body_rate and rnd() < cfg.fault_slow_body_rate:
                d.delivery = "slow"
            if cfg.latency_ms or cfg.latency_jitter_ms:
                d.delay_s = (cfg.latency_ms + rnd() * cfg.latency_jitter_ms) / 1000.0
        return d


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The upstream server returned an invalid response.</p>"
    b"<hr><address>nginx</address></body></html>\n"
)

_ID_KEYS = ("objectId", "id", "object_id")


def corrupt(kind: str, envelope: dict[str, Any]) -> bytes:
    """Serialise ``envelope`` broken in the way ``kind`` names (the list-only kinds are done upstream)."""
    if kind == "invalid_json":
        body = orjson.dumps(envelope)
        return body[: max(10, len(body) // 2)] + b',"data":[{'
    if kind == "empty_body":
        return b""
    if kind == "data_null":
        envelope["data"] = None
        return orjson.dumps(envelope)
    items = envelope.get("data")
    rows = items if isinstance(items, list) else [items] if isinstance(items, dict) else []
    if kind == "missing_id":
        for row in rows:
            if isinstance(row, dict):
                for key in _ID_KEYS:
                    row.pop(key, None)
    elif kind == "wrong_types":
        for row in rows:
            if isinstance(row, dict):
                for key in _ID_KEYS:
                    if key in row:
                        row[key] = {"value": row[key]}
                for key in ("createdTime", "updatedTime"):
                    if key in row:
                        row[key] = 1_700_000_000
                if "statusId" in row:
                    row["statusId"] = "Open"
                if "childs" in row:
                    row["childs"] = "see attachment"
    elif kind == "invalid_dates":
        bad = ("0001-01-01T00:00:00", "2024-13-45T25:61:00Z", "not a date", "31/02/2024 10:00")
        for n, row in enumerate(rows):
            if isinstance(row, dict):
                for key in ("createdTime", "updatedTime", "closedTime", "closeTime"):
                    if key in row:
                        row[key] = bad[n % len(bad)]
    elif kind == "invalid_utf8":
        body = orjson.dumps(envelope)
        pos = body.find(b'"message":"')
        pos = pos + 11 if pos >= 0 else max(0, len(body) - 2)
        if pos == max(0, len(body) - 2):
            pos = body.find(b'"description":"') + 15
        return body[:pos] + b"\xff\xfe\xc3(" + body[pos:]
    return orjson.dumps(envelope)
