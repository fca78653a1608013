"""`python -m bench [--quick] [--only 1,2,4] [--keep]`: run the scenarios, write the results.

The full run (`make bench`) writes `bench/results.md` and `bench/results.json`; `--quick`
(`make bench-quick`) writes `bench/runs/quick.md` and `.json` (git-ignored) in under two minutes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from . import parallel, report, scenarios

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    parser.add_argument(
        "--only", default="1,2,4,6,7", help="scenario groups to run: 1 (with 3), 2, 4 (with 5), 6, 7"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folders and logs")
    parser.add_argument("--rates", help="scenario 2 only at these server rates (requests/s, comma-separated)")
    parser.add_argument("--kinds", help="scenario 2 only these runs: default, 5xx, configured, headers")
    parser.add_argument(
        "--out", type=Path, help="output folder (default bench/, or bench/runs/ with --quick)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    only = {part.strip() for part in args.only.split(",")}
    ws = scenarios.Workspace(keep=args.keep)
    began = time.monotonic()
    command = "make bench-quick" if args.quick else "make bench"
    results: dict = {"command": command, "sizes": sizes.__dict__, "machine": report.machine()}
    try:
        if "1" in only:
            results["scenario1"] = scenarios.full_history(sizes, ws)
        if "2" in only:
            rates = {float(r) for r in args.rates.split(",")} if args.rates else None
            kinds = set(args.kinds.split(",")) if args.kinds else None
            results["scenario2"] = scenarios.rate_limited(sizes, ws, rates, kinds)
        if "6" in only:
            results["scenario6"] = scenarios.request_counts(sizes, ws)
        if "4" in only:
            results["scenario4"] = scenarios.scale(sizes, ws)
        if "7" in only:
            results["scenario7"] = parallel.run(**(parallel.QUICK if args.quick else {}))
    finally:
        results["finished_at"] = report.now()
        results["total_minutes"] = (time.monotonic() - began) / 60
        out = args.out or (HERE / "runs" if args.quick else HERE)
        md, js = report.write(results, out, "quick" if args.quick else "results")
        if "scenario7" in results:
            parallel.write_section(results["scenario7"], md, str(results["machine"]))
        logging.info(
            "wrote %s and %s (%.1f min)%s",
            md,
            js,
            results["total_minutes"],
            f"; working folders kept in {ws.root}" if args.keep else "",
        )
        ws.close()
    for name, wanted, measured, met in report.evaluate(results):
        logging.info(
            "%-55s %-10s %-28s %s", name, wanted, measured, {True: "met", False: "MISSED", None: "-"}[met]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
