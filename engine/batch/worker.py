"""A batch audit worker process: `python -m engine.batch.worker FOLDER N` judges share N
of the task in FOLDER (engine.batch.pipeline writes the task and reads the answer)."""
from __future__ import annotations

import sys
from pathlib import Path

from .pipeline import run_share

if __name__ == "__main__":
    # Started while the parent still reads the log, so the imports above overlap its read.
    # "go": the task files are written; end of input: the audit was abandoned.
    if sys.stdin.readline().strip() == "go":
        run_share(Path(sys.argv[1]), int(sys.argv[2]))
