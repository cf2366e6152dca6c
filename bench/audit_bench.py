"""Time `msgpolicy audit` on one log against two floors measured in the same run.

    python bench/audit_bench.py [LOG] [--lines 1000000 --seed 1] [--jobs 2]
        [--results-format parquet|jsonl] [--raw] [--diff [--diff-variant SPEC]]
        [--repeat N] [--json OUT.json] [--keep DIR]

Without LOG a log of `--lines` lines (5 % of them broken) is generated into a
temporary directory with `bench/generate.py`. For that one file it reports:

* the orjson floor: one process reads the file and `orjson.loads` every line;
* the DuckDB peer: `bench/peers/duckdb_2017.py`, one SQL query computing the
  2017 opt-out outcome of every message and writing Parquet (a child process);
* `msgpolicy audit LOG --results R.parquet --jobs N` as a child process, with
  `MSGPOLICY_STAGE_TIMES` naming a JSON file where the engine may write
  `{"stages": {name: seconds, ...}, "messages": judged, "lines": read}`; the
  stages are printed as they come (an engine that does not write the file just
  gets the wall figures);
* with `--raw`, the same audit of a copy of the log without `category` in any
  message (a raw export: every category is inferred from the text);
* with `--diff`, `msgpolicy diff LOG --variant SPEC` (two sides over the log).

Wall time is taken from outside each child. Peak memory is the sum of
proportional set sizes (Pss) over the child's process tree, and the largest
single RSS, sampled every 250 ms from /proc (reading smaps_rollup of large
processes is not free: at 50 ms the sampler took a third of a core). Forked
workers share pages, so summing their RSS would count them twice. With
`--repeat N` every figure is the minimum wall over N runs (peak memory: the
largest seen). The last lines are a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _tree_kib(pid: int) -> tuple[int, int]:
    """(sum of Pss, largest single Rss) in KiB over pid and its descendants."""
    total, largest, stack = 0, 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        largest = max(largest, int(line.split()[1]))
            with open(f"/proc/{p}/task/{p}/children") as fh:
                stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total, largest


def measured(cmd: list[str], env: dict | None = None, ok: tuple[int, ...] = (0,)) -> dict:
    """Run cmd as a child process: wall seconds and peak memory of its process tree."""
    # Standard error goes to a file: a pipe read only at the end would fill up (a child
    # that lists rejected lines there blocks at 64 KiB).
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=err)
        peak_pss = peak_rss = 0
        while proc.poll() is None:
            pss, rss = _tree_kib(proc.pid)
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            time.sleep(0.25)
        wall = time.perf_counter() - start
        if proc.returncode not in ok:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(cmd[:4])} … failed with exit status {proc.returncode}:\n{tail}")
    return {"wall_s": wall, "peak_pss_mib": peak_pss / 1024, "peak_rss_mib": peak_rss / 1024}


def best(runs: list[dict]) -> dict:
    """The fastest run, with the largest peak memory seen over all runs."""
    fastest = dict(min(runs, key=lambda r: r["wall_s"]))
    for key in ("peak_pss_mib", "peak_rss_mib"):
        if key in fastest:
            fastest[key] = max(r[key] for r in runs)
    fastest["runs"] = len(runs)
    return fastest


def orjson_floor(log: Path) -> dict:
    """Read LOG and orjson.loads every line, in this process."""
    start = time.perf_counter()
    lines = bad = 0
    loads = orjson.loads
    with open(log, "rb") as fh:
        for raw in fh:
            lines += 1
            try:
                loads(raw)
            except orjson.JSONDecodeError:
                bad += 1
    return {"wall_s": time.perf_counter() - start, "lines": lines, "invalid_json": bad}


def duckdb_peer(log: Path, tmp: Path) -> dict:
    out = tmp / "duckdb-2017.parquet"
    run = measured([sys.executable, str(BENCH / "peers" / "duckdb_2017.py"), str(log), "--out", str(out)])
    import duckdb

    run["messages"] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]
    return run


def audit(log: Path, tmp: Path, jobs: int, results_format: str, engine: str = "auto") -> dict:
    stages, summary = tmp / "stages.json", tmp / "summary.json"
    stages.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "engine.cli", "audit", str(log), "--jobs", str(jobs), "--engine", engine,
           "--results", str(tmp / f"results.{results_format}"), "--rejects", str(tmp / "rejects.jsonl"),
           "--format", "json", "-o", str(summary)]
    run = measured(cmd, env={"MSGPOLICY_STAGE_TIMES": str(stages)}, ok=(0, 1))
    counts = json.loads(summary.read_text())["counts"]
    run.update(lines=counts["read"], messages=counts["judged"], rejected=counts["rejected"],
               buyer_events=counts["buyer_events"])
    if stages.exists():
        run["stages"] = json.loads(stages.read_text()).get("stages", {})
    return run


def diff(log: Path, tmp: Path, jobs: int, variant: str) -> dict:
    cmd = [sys.executable, "-m", "engine.cli", "diff", str(log), "--variant", variant, "--jobs", str(jobs),
           "--summary-only", "--format", "json", "-o", str(tmp / "diff.json")]
    return measured(cmd, ok=(0, 1))


def strip_categories(log: Path, out: Path) -> None:
    """A raw export: the same lines with "category" removed from every message (broken lines as they are)."""
    with open(log, "rb") as src, open(out, "wb") as dst:
        for raw in src:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                dst.write(raw)
                continue
            if isinstance(obj, dict) and "message_id" in obj and obj.pop("category", None) is not None:
                raw = orjson.dumps(obj) + b"\n"
            dst.write(raw)


def cli_has(command: str) -> bool:
    return subprocess.run([sys.executable, "-m", "engine.cli", command, "--help"], cwd=ROOT,
                          capture_output=True).returncode == 0


def markdown(report: dict) -> str:
    a, floor = report["audit"], report["orjson_floor"]["wall_s"]
    rows = [("orjson parse, one process", floor, None, None),
            ("DuckDB: the 2017 query", report["duckdb_2017"]["wall_s"], report["duckdb_2017"]["messages"],
             report["duckdb_2017"]["peak_pss_mib"]),
            (f"`msgpolicy audit --jobs {report['jobs']}`", a["wall_s"], a["messages"], a["peak_pss_mib"])]
    if "raw" in report:
        r = report["raw"]
        rows.append(("audit of the raw copy (no `category`)", r["wall_s"], r["messages"], r["peak_pss_mib"]))
    if "diff" in report:
        d = report["diff"]
        rows.append((f"`msgpolicy diff --variant {report['diff_variant']}`", d["wall_s"], None, d["peak_pss_mib"]))
    out = [f"Log: `{report['log']}`, {a['lines']:,} lines ({a['messages']:,} judged, {a['rejected']:,} rejected, "
           f"{a['buyer_events']:,} events); best of {a['runs']} run(s).", "",
           "| run | wall | messages/s | peak Pss, process tree | × orjson floor |",
           "|---|---:|---:|---:|---:|"]
    for name, wall, messages, pss in rows:
        rate = f"{messages / wall:,.0f}" if messages else ""
        memory = f"{pss:,.0f} MiB" if pss is not None else ""
        out.append(f"| {name} | {wall:.2f} s | {rate} | {memory} | {wall / floor:.1f}× |")
    ratios = report["ratios"]
    out += ["", f"audit / orjson floor **{ratios['audit_over_orjson']:.1f}×**, "
                f"audit / DuckDB query **{ratios['audit_over_duckdb']:.1f}×**"
            + (f", raw / labelled {ratios['raw_over_labelled']:.1f}×" if "raw_over_labelled" in ratios else "")
            + (f", diff / audit {ratios['diff_over_audit']:.1f}×" if "diff_over_audit" in ratios else "")]
    if a.get("stages"):
        out += ["", "| audit stage | seconds | share of wall |", "|---|---:|---:|"]
        for name, sec in a["stages"].items():
            shown = (f"{sec:.2f} | {sec / a['wall_s']:.0%}" if isinstance(sec, (int, float)) else f"{sec} | ")
            out.append(f"| {name} | {shown} |")
    else:
        out += ["", "(the engine wrote no stage times)"]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, nargs="?", help="JSON Lines log (default: generate one)")
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines to generate without LOG (default 1M)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed without LOG")
    ap.add_argument("--jobs", type=int, default=2, help="passed to msgpolicy audit / diff")
    ap.add_argument("--engine", choices=("auto", "stream", "batch"), default="auto", help="passed to msgpolicy audit")
    ap.add_argument("--results-format", choices=("parquet", "jsonl"), default="parquet")
    ap.add_argument("--raw", action="store_true", help="also audit a copy without categories")
    ap.add_argument("--diff", action="store_true", help="also time msgpolicy diff")
    ap.add_argument("--diff-variant", default="alt:no-suspension-2017-03-31")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the minimum is reported")
    ap.add_argument("--json", type=Path, help="write the machine-readable summary here")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return bench(args, args.keep)
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        return bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a generated 1M log is half a gigabyte


def bench(args: argparse.Namespace, tmp: Path) -> int:
    log = args.log
    if log is None:
        log = tmp / "log.jsonl"
        print(f"generating {args.lines:,} lines into {log} …", file=sys.stderr)
        subprocess.run([sys.executable, str(BENCH / "generate.py"), "--messages", str(args.lines), "--seed",
                        str(args.seed), "--malformed", "0.05", "--out", str(log)], check=True, stdout=subprocess.DEVNULL)

    def repeat(label: str, fn, *fn_args) -> dict:
        print(f"{label} …", file=sys.stderr)
        return best([fn(*fn_args) for _ in range(args.repeat)])

    report = {"log": str(log), "jobs": args.jobs, "engine": args.engine, "results_format": args.results_format,
              "orjson_floor": repeat("orjson floor", orjson_floor, log),
              "duckdb_2017": repeat("DuckDB 2017 query", duckdb_peer, log, tmp),
              "audit": repeat("msgpolicy audit", audit, log, tmp, args.jobs, args.results_format, args.engine)}
    wall = report["audit"]["wall_s"]
    report["audit"]["messages_per_s"] = report["audit"]["messages"] / wall
    report["ratios"] = {"audit_over_orjson": wall / report["orjson_floor"]["wall_s"],
                        "audit_over_duckdb": wall / report["duckdb_2017"]["wall_s"]}
    if args.raw:
        raw_log = tmp / "raw.jsonl"
        strip_categories(log, raw_log)
        raw_dir = tmp / "raw"
        raw_dir.mkdir(exist_ok=True)
        report["raw"] = repeat("msgpolicy audit, raw", audit, raw_log, raw_dir, args.jobs, args.results_format,
                               args.engine)
        report["ratios"]["raw_over_labelled"] = report["raw"]["wall_s"] / wall
    if args.diff:
        if cli_has("diff"):
            report["diff_variant"] = args.diff_variant
            report["diff"] = repeat("msgpolicy diff", diff, log, tmp, args.jobs, args.diff_variant)
            report["ratios"]["diff_over_audit"] = report["diff"]["wall_s"] / wall
        else:
            print("this msgpolicy has no diff command; --diff skipped", file=sys.stderr)

    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
