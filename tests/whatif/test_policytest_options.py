"""`msgpolicy test --run REGEX`, `--coverage` and `--format junit`."""
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from engine import load_policies
from engine.cli import main

from ..conftest import POLICIES

# Two passing cases and one failing one (a review request to an opted-out buyer is blocked, not allowed).
CASES = """
defaults: {on: 2020-11-10}
cases:
  - name: emoji is a violation
    record: {order_id: 111-0000001-0000002, buyer_id: B1, sent_at: "2020-11-10T10:00:00-08:00",
             category: review_request, buyer_opted_out: false, language: en, buyer_language: en,
             delivered_at: "2020-11-01T10:00:00-08:00", body: "Please leave a review of order 111-0000001-0000002 ☀"}
    expect: {outcome: violation, rules_include: [CG2020-STYLE-EMOJI]}
  - name: suspension decides nothing
    on: 2017-04-03
    record: {order_id: 111-0000001-0000003, buyer_id: B2, sent_at: "2017-04-03T10:00:00-07:00",
             category: review_request, buyer_opted_out: true}
    expect: {outcome: allowed, rules: [S1]}
  - name: opted-out review request wrongly expected allowed
    on: 2017-03-28
    record: {order_id: 111-0000001-0000004, buyer_id: B3, sent_at: "2017-03-28T10:00:00-07:00",
             category: review_request, buyer_opted_out: true}
    expect: {outcome: allowed}
"""


@pytest.fixture()
def cases(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text(CASES, encoding="utf-8")
    return path


def run(*args):
    return CliRunner().invoke(main, ["test", *map(str, args)])


def test_run_selects_cases_by_name(cases):
    r = run(cases, "--run", "emoji|suspension", "-v")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == "2/2 case(s) passed (1 not selected by --run)"
    assert "wrongly" not in r.stdout
    r = run(cases, "--run", "^opted-out")
    assert r.exit_code == 1 and "FAIL" in r.stdout and "outcome blocked, expected allowed" in r.stdout
    r = run(cases, "--run", "nothing matches this")
    assert r.exit_code == 0 and r.stdout.startswith("0/0 case(s) passed (3 not selected")
    r = run(cases, "--run", "(unclosed")
    assert r.exit_code == 2 and "--run" in r.output


def test_coverage_names_the_rules_no_case_fires(cases):
    policies = load_policies(POLICIES)
    every = {(v.family, v.id, r.id) for v in policies.all_versions() for r in v.enabled_rules}
    r = run(cases, "--run", "emoji|suspension", "--coverage", "--format", "json")
    assert r.exit_code == 0, r.output
    cov = json.loads(r.stdout)["coverage"]
    missing = {(*version.split("/"), rule) for version, rules in cov["not_exercised"].items() for rule in rules}
    assert cov["rules"] == len(every) and missing < every
    assert cov["exercised"] == len(every) - len(missing)
    # what the two selected cases fired is covered, in the version that fired it; the rest is not
    assert ("2017-optout", "suspension", "S1") not in missing
    assert ("2020-contact-guidelines", "base", "CG2020-STYLE-EMOJI") not in missing
    assert ("2017-optout", "rollout", "D2") in missing  # only the deselected case fires it
    text = run(cases, "--coverage").stdout
    assert "2017-optout/rollout: " in text and f"/{len(every)} rules exercised" in text
    assert "D2" not in text.split("2017-optout/rollout: ")[1].splitlines()[0]  # the failing case fired it


def test_junit_report_is_well_formed_and_counts_agree(cases):
    r = run(cases, "--run", "emoji|opted-out", "--format", "junit")
    assert r.exit_code == 1
    root = ET.fromstring(r.stdout.encode())
    assert root.tag == "testsuites"
    [suite] = root
    assert suite.tag == "testsuite" and suite.get("name") == str(cases)
    testcases = list(suite)
    assert all(c.tag == "testcase" and c.get("name") and c.get("classname") == str(cases) for c in testcases)
    assert all(float(c.get("time")) >= 0 for c in testcases) and float(suite.get("time")) >= 0
    failed = [c for c in testcases if c.find("failure") is not None]
    skipped = [c for c in testcases if c.find("skipped") is not None]
    assert [c.get("name") for c in failed] == ["opted-out review request wrongly expected allowed"]
    assert failed[0].find("failure").get("message") == "outcome blocked, expected allowed"
    assert "got blocked" in failed[0].find("failure").text
    assert [c.get("name") for c in skipped] == ["suspension decides nothing"]
    for element in (root, suite):
        assert element.get("tests") == "3" and element.get("failures") == "1"
        assert element.get("skipped") == "1" and element.get("errors") == "0"
