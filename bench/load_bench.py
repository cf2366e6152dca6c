"""Time the batch audit's read + validate stage (engine.batch.load) on JSON Lines logs.

    python bench/load_bench.py LOG [LOG ...] [--repeat N]

Prints, per run, the wall seconds of `load` and what it read: messages and
events taken, rejects, messages validated one by one, blank lines. With
`--repeat N` the last line is the minimum over N runs (the machine may be shared).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.batch.load import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        loaded = load(list(args.logs), None, time.time(), ())
        wall = time.perf_counter() - start
        best = min(best, wall)
        print(f"load {wall:.2f} s: {loaded.read} read, {len(loaded.messages)} messages, {len(loaded.events)} events, "
              f"{len(loaded.rejects)} rejects, {dict.__len__(loaded.objects)} messages validated one by one, "
              f"{loaded.blank} blank", flush=True)
    if args.repeat > 1:
        print(f"best of {args.repeat}: {best:.2f} s")


if __name__ == "__main__":
    main()
