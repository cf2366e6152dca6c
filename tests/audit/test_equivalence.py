"""Audit verdicts equal the per-message `check` path on 50,000+ generated messages.

The check path is `judge_records(..., cache=False)`: every fact vector of every
message goes to durable_rules, history is rebuilt from the whole (time-sorted)
log. The audit streams, caches decisions per fact vector and rendered verdict,
bounds its history and splits the log over two workers.
"""
from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from engine.audit import AuditConfig, audit
from engine.check import validate_against_policies
from engine.evaluate import judge_records
from engine.io import InputError, to_record
from engine.cli import verdict_json

from .gen import records, write

CORPUS = Path(__file__).resolve().parents[2] / "policies" / "classifier" / "labelled_corpus.jsonl"

N = 54_000


def _assert_audit_equals_check(policies, log, tmp_path, min_judged):
    results, rejects = tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    result = audit(policies, AuditConfig(paths=[log], jobs=2, results=results, rejects=rejects))
    s = result.summary
    assert s.balanced and s.judged >= min_judged

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
    return s


def test_audit_equals_check_path(policies, tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, N, seed=2024, malformed=0.03)
    _assert_audit_equals_check(policies, log, tmp_path, 50_000)


# Texts whose category the classifier cannot tell (the corpus texts it learnt from it mostly can).
VAGUE = ["Hello.", "A quick note about your order.", "Please see the message below.",
         "We need a quick answer from you."]


def test_audit_equals_check_path_on_raw_records(policies, tmp_path):
    """Records without category or language: the audit caches decisions per (fact vector,
    uncertain candidates) and renders the inference notes per message."""
    corpus = [orjson.loads(l) for l in CORPUS.read_bytes().splitlines() if l.strip()]
    rng = random.Random(7)
    log = tmp_path / "raw.jsonl"
    with open(log, "wb") as fh:
        for raw in records(3000, seed=99, start="2019-06-01"):
            rec = orjson.loads(raw)
            if "message_id" in rec and rng.random() < 0.6:
                example = rng.choice(corpus)
                rec["subject"], rec["body"] = example["subject"], example["body"]
                if rng.random() < 0.2:  # too little evidence for one category: uncertain candidates
                    rec["subject"], rec["body"] = "Your order", rng.choice(VAGUE)
                if rng.random() < 0.6:
                    rec.pop("category", None)
                if rng.random() < 0.7:
                    rec["buyer_language"] = rng.choice(("en", "de", "fr", "ja"))
            fh.write(orjson.dumps(rec) + b"\n")
    s = _assert_audit_equals_check(policies, log, tmp_path, 2000)
    inferred = {key[3] for key in s.by_rule if key[1] == "classifier"}
    assert inferred == {"INFER-CATEGORY", "INFER-LANGUAGE"}
    assert any(key[0] == "indeterminate" and key[3] == "INFER-CATEGORY" for key in s.by_rule)
