"""A batch audit worker process: `python -m engine.batch.worker FOLDER N` judges share N
of the task in FOLDER (engine.batch.pipeline writes the task and reads the answer)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..audit import _die_with_parent
from .pipeline import read_share, run_share

if __name__ == "__main__":
    # Started before the task is written, so the imports above overlap the parent's work.
    # "read": read a share of the log, say "read", then wait for "go" (every share handed out);
    # "go": the task files are written; end of input: the audit was abandoned.
    folder, worker = Path(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(int(sys.argv[3]))  # a killed audit leaves no worker behind
    command = sys.stdin.readline().strip()
    if command == "read":
        read_share(folder, worker)
        sys.stdout.write("read\n")
        sys.stdout.flush()
        command = sys.stdin.readline().strip()
    if command == "go":
        run_share(folder, worker)
