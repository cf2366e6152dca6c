"""A batch audit worker process: `python -m engine.batch.worker FOLDER N` judges share N
of the task in FOLDER (engine.batch.pipeline writes the task and reads the answer)."""
from __future__ import annotations

import sys
from pathlib import Path

from .pipeline import run_share

if __name__ == "__main__":
    run_share(Path(sys.argv[1]), int(sys.argv[2]))
