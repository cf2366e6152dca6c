"""`-` as standard input and standard output across the commands that read or write files."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "2017-2025-sample.jsonl"


@pytest.fixture
def scratch_root(tmp_path, monkeypatch) -> Path:
    """Where the command's temporary directories go, to see that none is left behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _run(args, stdin=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=False)


@pytest.mark.parametrize("engine", ["stream", "batch"])
def test_audit_stdin_results_stdout_are_the_bytes_of_a_results_file(tmp_path, scratch_root, engine):
    results = tmp_path / "results.jsonl"
    to_file = _run(["audit", SAMPLE, "--engine", engine, "--jobs", 1, "--results", results, "-q"])
    assert to_file.exit_code == 1, to_file.output
    piped = _run(["audit", "-", "--engine", engine, "--jobs", 1, "--results", "-", "-q"], SAMPLE.read_bytes())
    assert piped.exit_code == 1, piped.stderr
    assert piped.stdout_bytes == results.read_bytes()
    # stdout holds only result lines; the text report went to standard error
    assert "findings by rule" in piped.stderr
    assert list(scratch_root.iterdir()) == []


def test_audit_stdin_is_named_dash_in_rejects_and_provenance(tmp_path, scratch_root):
    log = SAMPLE.read_bytes() + b'{"message_id": 5}\n'
    rejects, summary = tmp_path / "rejects.jsonl", tmp_path / "summary.json"
    r = _run(["audit", "-", "--rejects", rejects, "--format", "json", "-o", summary, "-q"], log)
    assert r.exit_code == 1, r.stderr
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["source"] == "-" and reject["field"] == "message_id"
    assert list(json.loads(summary.read_text())["provenance"]["inputs"]) == ["-"]
    on_stdout = _run(["audit", "-", "--rejects", "-", "-q", "-o", tmp_path / "report.txt"], log)
    assert on_stdout.stdout_bytes == rejects.read_bytes()
    assert list(scratch_root.iterdir()) == []


def test_audit_stdin_spool_is_removed_on_error_too(scratch_root):
    r = _run(["audit", "-", "-q"], b'{"message_id": 5}\n')
    assert r.exit_code == 2
    assert "nothing was judged" in r.stderr
    assert list(scratch_root.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["audit", SAMPLE, "--results", "-", "-o", "-"], "--results and -o both name standard output"),
    (["audit", SAMPLE, "--results", "-", "--rejects", "-"], "--results and --rejects both name"),
    (["audit", "-", "-"], "- (standard input) can be given only once"),
    (["diff", SAMPLE, "--variant", "on=2021-01-01", "--changes", "-", "-o", "-"], "--changes and -o both name"),
])
def test_two_outputs_on_stdout_are_refused(args, words):
    r = _run(args, b"")
    assert r.exit_code == 2
    assert words in r.stderr


def test_diff_stdin_changes_stdout_are_the_bytes_of_a_changes_file(tmp_path, scratch_root):
    changes = tmp_path / "changes.jsonl"
    to_file = _run(["diff", SAMPLE, "--variant", "on=2021-01-01", "--jobs", 1, "--changes", changes,
                    "-o", tmp_path / "report.txt"])
    assert to_file.exit_code == 1, to_file.stderr
    piped = _run(["diff", "-", "--variant", "on=2021-01-01", "--jobs", 1, "--changes", "-"], SAMPLE.read_bytes())
    assert piped.exit_code == 1, piped.stderr
    assert piped.stdout_bytes == changes.read_bytes() and changes.read_bytes()
    assert "changed" in piped.stderr  # the report, on standard error
    assert list(scratch_root.iterdir()) == []


def test_policy_tests_refuse_stdin_with_the_reason():
    r = _run(["test", "-"], b"")
    assert r.exit_code == 2 and "test cases are read from files" in r.stderr
