"""``python -m pipelines.commbox_sim`` / ``commbox-etl simulate``: serve the simulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .config import (
    BAD_PAYLOADS,
    LIST_ACTIVITY_LOGS,
    PROFILES,
    QUIRKS,
    RATE_LIMIT_HEADERS,
    UNTYPED_ACTIVITIES,
    SimConfig,
)
from .simulator import Simulator


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="commbox-etl simulate", description="Serve the CommBox API simulator on loopback."
    )
    d = SimConfig()
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8765, help="0 picks a free port (the real one is printed)")
    g.add_argument("--ready-file", type=Path, help="write the base URL to this file once listening")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=d.profile,
        help="preset of switches (docs: shaped exactly as the vendor's examples; lenient-paging: "
        "page 0 answers as page 1); flags given beside it override it",
    )
    g = p.add_argument_group("data")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--conversations", type=int, default=d.conversations)
    g.add_argument("--days", type=int, default=d.days)
    g.add_argument("--streams", type=int, default=d.streams)
    g.add_argument("--end", default=d.end, help="ISO time the history ends at; the clock starts there")
    g.add_argument("--no-bursts", action="store_true", help="no burst hours")
    g.add_argument(
        "--crowded-seconds",
        type=int,
        default=d.crowded_seconds,
        help="seconds in the history where many conversations of one stream change at once",
    )
    g.add_argument(
        "--crowded-size",
        type=int,
        default=d.crowded_size,
        help="conversations changed in each crowded second",
    )
    g.add_argument("--api-key", default=d.api_key)
    g.add_argument("--frozen-clock", action="store_true", help="the clock moves only via /_sim/advance")
    g = p.add_argument_group("semantics")
    g.add_argument("--no-quirks", action="store_true", help="serve clean, canonical shapes")
    g.add_argument(
        "--quirk-off", action="append", default=[], choices=sorted(QUIRKS), help="turn one quirk off"
    )
    g.add_argument("--window-cap", action="store_true", help="a time window returns at most 100 objects")
    g.add_argument("--ignore-time-filter", action="store_true", help="windows always apply to createdTime")
    g.add_argument("--page-base", type=int, choices=(0, 1), default=d.page_base)
    g.add_argument(
        "--inclusive-end", action="store_true", help="windows are [start, end] instead of [start, end)"
    )
    g.add_argument("--max-page-size", type=int, default=d.max_page_size)
    bool_flag = argparse.BooleanOptionalAction
    g.add_argument(
        "--lenient-page-numbers",
        action=bool_flag,
        help="a pageNumber below the base answers as the first page (default: the profile's)",
    )
    g.add_argument(
        "--page-overlap",
        type=int,
        default=d.page_overlap,
        help="each page starts this many items before the previous one ended",
    )
    g.add_argument(
        "--unpageable", action="store_true", help="the list ignores pageNumber and status (always page 1)"
    )
    g.add_argument("--strict-page-size", action="store_true", help="400 for a pageSize above the max")
    g.add_argument(
        "--time-filter-values", help="comma list of the only timeFilter values accepted (others: 400)"
    )
    g.add_argument(
        "--list-activity-log",
        choices=LIST_ACTIVITY_LOGS,
        default=d.list_activity_log,
        help="includeActivityLog on the list: every activity, ignored (no key) or the newest N only",
    )
    g.add_argument(
        "--list-activity-log-newest",
        type=int,
        default=d.list_activity_log_newest,
        help="N for --list-activity-log newest",
    )
    g.add_argument(
        "--activities-untyped",
        choices=UNTYPED_ACTIVITIES,
        default=d.activities_untyped,
        help="/objects/{id}/activities without activityType: every type, 400, or one type only",
    )
    g.add_argument(
        "--activities-untyped-type",
        type=int,
        default=d.activities_untyped_type,
        help="the type --activities-untyped one_type answers",
    )
    g = p.add_argument_group("shapes (default: the profile's)")
    g.add_argument(
        "--documented-keys", action=bool_flag, help="items carry exactly the keys of the vendor's example"
    )
    g.add_argument("--list-child-sender", action=bool_flag, help="list childs carry `user` (the sender)")
    g.add_argument("--omit-nulls", action=bool_flag, help="leave null fields out of the JSON")
    g.add_argument(
        "--documented-status", action=bool_flag, help="envelope status typed as each endpoint's example"
    )
    g.add_argument("--omit-response-time", action="store_true", help="envelopes without response_time")
    g = p.add_argument_group("throttling and faults")
    g.add_argument("--rps", type=float, default=0.0, help="token-bucket rate limit (0 = off)")
    g.add_argument("--burst", type=int, default=d.rate_limit_burst, help="token-bucket size")
    g.add_argument("--retry-after", type=int, help="force this Retry-After on every 429")
    g.add_argument("--quota-exhausted", action="store_true", help="every request gets 429")
    g.add_argument(
        "--rate-limit-headers",
        choices=[kind for kind in RATE_LIMIT_HEADERS if kind],
        help="send the bucket's state in RateLimit-* (ietf) or X-RateLimit-* headers",
    )
    g.add_argument("--latency-ms", type=float, default=0.0)
    g.add_argument("--latency-jitter-ms", type=float, default=0.0)
    g.add_argument("--fault-seed", type=int, default=0)
    g.add_argument("--fault-5xx", type=float, default=0.0, metavar="RATE")
    g.add_argument("--fault-reset", type=float, default=0.0, metavar="RATE")
    g.add_argument("--fault-truncate", type=float, default=0.0, metavar="RATE")
    g.add_argument("--fault-html200", type=float, default=0.0, metavar="RATE")
    g.add_argument("--fault-slow-body", type=float, default=0.0, metavar="RATE")
    g.add_argument("--slow-body-seconds", type=float, default=d.slow_body_seconds)
    g.add_argument("--fail-path-regex")
    g.add_argument("--bad-payload", choices=BAD_PAYLOADS)
    g.add_argument("--bad-payload-rate", type=float)
    g.add_argument("--bad-payload-path-regex")
    return p


def config_from_args(a: argparse.Namespace) -> SimConfig:
    return SimConfig.from_profile(
        a.profile,
        crowded_seconds=a.crowded_seconds,
        crowded_size=a.crowded_size,
        lenient_page_numbers=a.lenient_page_numbers,
        page_overlap=a.page_overlap,
        unpageable=a.unpageable,
        documented_keys=a.documented_keys,
        list_child_sender=a.list_child_sender,
        omit_nulls=a.omit_nulls,
        documented_status=a.documented_status,
        omit_response_time=a.omit_response_time,
        seed=a.seed,
        conversations=a.conversations,
        days=a.days,
        streams=a.streams,
        end=a.end,
        bursts=not a.no_bursts,
        api_key=a.api_key,
        clock_running=not a.frozen_clock,
        quirks=not a.no_quirks,
        quirks_off=frozenset(a.quirk_off),
        window_cap=a.window_cap,
        ignore_time_filter=a.ignore_time_filter,
        page_base=a.page_base,
        inclusive_end=a.inclusive_end,
        max_page_size=a.max_page_size,
        strict_page_size=a.strict_page_size,
        time_filter_values=tuple(a.time_filter_values.split(",")) if a.time_filter_values else None,
        list_activity_log=a.list_activity_log,
        list_activity_log_newest=a.list_activity_log_newest,
        activities_untyped=a.activities_untyped,
        activities_untyped_type=a.activities_untyped_type,
        rate_limit_rps=a.rps,
        rate_limit_burst=a.burst,
        retry_after_override=a.retry_after,
        rate_limit_headers=a.rate_limit_headers or "",
        quota_exhausted=a.quota_exhausted,
        latency_ms=a.latency_ms,
        latency_jitter_ms=a.latency_jitter_ms,
        fault_seed=a.fault_seed,
        fault_5xx_rate=a.fault_5xx,
        fault_reset_rate=a.fault_reset,
        fault_truncate_rate=a.fault_truncate,
        fault_html200_rate=a.fault_html200,
        fault_slow_body_rate=a.fault_slow_body,
        slow_body_seconds=a.slow_body_seconds,
        fail_path_regex=a.fail_path_regex,
        bad_payload=a.bad_payload,
        bad_payload_rate=a.bad_payload_rate,
        bad_payload_path_regex=a.bad_payload_path_regex,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Prints one line with the base URL and the key, then blocks."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"commbox-sim: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(cfg)
    url = sim.start(host=args.host, port=args.port)
    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(url + "\n")
        tmp.replace(args.ready_file)  # atomic: a reader never sees a half-written file
    # A CLI entry point: this one line on stdout is the interface a parent process reads.
    print(f"CommBox simulator listening on {url} api_key={cfg.api_key}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
