"""`commbox-etl`: thin entry points over `pipelines.ops` (runner, status, doctor), `pipelines.reporting` and the simulator."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dlt.pipeline.exceptions import PipelineStepFailed

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_HOLES = 4
DEMO_KEY = "demo-key"
# Where the demo keeps its dlt working folder: inside the checkout, so `make clean` removes it and it
# never mixes with the state of a real `commbox` pipeline in dlt's own folder.
DEMO_PIPELINES_DIR = ".dlt/pipelines"
MOMENT_FORMS = "a date YYYY-MM-DD or an ISO timestamp with a zone (2024-03-29T12:00:00Z, ...+02:00)"
DESCRIPTION = (
    "Export the CommBox REST API into DuckDB, PostgreSQL or BigQuery with dlt, and report SLAs. "
    "Docs: README.md and docs/operations.md."
)

log = logging.getLogger("commbox")


def _pipeline_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", help="duckdb (default), postgres or bigquery")
    parser.add_argument("--dataset", help="raw dataset name (default commbox_raw)")
    parser.add_argument(
        "--pipelines-dir", help="dlt working folder (default: dlt's own, usually ~/.dlt/pipelines)"
    )


def _pipeline_name_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pipeline-name",
        default="commbox",
        help="the dlt pipeline whose state and trace to use (default commbox)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commbox-etl", description=DESCRIPTION)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("COMMBOX_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO (default, or COMMBOX_LOG_LEVEL), WARNING or ERROR; before the command",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="incremental load from the stored state, then the SLA views")
    _pipeline_args(run)
    _pipeline_name_arg(run)
    run.add_argument("--streams", help="comma-separated stream ids (default: config or discovery)")
    run.add_argument("--no-views", action="store_true", help="do not (re)build the SLA views")

    backfill = commands.add_parser(
        "backfill", help="load a range of updatedTime in its own pipeline, without moving the scheduled state"
    )
    _pipeline_args(backfill)
    backfill.add_argument(
        "--start", required=True, help=f"inclusive: {MOMENT_FORMS} (a date is its midnight UTC)"
    )
    backfill.add_argument("--end", required=True, help=f"exclusive: {MOMENT_FORMS}")
    backfill.add_argument("--streams", help="comma-separated stream ids (default: config or discovery)")
    backfill.add_argument("--no-views", action="store_true", help="do not (re)build the SLA views")

    views = commands.add_parser(
        "views", help="reload the SLA inputs from [sla] and (re)build the SLA views in commbox_reporting"
    )
    _pipeline_args(views)
    _pipeline_name_arg(views)
    views.add_argument(
        "--as-of",
        help=f"the moment running clocks are measured to: 'now', or {MOMENT_FORMS} "
        "(default: the end of the loaded data)",
    )

    report = commands.add_parser("report", help="print per-channel SLA compliance for the last N days")
    _pipeline_args(report)
    _pipeline_name_arg(report)
    report.add_argument("--days", type=int, default=7, help="the last N days of the loaded data (default 7)")
    report.add_argument("--html", metavar="PATH", help="write a self-contained HTML page with charts instead")

    status = commands.add_parser("status", help="per stream: last window loaded, lag, rows; the last run")
    _pipeline_args(status)
    _pipeline_name_arg(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--max-lag-hours", type=float, help="exit 1 when a stream's last window is older than this"
    )

    doctor = commands.add_parser("doctor", help="check the configuration, the API and key, the destination")
    _pipeline_args(doctor)
    _pipeline_name_arg(doctor)
    doctor.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the API")

    commands.add_parser(
        "simulate",
        help="serve the CommBox API simulator (`simulate --help` lists its flags; docs/simulator.md)",
        add_help=False,
    )
    # Its own flags (--port, --seed, ...) belong to the simulator's parser: see main().

    demo = commands.add_parser(
        "demo",
        help=f"what `make run` does: simulator -> pipeline commbox (working folder {DEMO_PIPELINES_DIR}) "
        "-> commbox.duckdb -> views -> report",
    )
    demo.add_argument("--conversations", type=int, default=3000, help="conversations the simulator makes up")
    demo.add_argument("--days", type=int, default=30, help="days of history they span")
    demo.add_argument("--seed", type=int, default=7, help="the simulator's random seed")
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


class NothingLoaded(RuntimeError):
    """The destination holds no loaded data for the dataset a reading command was pointed at."""


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_moment_arg(value: str, key: str) -> datetime:
    """A command-line moment as an aware UTC datetime.

    Accepts a date (`2024-03-29`, its midnight UTC, as `start_date` reads it) or an ISO timestamp with
    a zone (`2024-03-29T12:00:00Z`, `2024-03-29T12:00:00+02:00`). A timestamp without a zone is
    refused: it reads as a different instant on a laptop in Tel Aviv than on a UTC server, and a
    backfill or an `--as-of` that moves with the machine is wrong without any sign of it.

    Raises:
        ConfigError: one line naming `key` for any other form (`28/03/2024`, `2024-02-30`).
    """
    from pipelines.commbox.config import ConfigError

    text = value.strip()
    parsed = None
    if _DATE.match(text):
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
    if parsed is None:
        raise ConfigError(f"{key}: {value!r} is not a date (YYYY-MM-DD) or an ISO timestamp with a zone")
    if _DATE.fullmatch(text):
        return parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        raise ConfigError(
            f"{key}: {value!r} has no time zone: add Z (UTC) or an offset such as +02:00, or give a date"
        )
    return parsed.astimezone(UTC)


def _run(args: argparse.Namespace) -> int:
    from pipelines.ops.runner import backfill_pipeline_name, make_pipeline, run_pipeline

    streams = getattr(args, "streams", None)
    backfill: tuple[datetime, datetime] | None = None
    if args.command == "backfill":
        from pipelines.commbox.config import ConfigError, parse_stream_ids

        # Checked before anything is built: the pipeline's name comes from the parsed range.
        start, end = parse_moment_arg(args.start, "--start"), parse_moment_arg(args.end, "--end")
        if end <= start:
            raise ConfigError(f"--end: {args.end} is not after --start {args.start}")
        name = backfill_pipeline_name(start, end, parse_stream_ids(streams))
        backfill = (start, end)
    else:
        name = args.pipeline_name
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


def _loaded_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline of a command that reads what was loaded (`report`, `views`, `status`).

    Raises:
        NothingLoaded: the dataset holds no raw `objects` table. Nothing is written on the way: a
            DuckDB file that does not exist is not created, and a working folder this call had to
            create is removed again. When the last run on this machine failed, the line says how.
    """
    import dlt
    from dlt.common.pipeline import get_dlt_pipelines_dir

    from pipelines.commbox.config import validate_dataset_name
    from pipelines.commbox.settings import DEFAULT_RAW_DATASET
    from pipelines.ops.runner import default_duckdb_file, resolve_destination
    from pipelines.ops.status import last_run

    destination = resolve_destination(args.destination)
    dataset = validate_dataset_name(args.dataset or dlt.config.get("dataset_name") or DEFAULT_RAW_DATASET)
    duckdb_file = default_duckdb_file() if destination == "duckdb" else None
    where = " ".join(str(part) for part in (destination, duckdb_file, "dataset", dataset) if part is not None)
    nothing = f"nothing loaded yet into {where}"
    if duckdb_file is not None and not duckdb_file.exists():
        raise NothingLoaded(f"{nothing}: run `commbox-etl run` first")
    pipelines_dir = Path(args.pipelines_dir or get_dlt_pipelines_dir())
    made = [path for path in (pipelines_dir, pipelines_dir / args.pipeline_name) if not path.exists()]
    pipeline = _pipeline_of(args)
    loaded = False
    try:
        with pipeline.sql_client() as client:
            has_dataset = client.has_dataset()
        loaded = has_dataset and _has_objects(pipeline)
        failed = None if loaded or made else last_run(pipeline)
    finally:
        # Only what this call created goes, deepest first, and only when there is nothing to read.
        if made and not loaded:
            shutil.rmtree(made[-1], ignore_errors=True)
            for path in reversed(made[:-1]):
                with contextlib.suppress(OSError):
                    path.rmdir()
    if not loaded:
        if failed is not None and not failed.ok:
            raise NothingLoaded(
                f"{nothing}; the last run of {args.pipeline_name} on this machine {failed.detail}"
            )
        raise NothingLoaded(f"{nothing}: run `commbox-etl run` first")
    return pipeline


