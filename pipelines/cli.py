"""`commbox-etl`: thin entry points over `pipelines.ops` (runner, status, doctor), `pipelines.reporting` and the simulator."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from dlt.pipeline.exceptions import PipelineStepFailed

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_HOLES = 4
DEMO_KEY = "demo-key"

log = logging.getLogger("commbox")


def _pipeline_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", help="duckdb (default), postgres or bigquery")
    parser.add_argument("--dataset", help="raw dataset name (default commbox_raw)")
    parser.add_argument("--pipelines-dir", help="dlt working folder (default: dlt's, ~/.dlt/pipelines)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commbox-etl", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("COMMBOX_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="incremental load from the stored state, then the SLA views")
    _pipeline_args(run)
    run.add_argument("--pipeline-name", default="commbox")
    run.add_argument("--streams", help="comma-separated stream ids (default: config or discovery)")
    run.add_argument("--no-views", action="store_true", help="do not (re)build the SLA views")

    backfill = commands.add_parser("backfill", help="load a date range without moving the scheduled state")
    _pipeline_args(backfill)
    backfill.add_argument("--start", required=True, help="YYYY-MM-DD (inclusive)")
    backfill.add_argument("--end", required=True, help="YYYY-MM-DD (exclusive)")
    backfill.add_argument("--streams", help="comma-separated stream ids (default: config or discovery)")
    backfill.add_argument("--no-views", action="store_true")

    views = commands.add_parser("views", help="(re)build the SLA views in commbox_reporting")
    _pipeline_args(views)
    views.add_argument("--pipeline-name", default="commbox")
    views.add_argument("--as-of", help="'now' for running clocks (default: end of the loaded data)")

    report = commands.add_parser("report", help="print per-channel SLA compliance for the last N days")
    _pipeline_args(report)
    report.add_argument("--pipeline-name", default="commbox")
    report.add_argument("--days", type=int, default=7)
    report.add_argument("--html", metavar="PATH", help="write a self-contained HTML page with charts instead")

    status = commands.add_parser("status", help="per stream: last window loaded, lag, rows; the last run")
    _pipeline_args(status)
    status.add_argument("--pipeline-name", default="commbox")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--max-lag-hours", type=float, help="exit 1 when a stream's last window is older than this"
    )

    doctor = commands.add_parser("doctor", help="check the configuration, the API and key, the destination")
    _pipeline_args(doctor)
    doctor.add_argument("--pipeline-name", default="commbox")
    doctor.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the API")

    commands.add_parser(
        "simulate",
        help="serve the CommBox API simulator (see README: The CommBox API simulator)",
        add_help=False,
    )
    # Its own flags (--port, --seed, ...) belong to the simulator's parser: see main().

    demo = commands.add_parser("demo", help="simulator -> pipeline -> commbox.duckdb -> views -> report")
    demo.add_argument("--conversations", type=int, default=3000)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--html", default="reports/sla.html", help="where to write the HTML SLA report")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # requests/urllib3 at DEBUG print URLs only, never headers; keep them quieter anyway.
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, logging.getLogger().level))
    install_redaction()


def install_redaction() -> None:
    """Redact secrets from every log line: on the root handlers (our loggers, libraries) and on
    dlt's logger, which may log through a handler of its own."""
    from pipelines.commbox.redact import RedactingFilter

    for target in (*logging.getLogger().handlers, logging.getLogger("dlt"), logging.getLogger("commbox")):
        if not any(isinstance(existing, RedactingFilter) for existing in target.filters):
            target.addFilter(RedactingFilter())


def _run(args: argparse.Namespace) -> int:
    from pipelines.ops.runner import backfill_pipeline_name, make_pipeline, run_pipeline

    streams = getattr(args, "streams", None)
    if args.command == "backfill":
        from pipelines.commbox.config import parse_stream_ids

        name = backfill_pipeline_name(args.start, args.end, parse_stream_ids(streams))
        backfill = (args.start, args.end)
    else:
        name, backfill = args.pipeline_name, None
    pipeline = make_pipeline(
        destination=args.destination,
        dataset=args.dataset,
        pipeline_name=name,
        pipelines_dir=args.pipelines_dir,
    )
    summary = run_pipeline(pipeline, backfill=backfill, stream_ids=streams, build_views=not args.no_views)
    print(summary.line(), flush=True)
    if summary.holes:
        print(f"commbox-etl: incomplete: {summary.holes_line()}", file=sys.stderr)
        return EXIT_HOLES
    return 0


def _pipeline_of(args: argparse.Namespace) -> Any:
    """The pipeline a command's `--destination`, `--dataset`, `--pipeline-name` and `--pipelines-dir` name."""
    from pipelines.ops.runner import make_pipeline

    return make_pipeline(
        destination=args.destination,
        dataset=args.dataset,
        pipeline_name=args.pipeline_name,
        pipelines_dir=args.pipelines_dir,
    )


def _views(args: argparse.Namespace) -> int:
    from pipelines.commbox.config import parse_moment
    from pipelines.ops.runner import build_reporting_views

    pipeline = _pipeline_of(args)
    pipeline.sync_destination()
    as_of = parse_moment(args.as_of, "--as-of") if args.as_of else None
    built = build_reporting_views(pipeline, as_of=as_of)
    print(f"built {len(built)} views in commbox_reporting: {', '.join(built)}")
    return 0 if built else EXIT_FAILED


