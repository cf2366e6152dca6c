"""A SIGKILLed batch audit cannot remove its work folder; the next batch audit does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.batch.pipeline import _FOLDER_PREFIX, _process_identity, _sweep_abandoned

ROOT = Path(__file__).resolve().parents[2]


def _folder(parent: Path, name: str, owner: str | None) -> Path:
    folder = parent / (_FOLDER_PREFIX + name)
    folder.mkdir()
    (folder / "share.0.0").write_bytes(b"x")
    if owner is not None:
        (folder / "owner").write_text(owner)
    return folder


def test_only_folders_of_gone_processes_are_swept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = _process_identity(os.getpid())
    dead = _folder(tmp_path, "dead", f"{gone.pid} 1")
    reused = _folder(tmp_path, "reused", f"{os.getpid()} 1")  # a live pid, another start time
    live = _folder(tmp_path, "live", me)
    being_made = _folder(tmp_path, "new", None)
    other = tmp_path / "someone-else"
    other.mkdir()
    _sweep_abandoned(tmp_path)
    assert not dead.exists() and not reused.exists()
    assert live.exists() and being_made.exists() and other.exists()


def _log(path: Path, n: int) -> Path:
    lines = [('{"message_id":"m%d","order_id":"o%d","buyer_id":"b%d","marketplace":"US",'
              '"sent_at":"2021-0%d-10T10:00:00Z","initiated_by":"seller","category":"order_info_request",'
              '"subject":"Your order","body":"Hello, what colour would you like? Thanks"}' % (i, i, i % 97, 1 + i % 9))
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_killed_audits_folder_is_removed_by_the_next(tmp_path):
    work = tmp_path / "tmp"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(work), "PYTHONPATH": str(ROOT)}
    log = _log(tmp_path / "log.jsonl", 60_000)
    cmd = [sys.executable, "-m", "engine.cli", "audit", str(log), "--engine", "batch", "--jobs", "2", "-q",
           "--results", str(tmp_path / "r.jsonl")]
    audit = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any((f / "owner").exists() for f in work.glob(_FOLDER_PREFIX + "*")):
            assert audit.poll() is None, "the audit ended before its work folder was seen"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        audit.send_signal(signal.SIGKILL)
    finally:
        audit.wait(timeout=30)
    left = list(work.glob(_FOLDER_PREFIX + "*"))
    assert left  # what the sweep is for
    small = _log(tmp_path / "small.jsonl", 50)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "audit", str(small), "--engine", "batch", "--jobs", "2",
                           "-q", "--results", str(tmp_path / "r2.jsonl")], env=env, capture_output=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # 1: the audit found violations
    assert not any(f.exists() for f in left)