def _has_objects(pipeline: Any) -> bool:
    with pipeline.destination_client() as job_client:
        return any(columns for _, columns in job_client.get_storage_tables(["objects"]))


def _views(args: argparse.Namespace) -> int:
    from pipelines.ops.runner import build_reporting_views

    if args.as_of is None:
        as_of = None
    elif args.as_of.strip().lower() == "now":
        as_of = datetime.now(UTC)
    else:
        as_of = parse_moment_arg(args.as_of, "--as-of")
    pipeline = _loaded_pipeline(args)
    pipeline.sync_destination()
    built = build_reporting_views(pipeline, as_of=as_of)
    print(f"built {len(built)} views in commbox_reporting: {', '.join(built)}")
    return 0 if built else EXIT_FAILED


def _report(args: argparse.Namespace) -> int:
    from pipelines.reporting.report import render_report
    from pipelines.reporting.report_data import configured_channel_names

    # The configuration first: a bad `[sla]` is exit 2 naming the key, loaded data or not.
    names = configured_channel_names()
    pipeline = _loaded_pipeline(args)
    pipeline.sync_destination()
    if args.html:
        from pipelines.reporting.report_html import write_html_report

        path = write_html_report(pipeline, Path(args.html), days=args.days, names=names)
        print(f"SLA report written to {path}")
        return 0
    print(render_report(pipeline, days=args.days, names=names))
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from pipelines.ops.status import read_status, render_status

    pipeline = _loaded_pipeline(args)
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
    from pipelines.commbox_sim.cli import build_parser as simulator_parser

    try:
        return simulator_main(list(args.sim_args))
    except OSError as error:
        # Binding is the only OSError the simulator meets before it serves: name the flag to change.
        served = simulator_parser().parse_known_args(list(args.sim_args))[0]
        address = f"{served.host}:{served.port}"
        if error.errno == errno.EADDRINUSE:
            reason = f"{address} is already in use; choose another port (--port 0 picks a free one)"
        else:
            reason = f"cannot listen on {address}: {error.strerror or error}; check --host and --port"
        print(f"commbox-etl: simulate --port {served.port}: {reason}", file=sys.stderr)
        return EXIT_CONFIG


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
            # The names `commbox-etl run` and the docs use (pipeline commbox, dataset commbox_raw), in
            # a working folder of the checkout's own (see DEMO_PIPELINES_DIR).
            pipeline = make_pipeline(pipelines_dir=str(Path(DEMO_PIPELINES_DIR).resolve()))
            # The demo always loads the simulator's history afresh: its tables and state are dropped.
            summary = run_pipeline(pipeline, refresh="drop_sources")
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(summary.line(), flush=True)
    print(f"\nLoaded into {Path('commbox.duckdb').resolve()} (dataset {pipeline.dataset_name})")
    where = f"--pipelines-dir {DEMO_PIPELINES_DIR}"
    print(
        f"Pipeline {pipeline.pipeline_name}: `dlt pipeline {where} {pipeline.pipeline_name} info` "
        f"(or show, trace); `commbox-etl status {where}`"
    )
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
    except NothingLoaded as error:
        print(f"commbox-etl: {_one_line(error)}", file=sys.stderr)
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
