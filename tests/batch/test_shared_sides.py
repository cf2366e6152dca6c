"""Audits of several policy sides over one read of a log (`diff`, `--sensitivity`) give each
side exactly the results and rejects of its own audit."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.audit import AuditConfig, audit
from engine.batch.pipeline import audit_batch_sides
from engine.policyfile import load_policies

from ..audit.gen import write


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_side_of_a_shared_audit_is_its_own_audit(tmp_path: Path, jobs: int):
    log = tmp_path / "log.jsonl"
    write(log, 12_000, seed=515, malformed=0.03)
    alternative = sorted(load_policies().alternative_names())[0]
    sides = [(load_policies(), None), (load_policies(alternatives=(alternative,)), None),
             (load_policies(), dt.date(2021, 3, 1))]
    configs = [(p, AuditConfig(paths=[log], jobs=jobs, at=on, engine="batch", results=tmp_path / f"s{i}.jsonl",
                               rejects=tmp_path / f"s{i}.rejects.jsonl"))
               for i, (p, on) in enumerate(sides)]
    shared = audit_batch_sides(configs)
    for i, (policies, on) in enumerate(sides):
        alone = audit(policies, AuditConfig(paths=[log], jobs=jobs, at=on, engine="batch",
                                            results=tmp_path / f"a{i}.jsonl", rejects=tmp_path / f"a{i}.rejects.jsonl"))
        assert (tmp_path / f"s{i}.jsonl").read_bytes() == (tmp_path / f"a{i}.jsonl").read_bytes()
        assert (tmp_path / f"s{i}.rejects.jsonl").read_bytes() == (tmp_path / f"a{i}.rejects.jsonl").read_bytes()
        assert shared[i].summary.outcomes == alone.summary.outcomes
        assert shared[i].summary.judged == alone.summary.judged > 10_000
    # The sides differ somewhere, or the test would not tell sides apart.
    assert (tmp_path / "s0.jsonl").read_bytes() != (tmp_path / "s2.jsonl").read_bytes()
