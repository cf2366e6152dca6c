"""Peak memory of `msgpolicy test` over many distinct overlays (one case each).

    python bench/policytest_memory.py --variants 1200

Writes N overlays (the 2020 guidelines with window_days 1..N, so every variant
has its own policy content) and a cases file with one case per overlay, runs
`msgpolicy test` on it in a child process and prints the child's peak RSS
(getrusage of the children) and wall time.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECORD = ('{order_id: 111-0000001-0000001, buyer_id: B1, sent_at: "2020-11-10T10:00:00-08:00", '
          'category: review_request, buyer_opted_out: false, language: en, buyer_language: en, '
          'delivered_at: "2020-11-01T10:00:00-08:00", body: "Please leave a review of order 111-0000001-0000001."}')


def write_cases(directory: Path, variants: int) -> Path:
    lines = ["defaults:\n  on: 2020-11-10\ncases:\n"]
    for i in range(1, variants + 1):
        (directory / f"w{i}.yaml").write_text(
            f"title: window {i}\nfamilies:\n  2020-contact-guidelines:\n    versions:\n"
            f"      base:\n        parameters: {{window_days: {i}}}\n")
        # delivered 9 days before: allowed from a window of 9 days on
        outcome = "allowed" if i >= 9 else "violation"
        lines.append(f"  - name: window {i}\n    variant: overlay:w{i}.yaml\n    record: {RECORD}\n"
                     f"    expect: {{outcome: {outcome}}}\n")
    cases = directory / "cases.yaml"
    cases.write_text("".join(lines))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=1200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = write_cases(Path(tmp), args.variants)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(cases)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        seconds = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    last = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"variants {args.variants}: exit {done.returncode}, peak RSS {peak_mib:.0f} MiB, {seconds:.1f} s; {last}")
    if done.returncode not in (0, 1):
        print(done.stderr, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
