"""Audit one log end to end and report wall time, messages/s and peak RSS.

    python bench/audit_bench.py LOG [--jobs N] [--results OUT.jsonl]

Runs `msgpolicy audit` as a child process (parse → verdict → results file), so the
figures include start-up, the workers and the ordered merge. Peak RSS is the
sum of proportional set sizes (Pss) over the process tree, and the
largest single RSS, sampled every 250 ms from /proc (reading smaps_rollup of
large processes is not free: at 50 ms the sampler took a third of a core).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tree_kib(pid: int) -> tuple[int, int]:
    """(sum of Pss, largest single VmRSS) over pid and its descendants. Forked workers
    share pages, so summing RSS would count them twice; Pss splits shared pages."""
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--results", type=Path, help="results file (default: a temporary .jsonl)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    results = args.results or tmp / "results.jsonl"
    summary = tmp / "summary.json"
    cmd = [sys.executable, "-m", "engine.cli", "audit", str(args.log), "--jobs", str(args.jobs),
           "--results", str(results), "--rejects", str(tmp / "rejects.jsonl"), "--format", "json",
           "-o", str(summary)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_pss = peak_rss = 0
    while proc.poll() is None:
        pss, rss = _tree_kib(proc.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(0.25)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        print(f"audit failed with exit status {proc.returncode}", file=sys.stderr)
        return 2
    counts = json.loads(summary.read_text())["counts"]
    judged = counts["judged"]
    print(json.dumps({
        "log": str(args.log), "jobs": args.jobs, "read": counts["read"], "judged": judged,
        "rejected": counts["rejected"], "buyer_events": counts["buyer_events"],
        "wall_s": round(wall, 2), "records_per_s": round(counts["read"] / wall),
        "messages_per_s": round(judged / wall), "peak_pss_mib_process_tree": round(peak_pss / 1024, 1),
        "peak_rss_mib_largest_process": round(peak_rss / 1024, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
