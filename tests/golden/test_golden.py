"""Data-driven golden cases: one YAML file per policy version under tests/golden/<family>/.

File format::

    version: rollout            # the version the cases exercise (checked)
    cases:
      - name: E1 opted-out review request by email
        source: brief E1        # where the expectation comes from
        on: 2020-11-04          # optional: judge as if sent then (date or timestamp)
        alternatives: []        # optional: recorded alternatives to select
        log:                    # records in CONTRACT §1 form; earlier ones are history
          - {...}
        expect:                 # message_id → expected outcome and the exact set of rule ids found
          E1: {outcome: blocked, rules: [D2]}

Every case runs through durable_rules and through the reference interpreter.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from engine import judge_records, load_policies
from engine.io import InputError, to_record

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _cases():
    for path in sorted(HERE.glob("*/*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            yield pytest.param(path, doc["version"], case, id=f"{path.parent.name}/{path.stem}: {case['name']}")


def _when(value):
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return value
    return dt.datetime.fromisoformat(str(value))


_policy_cache: dict = {}


def _policies(alternatives):
    key = tuple(alternatives)
    if key not in _policy_cache:
        _policy_cache[key] = load_policies(ROOT / "policies", alternatives=key)
    return _policy_cache[key]


@pytest.mark.parametrize("path,version,case", list(_cases()))
@pytest.mark.parametrize("evaluator", ["durable", "reference"])
def test_golden_case(path, version, case, evaluator):
    policies = _policies(case.get("alternatives", []))
    family = path.parent.name
    records = []
    for i, raw in enumerate(case["log"], start=1):
        # YAML turns unquoted timestamps into datetimes; the contract's form is a string.
        raw = {k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v) for k, v in raw.items()}
        record = to_record(raw, str(path), i)
        assert not isinstance(record, InputError), str(record)
        records.append(record)
    verdicts = {v.message_id: v for v in judge_records(policies, records, at=_when(case.get("on")), evaluator=evaluator)}
    for message_id, expected in case["expect"].items():
        verdict = verdicts[message_id]
        versions = {(p.policy, p.version) for p in verdict.policies}
        if expected["outcome"] != "no_policy" and not case.get("alternatives"):
            assert (family, version) in versions, f"{message_id} was judged under {versions}, not {family}/{version}"
        got_rules = sorted({f.rule for f in verdict.findings})
        assert verdict.outcome.value == expected["outcome"], (message_id, verdict.model_dump(mode="json"))
        assert got_rules == sorted(expected.get("rules", [])), (message_id, verdict.model_dump(mode="json"))
