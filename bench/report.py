"""Turn the scenarios' numbers into `results.md` (tables, targets met or not) and `results.json`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .scenarios import TABLES

TARGETS = {
    "limit_ratio": 1.3,
    "peer_speedup": 2.0,
    "request_ratio": 1.05,
    "rate_share_pct": 90.0,
    "rate_share_5xx_pct": 85.0,
    "throttled_pct": 2.0,
    "incremental_share_pct": 5.0,
    "request_ratio_15": 1.02,
    "incremental_share_15_pct": 1.5,
    # issue 15, target 3: 100,000 against 10,000, and 300,000 against 100,000 (flat)
    "rss_large_mb": 300.0,
    "rss_growth": 1.15,
    "mart_seconds": 2.0,
}


def machine() -> dict[str, Any]:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipelines", "sql"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in pipelines/ or sql/"
    except OSError:
        commit = ""
    import dlt
    import duckdb

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "dlt": dlt.__version__,
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "commit": commit,
    }


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ok(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "**missed**")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = sorted((r for r in runs if r.get("ok")), key=lambda r: r["wall_seconds"])
    return good[len(good) // 2] if good else (runs[0] if runs else {})


def _view_sets(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sets = []
    s4 = results.get("scenario4")
    if s4:
        # the size whose run built the views (scenario 4's large one, not the flat one)
        n = max((k for k in s4 if s4[k]["run"].get("views")), key=int, default=max(s4, key=int))
        sets.append((f"{int(n):,} conversations (scenario 4's warehouse)", s4[n]["run"].get("views") or {}))
    s1 = results.get("scenario1")
    if s1:
        sets.append(
            (
                f"{s1['dataset']['conversations']:,} conversations with every raw table (scenario 1's warehouse)",
                s1.get("views") or {},
            )
        )
    return sets


def evaluate(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, wanted, measured, met) rows."""
    rows: list[tuple[str, str, str, bool | None]] = []
    s1 = results.get("scenario1")
    if s1:
        wall = s1["wall"]
        p, lim, peer = (wall.get(k, {}).get("median") for k in ("pipeline", "limit", "peer"))
        if p and lim:
            rows.append(
                (
                    "1 pipeline / limit (wall, median)",
                    f"≤ {TARGETS['limit_ratio']}×",
                    f"{p / lim:.2f}×",
                    p / lim <= TARGETS["limit_ratio"],
                )
            )
        if p and peer:
            rows.append(
                (
                    "1 peer / pipeline (wall, median)",
                    f"≥ {TARGETS['peer_speedup']}×",
                    f"{peer / p:.2f}×",
                    peer / p >= TARGETS["peer_speedup"],
                )
            )
        run = _median_run(s1["runs"]["pipeline"])
        minimum = s1["dataset"]["minimum_requests"]
        if run:
            ratio = run["requests"] / minimum
            rows.append(
                (
                    "1 pipeline requests / minimum",
                    f"≤ {TARGETS['request_ratio']}×",
                    f"{ratio:.3f}× ({run['requests']:,} / {minimum:,})",
                    ratio <= TARGETS["request_ratio"],
                )
            )
            truth = s1["dataset"]["truth"]
            complete = all(
                r.get("rows", {}).get("objects") == truth["objects"]
                for r in s1["runs"]["pipeline"]
                if r.get("ok")
            )
            rows.append(
                (
                    "1 every conversation loaded (every pipeline run)",
                    "= ground truth",
                    f"{run.get('rows', {}).get('objects')} / {truth['objects']}",
                    complete,
                )
            )
    s2 = results.get("scenario2")
    if s2:
        for label, run in s2["variants"].items():
            if not run.get("ok"):
                rows.append((f"2 rate-limited ({label})", "runs", run.get("error", "failed"), False))
                continue
            wanted = TARGETS["rate_share_5xx_pct"] if run["fault_5xx_rate"] else TARGETS["rate_share_pct"]
            share = run["share_of_allowed_rate_pct"]
            rows.append((f"2 floor / wall ({label})", f"≥ {wanted:.0f}%", f"{share:.1f}%", share >= wanted))
            rows.append(
                (
                    f"2 429s / requests ({label})",
                    f"≤ {TARGETS['throttled_pct']:.0f}%",
                    f"{run['throttled_pct']:.2f}% ({run['throttled']:,})",
                    run["throttled_pct"] <= TARGETS["throttled_pct"],
                )
            )
    s3 = (s1 or {}).get("incremental")
    if s3 and "run" in s3:
        share = s3["request_share_pct"]
        rows.append(
            (
                "3 incremental requests / full run",
                f"≤ {TARGETS['incremental_share_pct']:.0f}%",
                f"{share:.2f}%",
                share <= TARGETS["incremental_share_pct"],
            )
        )
    s4 = results.get("scenario4")
    if s4:
        sizes = sorted(s4, key=int)
        small, large = s4[sizes[0]]["run"], s4[sizes[min(1, len(sizes) - 1)]]["run"]
        if len(sizes) > 2 and large.get("ok") and s4[sizes[2]]["run"].get("ok"):
            rows.append(
                (
                    f"4 peak RSS {int(sizes[2]):,} / {int(sizes[1]):,} (flat)",
                    f"≤ {TARGETS['rss_growth']}×",
                    f"{s4[sizes[2]]['run']['peak_rss_mb'] / large['peak_rss_mb']:.2f}×",
                    s4[sizes[2]]["run"]["peak_rss_mb"] / large["peak_rss_mb"] <= TARGETS["rss_growth"],
                )
            )
        if large.get("ok"):
            rows.append(
                (
                    f"4 peak RSS at {int(sizes[min(1, len(sizes) - 1)]):,}",
                    f"≤ {TARGETS['rss_large_mb']:.0f} MB",
                    f"{large['peak_rss_mb']:.0f} MB",
                    large["peak_rss_mb"] <= TARGETS["rss_large_mb"],
                )
            )
            if small.get("ok"):
                growth = large["peak_rss_mb"] / small["peak_rss_mb"]
                rows.append(
                    (
                        f"4 peak RSS {int(sizes[min(1, len(sizes) - 1)]):,} / {int(sizes[0]):,}",
                        f"≤ {TARGETS['rss_growth']}×",
                        f"{growth:.2f}×",
                        growth <= TARGETS["rss_growth"],
                    )
                )
    for profile, r in (results.get("scenario6") or {}).items():
        full, inc, same = r["full"], r["incremental"], r["unchanged"]
        if not full.get("ok"):
            rows.append((f"6 requests ({profile} profile)", "runs", full.get("error", "failed"), False))
            continue
        ratio = r["request_ratio"]
        rows.append(
            (
                f"6 requests / minimum ({profile} profile)",
                f"≤ {TARGETS['request_ratio_15']}×",
                f"{ratio:.3f}× ({full['requests']:,} / {r['minimum_requests']:,})",
                ratio <= TARGETS["request_ratio_15"],
            )
        )
        if "run" in inc:
            share = inc["request_share_pct"]
            rows.append(
                (
                    f"6 after 1% changed / full run ({profile} profile)",
                    f"≤ {TARGETS['incremental_share_15_pct']}%",
                    f"{share:.2f}% ({inc['run']['requests']:,})",
                    share <= TARGETS["incremental_share_15_pct"],
                )
            )
        if same.get("ok"):
            lists = same["requests_by_endpoint"].get("objects", 0)
            windows = same.get("windows")
            rows.append(
                (
                    f"6 no change: requests ({profile} profile)",
                    "= list calls, one per stream window",
                    f"{same['requests']:,} ({lists} list calls, {windows} windows)",
                    same["requests"] == lists and (windows is None or lists == windows),
                )
            )
        due = r.get("unchanged_snapshot_due") or {}
        if due.get("ok"):
            by = due["requests_by_endpoint"]
            lists = by.get("objects", 0)
            rows.append(
                (
                    f"6 no change, hourly snapshot due ({profile} profile)",
                    "not a target",
                    f"{due['requests']:,} ({lists} list calls, {due['requests'] - lists} snapshot: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(by.items()) if k != "objects")
                    + ")",
                    None,
                )
            )
    for title, views in _view_sets(results):
        label = "5 slowest mart, " + title.split(" (")[0]
        if views.get("marts"):
            worst = max(v["seconds"] for v in views["marts"].values())
            rows.append(
                (
                    label,
                    f"< {TARGETS['mart_seconds']:.0f} s",
                    f"{worst:.2f} s",
                    worst < TARGETS["mart_seconds"],
                )
            )
        else:
            rows.append(
                (
                    label,
                    f"< {TARGETS['mart_seconds']:.0f} s",
                    str(views.get("skipped", "not run"))[:120],
                    None,
                )
            )
    return rows


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"`{results['command']}` on {results['finished_at']} ({results['total_minutes']:.1f} min), commit `{m['commit']}`.",
        "Produced by `bench/` — see `bench/README.md` for the method and the profiling findings. Do not edit by hand.",
        "",
        f"**Machine:** {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB memory, Python {m['python']}, dlt {m['dlt']}, DuckDB {m['duckdb']}, {m['platform']}.",
        "The simulator runs in its own process; every contender runs in a fresh interpreter (peak RSS is that process's own high-water mark, `VmHWM`).",
        "",
        "## Targets",
        "",
        "| target | wanted | measured | |",
        "| --- | --- | --- | --- |",
    ]
    for name, wanted, measured, met in evaluate(results):
        lines.append(f"| {name} | {wanted} | {measured} | {_ok(met)} |")
    s1 = results.get("scenario1")
    if s1:
        d = s1["dataset"]
        lines += [
            "",
            "## 1. Full history, latency-bound",
            "",
            f"{d['conversations']:,} conversations in {len(d['streams'])} streams over {d['days']} days, "
            f"{d['messages_per_conversation']} messages each, transcript + {2} activity types fanned out; "
            f"{d['latency_ms']:g} ms latency on every request, no rate limit; concurrency {d['concurrency']} for all three. "
            f"Minimum requests {d['minimum_requests']:,} ({d['list_calls_minimum']} list calls + 3 per conversation + {d['minimum_requests'] - d['list_calls_minimum'] - 3 * d['conversations']} fixed). "
            f"The simulator's cache was warmed by one untimed bare-fetch pass ({s1['warm_seconds']:.1f} s, latency off) before the timed runs. "
            f"{len(s1['runs']['pipeline'])} rounds, contenders alternating (order rotated each round); medians reported.",
            "",
            "| contender | wall s (median) | min–max (spread) | requests | × minimum | peak RSS MB | CPU s | "
            + " | ".join(f"{t} rows/s" for t in TABLES)
            + " |",
            "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in TABLES) + " |",
        ]
        for name in ("pipeline", "limit", "peer"):
            w = s1["wall"].get(name) or {}
            run = _median_run(s1["runs"][name])
            if not w:
                lines.append(
                    f"| {name} | failed: {run.get('error', '?')} | | | | | | "
                    + " | ".join("" for _ in TABLES)
                    + " |"
                )
                continue
            rows = run.get("rows", {})
            rates = " | ".join(_f(rows.get(t, 0) / w["median"], 0) for t in TABLES)
            lines.append(
                f"| {name} | {w['median']:.1f} | {w['min']:.1f}–{w['max']:.1f} ({w['spread_pct']:.0f}%) | {run['requests']:,} | "
                f"{run['requests'] / d['minimum_requests']:.3f} | {s1['rss'][name]['median']:.0f} | {s1['cpu'][name]['median']:.1f} | {rates} |"
            )
        lines += ["", "Rows loaded against ground truth (median run; the limit counts what it parsed):", ""]
        lines.append("| table | truth | " + " | ".join(("pipeline", "limit", "peer")) + " |")
        lines.append("| --- | --- | --- | --- | --- |")
        for t in TABLES:
            cells = []
            for name in ("pipeline", "limit", "peer"):
                got = _median_run(s1["runs"][name]).get("rows", {}).get(t)
                mark = "" if got == d["truth"][t] else " ✗"
                cells.append(f"{_f(got)}{mark}")
            lines.append(f"| {t} | {d['truth'][t]:,} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Every run:",
            "",
            "| round | contender | wall s | requests | list calls | peak RSS MB | CPU s | ok |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        every = sorted(
            (r for runs in s1["runs"].values() for r in runs), key=lambda r: (r["round"], r["label"])
        )
        for r in every:
            lines.append(
                f"| {r['round']} | {r['label']} | {_f(r.get('wall_seconds'))} | {r['requests']:,} | {r['requests_by_endpoint'].get('objects', 0)} | "
                f"{r['peak_rss_mb']:.0f} | {r['cpu_seconds']:.1f} | {'yes' if r.get('ok') else r.get('error', 'no')} |"
            )
        pr = _median_run(s1["runs"]["pipeline"])
        if pr.get("steps"):
            lines += [
                "",
                "Pipeline phases (median run): "
                + ", ".join(f"{k} {v:.1f} s" for k, v in pr["steps"].items())
                + ".",
            ]
    s2 = results.get("scenario2")
    if s2:
        lines += [
            "",
            "## 2. Rate-limited, the limit unknown (429 + Retry-After)",
            "",
            "The pipeline with its default settings (no `max_requests_per_second`) behind the simulator's "
            "token bucket (burst 10; a 429 with `Retry-After` in whole seconds, at least 1), 20 ms latency, "
            "concurrency 16; each account is sized for a floor of about 75 s (floor = minimum requests / rate). "
            "Wall time is the whole run, normalize and load included. With 5xx on top, those requests take "
            "a token each too, so at most 95% of the rate can be answered 2xx. One run per row.",
            "",
            "| server rate | variant | conversations | wall s | floor s | floor / wall | requests | 2xx/s | 429s | 429s / requests | phases s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, r in s2["variants"].items():
            if not r.get("ok"):
                lines.append(f"| {label} | failed: {r.get('error')} | | | | | | | | | |")
                continue
            steps = " / ".join(f"{v:.0f}" for v in (r.get("steps") or {}).values())
            lines.append(
                f"| {r['rps']:g} | {r['variant']} | {r['conversations']:,} | {r['wall_seconds']:.1f} | {r['floor_seconds']:.1f} | "
                f"{r['share_of_allowed_rate_pct']:.1f}% | {r['requests']:,} | {r['achieved_rps']:.1f} | {r['throttled']:,} | "
                f"{r['throttled_pct']:.2f}% | {steps} |"
            )
    s3 = (s1 or {}).get("incremental")
    if s3:
        lines += ["", "## 3. Incremental", ""]
        if "run" not in s3:
            lines.append(f"Skipped: {s3.get('skipped')}")
        else:
            r = s3["run"]
            lines += [
                f"After the last full pipeline load of scenario 1, {s3['changed_conversations']} conversations "
                f"({100 * s3['changed_conversations'] / s1['dataset']['conversations']:.1f}%) changed (new messages, status changes) in "
                f"{s3['mutation_batches']} batches six minutes apart; then one scheduled run on the same state.",
                "",
                "| run | wall s | requests | list calls | share of a full run's requests | rows written |",
                "| --- | --- | --- | --- | --- | --- |",
                f"| incremental | {_f(r.get('wall_seconds'))} | {r['requests']:,} | {r['requests_by_endpoint'].get('objects', 0)} | {s3['request_share_pct']:.2f}% | "
                + ", ".join(f"{k} {v}" for k, v in sorted((r.get("rows_this_run") or {}).items()))
                + " |",
                f"| full (median of scenario 1) | {s3['full_wall_seconds']:.1f} | {int(s3['full_requests']):,} | | 100% | |",
                "",
                f"Minimum for the change: {s3['minimum_requests']:,} fan-out requests + a few list calls.",
            ]
    s4 = results.get("scenario4")
    if s4:
        lines += [
            "",
            "## 4. Scale (no fan-out)",
            "",
            "The run's peak RSS is the pipeline's (extract, normalize, load, newest wins) at every size;"
            " at the middle size the reporting views are then built and read in a process of their own"
            " (scenario 5), whose peak is given below the table.",
            "",
            "| conversations | wall s | requests | × minimum | objects rows/s | childs rows/s | peak RSS MB | CPU s | loaded / truth |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for n in sorted(s4, key=int):
            r, d = s4[n]["run"], s4[n]["dataset"]
            if not r.get("ok"):
                lines.append(f"| {int(n):,} | failed: {r.get('error')} | | | | | | | |")
                continue
            rows = r["rows"]
            complete = rows["objects"] == d["truth"]["objects"] and rows["childs"] == d["truth"]["childs"]
            lines.append(
                f"| {int(n):,} | {r['wall_seconds']:.1f} | {r['requests']:,} | {r['requests'] / d['minimum_requests']:.2f} | "
                f"{rows['objects'] / r['wall_seconds']:,.0f} | {rows['childs'] / r['wall_seconds']:,.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['cpu_seconds']:.1f} | {rows['objects']:,} / {d['truth']['objects']:,} objects, {rows['childs']:,} / {d['truth']['childs']:,} childs{'' if complete else ' ✗'} |"
            )
        for n in sorted(s4, key=int):
            if s4[n]["run"].get("views_peak_rss_mb"):
                lines += [
                    "",
                    f"Building and reading the views on the {int(n):,}-conversation warehouse: peak RSS {s4[n]['run']['views_peak_rss_mb']:.0f} MB.",
                ]
    s6 = results.get("scenario6")
    if s6:
        lines += [
            "",
            "## 6. Requests per profile, after a small change, after none",
            "",
            "A full run (fan-out on, no latency, no rate limit, default settings) against the minimum for "
            "the endpoints used: per stream ceil(objects / 100) list calls, per conversation one transcript "
            "and the activity requests of the path the run used (`per_type`: one per type; `all_types`: one; "
            "`list_log`: none, the list's `includeActivityLog` holds them; told from the server's counts), "
            "on the documentation-shaped profile (`docs`: the list leaves out the messages' sender) one Get "
            "Object more, and the fixed calls. `per-type minimum` is what reading one request per type "
            "needs. Then, on the same state, a run after 1% of the conversations changed (the changes "
            "spread over an hour of the frozen server clock), and, the server's clock then running with "
            "real time as a real server's does, two runs after nothing changed: the first reads the hourly "
            "snapshot, last read before that hour (`snapshot due`), the second comes a few seconds later "
            "(`no change`, issue 15's target 5).",
            "",
            "| profile | conversations | activity path | activity requests | minimum per conversation | full run requests | minimum | × minimum | per-type minimum | after 1% changed | share of full | no change: requests | by endpoint | snapshot due: requests | by endpoint |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for profile, r in s6.items():
            full, inc, same = r["full"], r["incremental"], r["unchanged"]
            inc_run = inc.get("run", {})
            by_endpoint = ", ".join(
                f"{k} {v}" for k, v in sorted(same.get("requests_by_endpoint", {}).items())
            )
            due = r.get("unchanged_snapshot_due") or {}
            due_by_endpoint = ", ".join(
                f"{k} {v}" for k, v in sorted(due.get("requests_by_endpoint", {}).items())
            )
            lines.append(
                f"| {profile} | {r['dataset']['conversations']:,} | {r.get('activity_path', 'per_type')} | "
                f"{r.get('activity_requests', 0):,} | {r['per_conversation_minimum']:.0f} | {full.get('requests', 0):,} | "
                f"{r['minimum_requests']:,} | {_f(r['request_ratio'], 3)} | {_f(r.get('per_type_minimum'), 0)} | "
                f"{inc_run.get('requests', 0):,} | "
                f"{_f(inc.get('request_share_pct'), 2)}% | {same.get('requests', 0):,} | {by_endpoint} | "
                f"{due.get('requests', 0):,} | {due_by_endpoint or '–'} |"
            )
    lines += ["", "## 5. Views (DuckDB)", ""]
    for title, views in _view_sets(results):
        lines += [f"**{title}**", ""]
        if views.get("marts"):
            lines += [
                f"`build_views` took {views['build_seconds']:.2f} s. Each mart read whole (`select *`, fetched), twice; the faster is reported."
                + (
                    f" This warehouse was loaded without fan-out: `{'`, `'.join(views['empty_tables'])}` exist but are empty"
                    " (typed like scenario 1's), so marts driven by activities do less work here than on a full load."
                    if views.get("empty_tables")
                    else ""
                ),
                "",
                "| mart | seconds | first run s | rows |",
                "| --- | --- | --- | --- |",
            ]
            for name, v in sorted(views["marts"].items()):
                lines.append(f"| {name} | {v['seconds']:.3f} | {v['first_seconds']:.3f} | {v['rows']:,} |")
            lines.append("")
        else:
            lines += [f"Skipped: {views.get('skipped', 'not run')}.", ""]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    js.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md.write_text(render(results))
    return md, js


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
