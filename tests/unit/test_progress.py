"""The audit's progress bar: on standard error when it is a terminal, with the true record count,
a writing phase and a closing line; nothing when stderr is not a terminal or under --quiet."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.progress import count_records

from ..conftest import ROOT

SAMPLE = ROOT / "samples" / "2017-2025-sample.jsonl"


def _audited_read(path) -> int:
    r = CliRunner().invoke(main, ["audit", str(path), "--format", "json"])
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.stdout)["counts"]["read"]


def test_the_total_is_the_number_of_records_the_audit_reads(tmp_path):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    # blank lines, runs of them and a last line without a line break are not records
    jsonl = tmp_path / "gaps.jsonl"
    jsonl.write_bytes(b"\n" + lines[0] + b"\n\n\n" + b"".join(lines[1:-1]) + b"\n" + lines[-1].rstrip(b"\n"))
    assert count_records([jsonl]) == _audited_read(jsonl) == len(lines)
    assert count_records([SAMPLE, jsonl]) == 2 * len(lines)


def test_csv_and_parquet_totals(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_file = tmp_path / "log.csv"
    csv_file.write_text('message_id,body\nA,"two\nlines"\nB,plain\n', encoding="utf-8")
    assert count_records([csv_file]) == 2
    table = pa.table({"message_id": ["A", "B", "C"]})
    pq.write_table(table, tmp_path / "log.parquet")
    assert count_records([tmp_path / "log.parquet"]) == 3
    assert count_records([tmp_path / "missing.jsonl"]) is None


def _audit_with_stderr_on_a_terminal(*args, env=None):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "audit", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "140", **(env or {})})
    os.close(slave)
    received = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the terminal closes with the process
            break
        if not data:
            break
        received.append(data)
    out = proc.stdout.read()
    proc.wait()
    os.close(master)
    return proc.returncode, out, b"".join(received).decode("utf-8", "replace")


def test_the_bar_shows_on_a_terminal_even_with_stdout_piped(tmp_path):
    report, results = tmp_path / "report.html", tmp_path / "results.jsonl"
    code, out, err = _audit_with_stderr_on_a_terminal(SAMPLE, "--format", "html", "-o", report, "--results", results)
    assert code == 1 and out == b""
    records = len(SAMPLE.read_bytes().splitlines())
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err)
    assert f"{records}/{records}" in plain and "auditing" in plain
    assert f"writing results to {results}" in plain
    last = plain.strip().splitlines()[-1]
    assert last == f"wrote report to {report}, {records - 1} per-message result(s) to {results}"


def test_no_color_and_quiet(tmp_path):
    code, _, err = _audit_with_stderr_on_a_terminal(SAMPLE, "-o", tmp_path / "r.txt", env={"NO_COLOR": "1"})
    assert code == 1 and "auditing" in err
    assert not re.search(r"\x1b\[(?:\d+;)*(?:3\d|9\d)m", err), "colour codes under NO_COLOR"
    code, _, err = _audit_with_stderr_on_a_terminal(SAMPLE, "-o", tmp_path / "r.txt", "--quiet")
    assert code == 1 and err == ""


def test_nothing_on_stderr_when_it_is_not_a_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "audit", str(SAMPLE), "-o", str(tmp_path / "r.txt")],
                          capture_output=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr == b""
