"""Human-readable text: findings needing attention lead; notes repeated on every message are said once."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
EXPORT = [str(SAMPLES / "export-de.csv"), "--map", str(SAMPLES / "export-de.map.yaml")]


def _section(text: str, heading: str) -> list[str]:
    lines = text.split("\n")
    start = lines.index(heading) + 1
    end = lines.index("", start)
    return lines[start:end]


def test_audit_text_lists_findings_by_severity_and_allowed_notes_apart():
    r = CliRunner().invoke(main, ["audit", str(SAMPLES / "2017-2025-sample.jsonl"), "-q"])
    assert r.exit_code == 1, r.stderr
    findings = _section(r.stdout, "findings by rule:")
    outcomes = [line.split()[0] for line in findings]
    assert outcomes[0] == "violation" and "allowed" not in outcomes
    order = ["violation", "indeterminate", "blocked"]
    assert outcomes == sorted(outcomes, key=order.index)
    notes = _section(r.stdout, "allowed notes by rule (what applied, what was inferred, what is not checked):")
    assert any("CG2020-SENSITIVE" in line for line in notes)
    # the counts of both sections end in one column
    assert {len(line) for line in findings + notes} == {len(findings[0])}


def test_check_text_says_not_checked_notes_and_classifier_files_once():
    r = CliRunner().invoke(main, ["check", *EXPORT])
    assert r.exit_code == 1, r.stderr
    out = r.stdout
    judged = out.count("[2017-optout/all-marketplaces, 2020-contact-guidelines/base]")
    assert judged == 4
    # each message names the rules; the reason and the classifier's files come once
    assert out.count("CG2020-SENSITIVE, CG2020-STYLE-UNCHECKED (see the end)") == judged
    assert out.count("msgpolicy does not check for it") == 1
    assert out.count("policies/classifier/calibration.json") == 1
    assert "\nclassifier files (INFER-CATEGORY, INFER-LANGUAGE cite them all):\n" in out
    # findings with evidence keep their sources inline
    assert "CG2020-STYLE-EMOJI: Emojis are not allowed" in out and "sources: P23, P29, P24, P28, P15, P21" in out


def test_classify_text_names_its_columns():
    r = CliRunner().invoke(main, ["classify", *EXPORT])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "message_id  category  confidence (of the category)  language  evidence"
    assert lines[1].startswith("N-1  invoice  0.51  de  ") and len(lines) == 5