def _report(args: argparse.Namespace) -> int:
    from pipelines.reporting.report import render_report

    pipeline = _pipeline_of(args)
    pipeline.sync_destination()
    if args.html:
        from pipelines.reporting.report_html import write_html_report

        path = write_html_report(pipeline, Path(args.html), days=args.days)
        print(f"SLA report written to {path}")
        return 0
    print(render_report(pipeline, days=args.days))
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from pipelines.ops.status import read_status, render_status

    pipeline = _pipeline_of(args)
    status = read_status(pipeline)
    print(json.dumps(status.as_dict(), indent=2) if args.json else render_status(status))
    if args.max_lag_hours is not None:
        limit = args.max_lag_hours * 3600
        lagging = [s.stream_id for s in status.streams if (s.lag_seconds(status.now) or 0) > limit]
        if lagging or not status.streams:
            print(
                f"commbox-etl: streams {lagging or 'none loaded'} lag more than {args.max_lag_hours}h",
                file=sys.stderr,
            )
            return EXIT_FAILED
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from pipelines.ops.doctor import run_doctor

    checks = run_doctor(lambda: _pipeline_of(args), timeout=args.timeout)
    for check in checks:
        print(check.line(), flush=True)
    failed = [check for check in checks if not check.ok]
    if any(check.name == "config" for check in failed):
        return EXIT_CONFIG
    return EXIT_FAILED if failed else 0


def _simulate(args: argparse.Namespace) -> int:
    from pipelines.commbox_sim import main as simulator_main

    return simulator_main(list(args.sim_args))


def _demo(args: argparse.Namespace) -> int:
    """Start the simulator in its own process, load its whole history, build the views, report."""
    from pipelines.ops.runner import make_pipeline, run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.commbox_sim",
                "--port",
                "0",
                "--seed",
                str(args.seed),
                "--conversations",
                str(args.conversations),
                "--days",
                str(args.days),
                "--api-key",
                DEMO_KEY,
                "--ready-file",
                str(ready),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() or not ready.read_text().strip():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not start")
                time.sleep(0.1)
            base_url = ready.read_text().strip()
            log.info("simulator serving at %s", base_url)
            from pipelines.commbox.client import CommBoxClient

            # The simulator's history ends at its clock's now, which the API reports in every response.
            now = CommBoxClient(base_url, DEMO_KEY).get("/core/systemstatus").response_time
            assert now is not None, "the simulator sent no response_time"
            start = now - timedelta(days=args.days + 1)
            os.environ["SOURCES__COMMBOX__BASE_URL"] = base_url
            os.environ["SOURCES__COMMBOX__API_KEY"] = DEMO_KEY
            os.environ["SOURCES__COMMBOX__START_DATE"] = start.date().isoformat()
            pipeline = make_pipeline(
                pipeline_name="commbox_demo", pipelines_dir=str(Path(".dlt/pipelines").resolve())
            )
            # The demo always loads the simulator's history afresh: its tables and state are dropped.
            summary = run_pipeline(pipeline, refresh="drop_sources")
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(summary.line(), flush=True)
    print(f"\nLoaded into {Path('commbox.duckdb').resolve()} (dataset {pipeline.dataset_name})")
    try:
        from pipelines.reporting.report import render_report
    except ImportError:
        pass
    else:
        print(render_report(pipeline, days=7))
    from pipelines.reporting.report_html import write_html_report

    path = write_html_report(pipeline, Path(args.html), days=14)
    print(f"\nSLA report with charts (open it in a browser): {path}", flush=True)
    return 0


COMMANDS = {
    "run": _run,
    "backfill": _run,
    "views": _views,
    "report": _report,
    "status": _status,
    "doctor": _doctor,
    "simulate": _simulate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.commbox.client import ApiError
    from pipelines.commbox.config import ConfigError
    from pipelines.ops.runner import RunLocked, ViewsFailed

    parser = build_parser()
    # argparse's REMAINDER does not pass on arguments that look like options, so everything after
    # `simulate` goes to the simulator's own parser untouched.
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulate":
        args.sim_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _configure_logging(args.log_level)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"commbox-etl: configuration error: {_one_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    except RunLocked as error:
        print(f"commbox-etl: {_one_line(error)}", file=sys.stderr)
        return EXIT_LOCKED
    except ApiError as error:
        print(f"commbox-etl: failed: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except PipelineStepFailed as error:
        cause = error.__cause__ or error.exception
        if isinstance(cause, ConfigError):
            print(f"commbox-etl: configuration error: {_one_line(cause)}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"commbox-etl: failed in {error.step}: {_one_line(cause)}", file=sys.stderr)
        return EXIT_FAILED
    except ViewsFailed as error:
        print(f"commbox-etl: failed in {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("commbox-etl: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # Anything else is still one line for the operator; the traceback is for --log-level DEBUG.
        log.debug("%s failed", args.command, exc_info=True)
        print(f"commbox-etl: failed: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def _one_line(error: BaseException) -> str:
    """The error's text on one line, secrets redacted (an error may quote a header or a URL)."""
    from pipelines.commbox.redact import redact

    return redact(" ".join(str(error).split()))[:500]


if __name__ == "__main__":
    sys.exit(main())
