"""Audit verdicts equal the per-message `check` path on 50,000+ generated messages.

The check path is `judge_records(..., cache=False)`: every fact vector of every
message goes to durable_rules, history is rebuilt from the whole (time-sorted)
log. The audit streams, caches decisions per fact vector and rendered verdict,
bounds its history and splits the log over two workers.
"""
from __future__ import annotations

import orjson
import pytest

from engine.audit import AuditConfig, audit
from engine.check import validate_against_policies
from engine.evaluate import judge_records
from engine.io import InputError, to_record
from engine.cli import verdict_json

from .gen import write

N = 54_000


def test_audit_equals_check_path(policies, tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, N, seed=2024, malformed=0.03)
    results, rejects = tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    result = audit(policies, AuditConfig(paths=[log], jobs=2, results=results, rejects=rejects))
    s = result.summary
    assert s.balanced and s.judged >= 50_000

    rejected_lines = {orjson.loads(l)["line"] for l in rejects.read_bytes().splitlines()}
    records, seen = [], set()
    for number, raw in enumerate(log.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = to_record(orjson.loads(raw), str(log), number)
        except orjson.JSONDecodeError:
            assert number in rejected_lines
            continue
        if not isinstance(item, InputError):
            item = validate_against_policies(item, policies, str(log), number, seen)
        if isinstance(item, InputError):
            assert number in rejected_lines, item
            continue
        assert number not in rejected_lines
        records.append(item)

    expected = [orjson.dumps(verdict_json(v)) for v in judge_records(policies, records, cache=False)]
    got = results.read_bytes().splitlines()
    assert len(got) == len(expected) == s.judged
    mismatches = [(a, b) for a, b in zip(got, expected) if a != b]
    assert not mismatches[:3], f"{len(mismatches)} mismatches"
