"""`msgpolicy test` releases each variant's rulesets once its cases are judged (compile.Lease)."""
import pytest

from bench.policytest_memory import write_cases
from engine import compile as C
from engine import load_policies
from engine.compile import EngineError, Lease, compiled, live_rulesets
from engine.policytest import run_file


def _variant_names(policies):
    return {f"_{v.content_hash[:16]}" for v in policies.all_versions()}


def test_run_releases_every_variant_ruleset(tmp_path):
    before = live_rulesets()
    run = run_file(write_cases(tmp_path, 12))
    assert [r.passed for r in run.results] == [True] * 12
    after = live_rulesets()
    # nothing compiled for the variants is left in the compile cache or the durable host
    assert after["compiled"] <= before["compiled"]
    assert after["host"] <= before["host"]
    assert not C._holders


def test_released_then_recompiled_variant_decides_alike(tmp_path):
    cases = write_cases(tmp_path, 10)
    first = [(r.name, r.got) for r in run_file(cases).results]
    again = [(r.name, r.got) for r in run_file(cases).results]
    assert first == again
    assert [got["outcome"] for _, got in first] == ["violation"] * 8 + ["allowed"] * 2


def test_lease_keeps_what_is_used_outside_it():
    version = next(v for v in load_policies().all_versions() if v.enabled_rules)
    outside = compiled(version)  # asked for outside any lease: kept for the process
    with Lease():
        assert compiled(version) is outside
    assert compiled(version) is outside and not outside.released
    assert outside.name in live_rulesets()["host"]


def _overlay_version(tmp_path, days):
    from engine.whatif import parse_side

    (tmp_path / f"w{days}.yaml").write_text(
        f"title: w\nfamilies:\n  2020-contact-guidelines:\n    versions:\n"
        f"      base:\n        parameters: {{window_days: {days}}}\n")
    policies = parse_side([f"overlay:{tmp_path / f'w{days}.yaml'}"]).load(None)
    return next(v for v in policies.all_versions() if v.family == "2020-contact-guidelines" and v.id == "base")


def test_lease_releases_and_a_released_ruleset_refuses_use(tmp_path):
    version = _overlay_version(tmp_path, 3)
    facts = {n: (d[0] if d else "US") for n, d in version.fact_domains.items()}
    with Lease():
        held = compiled(version)
        fired = held.fired(facts)
        assert held.name in live_rulesets()["host"]
    assert held.released and held.name not in live_rulesets()["host"]
    with pytest.raises(EngineError, match="released"):
        held.fired(facts)
    with Lease():
        assert compiled(version).fired(facts) == fired


def test_another_lease_hold_outlives_an_inner_lease(tmp_path):
    version = _overlay_version(tmp_path, 4)
    outer = Lease().hold([version])
    with Lease():
        inner = compiled(version)
    assert not inner.released  # the outer lease still holds it
    outer.close()
    assert inner.released and inner.name not in live_rulesets()["host"]
