"""`msgpolicy diff`, `msgpolicy test` and `audit --sensitivity` on the command line: outputs and exit statuses."""
import json

import orjson
import pytest
from click.testing import CliRunner

from engine.cli import main

from .conftest import WINDOW_14


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_diff_exit_statuses(small_log, overlays):
    assert run("diff", small_log, "--variant", f"overlay:{overlays['cosmetic']}").exit_code == 0
    r = run("diff", small_log, "--baseline", "on=2017-03-30", "--variant", "on=2017-04-01", "--format", "json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["changed"] == len(data["changes"]) > 0 and data["mode"] == "log"
    assert run("diff", small_log, "--variant", "when=2017").exit_code == 2
    assert run("diff", small_log, "--variant", "alt:nope").exit_code == 2
    assert run("diff", "--variant", "alt:no-suspension-2017-03-31").exit_code == 2  # no log, no --exhaustive
    assert run("diff", small_log, "--exhaustive", "--variant", "on=2017-04-01").exit_code == 2
    assert run("diff", "missing.jsonl", "--variant", "on=2017-04-01").exit_code == 2


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "html"])
def test_diff_formats(small_log, tmp_path, fmt):
    out, changes = tmp_path / f"d.{fmt}", tmp_path / "changes.jsonl"
    r = run("diff", small_log, "--baseline", "on=2017-03-30", "--variant", "on=2017-04-01", "--format", fmt, "-o", out,
            "--changes", changes)
    assert r.exit_code == 1, r.output
    text = out.read_text()
    lines = [orjson.loads(l) for l in changes.read_bytes().splitlines()]
    assert lines and all(c["message_id"] in text for c in lines[:5])
    assert fmt == "csv" or "on=2017-04-01" in text


def test_exhaustive_cli():
    r = run("diff", "--exhaustive", "--baseline", "on=2017-03-30", "--variant", "on=2017-04-01", "--format", "json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["space"]["vectors"] == 15360 and data["outcomes"]
    assert all(reg["verified"] for row in data["outcomes"] for reg in row["regions"])
    r = run("diff", "--exhaustive", "--baseline", "on=2017-04-02", "--variant", "on=2017-04-05")
    assert r.exit_code == 0 and "no differences" in r.stdout


def test_audit_sensitivity(tmp_path):
    from ..audit.gen import write
    small_log = tmp_path / "log.jsonl"
    write(small_log, 300, seed=3, start="2017-03-25", end="2020-11-30")
    out = tmp_path / "s.json"
    r = run("audit", small_log, "--sensitivity", "--format", "json", "-o", out, "--jobs", 1,
            "--results", tmp_path / "r.jsonl")
    assert r.exit_code == 1, r.output
    s = json.loads(out.read_text())["sensitivity"]
    assert s["flagged"] > 0 and set(s["alternatives"]) >= {"guidelines-from-2020-11-06", "no-suspension-2017-03-31"}
    m = s["messages"][0]
    assert m["outcome"] and m["alternatives"][0]["outcome"] and m["alternatives"][0]["outcome"] != m["outcome"] \
        or m["alternatives"][0]["appeared"] or m["alternatives"][0]["disappeared"]
    assert "sensitivity:" in run("audit", small_log, "--sensitivity", "--jobs", 1).stdout


CASES = """\
defaults:
  on: 2020-11-10
cases:
  - name: neutral review request
    record: {message_id: R1, order_id: 111-0000001-0000001, buyer_id: B1, sent_at: "2020-11-10T10:00:00-08:00",
             category: review_request, body: "Please review order 111-0000001-0000001.",
             delivered_at: "2020-11-01T10:00:00-08:00", language: en, buyer_language: en, buyer_opted_out: false}
    expect: {outcome: allowed}
  - name: emoji
    record: {message_id: R2, order_id: 111-0000001-0000002, buyer_id: B1, sent_at: "2020-11-10T10:00:00-08:00",
             category: review_request, body: "Please review order 111-0000001-0000002 \\u2600",
             delivered_at: "2020-11-01T10:00:00-08:00", language: en, buyer_language: en, buyer_opted_out: false}
    expect: {outcome: violation, rules_include: [CG2020-STYLE-EMOJI]}
  - name: window of 14 days
    variant: overlay:window14.yaml
    record: {message_id: R3, order_id: 111-0000001-0000003, buyer_id: B1, sent_at: "2020-12-10T10:00:00-08:00",
             category: review_request, body: "Please review order 111-0000001-0000003.",
             delivered_at: "2020-11-20T10:00:00-08:00", language: en, buyer_language: en, buyer_opted_out: false}
    on: 2020-12-10
    expect: {outcome: violation, rules_include: [CG2020-WINDOW-30D]}
"""


def test_test_command(tmp_path):
    (tmp_path / "window14.yaml").write_text(WINDOW_14)
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    r = run("test", cases)
    assert r.exit_code == 0, r.output
    assert "3/3 case(s) passed" in r.stdout
    cases.write_text(CASES.replace("expect: {outcome: allowed}", "expect: {outcome: blocked, rules: [D2]}"))
    r = run("test", cases, "--format", "json")
    assert r.exit_code == 1
    bad = json.loads(r.stdout)["files"][0]["cases"][0]
    assert not bad["passed"] and "outcome allowed, expected blocked" in bad["problems"]
    assert "missing rules D2" in bad["problems"]


@pytest.mark.parametrize("edit,case,field", [
    (("expect: {outcome: allowed}", "expect: {outcome: fine}"), "neutral review request", "expect.outcome"),
    (("expect: {outcome: allowed}", "expect: {}"), "neutral review request", "expect"),
    (("category: review_request, body: \"Please review order 111-0000001-0000001.\"",
      "category: reviews, body: x"), "neutral review request", "record.category"),
    (("    on: 2020-12-10\n", "    on: 2020-12-10T10:00:00\n"), "window of 14 days", "on"),
    (("variant: overlay:window14.yaml", "variant: overlay:missing.yaml"), "window of 14 days", "variant"),
    (("  - name: emoji\n", "  - name: emoji\n    colour: red\n"), "emoji", "colour"),
])
def test_bad_cases_name_file_case_and_field(tmp_path, edit, case, field):
    (tmp_path / "window14.yaml").write_text(WINDOW_14)
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES.replace(*edit))
    r = run("test", cases)
    assert r.exit_code == 2
    assert str(cases) in r.output and f"case {case}" in r.output and f"field '{field}'" in r.output, r.output
