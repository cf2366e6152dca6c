"""Audit verdicts equal the per-message `check` path on 50,000+ generated messages.

The check path is `judge_records(..., cache=False)`: every fact vector of every
message goes to durable_rules, history is rebuilt from the whole (time-sorted)
log. The audit streams, caches decisions per fact vector, bounds its history and
splits the log over two workers. durable_rules 2.0.28 crashes when one process
posts to several rulesets (see engine.audit._RulesetProcess), so the check path
here reaches durable_rules through the same one-process-per-version helpers;
it still sends every vector, uncached.
"""
from __future__ import annotations

import orjson
import pytest

import engine.evaluate as evaluate
from engine.audit import AuditConfig, _RulesetProcess, audit
from engine.check import validate_against_policies
from engine.evaluate import judge_records
from engine.io import InputError, to_record
from engine.cli import verdict_json

from .gen import write

N = 54_000


@pytest.fixture()
def isolated_durable(monkeypatch):
    helpers: dict = {}

    def _engine(self, version):
        helper = helpers.get(version.content_hash)
        if helper is None:
            helper = helpers[version.content_hash] = _RulesetProcess(version)
        return helper

    monkeypatch.setattr(evaluate.Judge, "_engine", _engine)
    yield
    for h in helpers.values():
        h.close()


def test_audit_equals_check_path(policies, tmp_path, isolated_durable):
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
