"""Errors name the file, rule and field (policies) or the line, message_id and field (records); CLI exit codes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from engine import PolicyError, load_policies
from engine.cli import main
from engine.io import InputError, read_records

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = "2017-optout/2017-03-27-rollout.yaml"


@pytest.fixture
def policy_copy(tmp_path):
    shutil.copytree(ROOT / "policies", tmp_path / "p")
    return tmp_path / "p"


def _edit(root: Path, rel: str, change):
    path = root / rel
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _rule(doc, rule_id):
    return next(r for r in doc["rules"] if r["id"] == rule_id)


@pytest.mark.parametrize("change,field,rule,words", [
    (lambda d: _rule(d, "D2").update(outcome="blokked"), "outcome", "D2", "blocked"),
    (lambda d: _rule(d, "D4")["when"]["all"].append({"fact": "opted_outt", "eq": True}), "when.all.3.fact", "D4", "unknown fact"),
    (lambda d: _rule(d, "D3").update(sources=["P999"]), "sources", "D3", "unknown source"),
    (lambda d: _rule(d, "D5").pop("reason"), "reason", "D5", "Field required"),
    (lambda d: _rule(d, "D1").update(when={"fact": "category", "eq": "promo"}), "when.eq", "D1", "not a possible value"),
    (lambda d: d["categories"].pop("marketing"), "categories", None, "marketing"),
    (lambda d: _rule(d, "D7")["when"]["all"].append({"param": "nope"}), "when.all.3.param", "D7", "unknown parameter"),
    (lambda d: _rule(d, "D2").update(unchecked=True), "unchecked", "D2", "outcome must be allowed"),
])
def test_broken_policy_file_names_file_rule_and_field(policy_copy, change, field, rule, words):
    _edit(policy_copy, ROLLOUT, change)
    with pytest.raises(PolicyError) as info:
        load_policies(policy_copy)
    err = info.value
    assert err.file.endswith("2017-03-27-rollout.yaml")
    assert err.rule == rule
    assert err.field == field
    assert words in str(err)


def test_duplicate_yaml_keys_are_refused(policy_copy):
    path = policy_copy / ROLLOUT
    path.write_text(path.read_text() + "\nid: again\n")
    with pytest.raises(PolicyError, match="duplicate key"):
        load_policies(policy_copy)


def test_policy_files_are_never_executed(policy_copy):
    path = policy_copy / ROLLOUT
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policies(policy_copy)


def test_overlapping_versions_are_refused(policy_copy):
    _edit(policy_copy, ROLLOUT, lambda d: d.update(effective_to="2017-04-10"))
    with pytest.raises(PolicyError, match="overlaps"):
        load_policies(policy_copy)


def _errors(tmp_path, text, name="log.jsonl"):
    path = tmp_path / name
    path.write_text(text)
    return [e for _, e in read_records(path) if isinstance(e, InputError)]


GOOD = {"message_id": "m1", "order_id": "111-0000001-0000001", "buyer_id": "b", "sent_at": "2017-03-28T10:00:00-07:00",
        "category": "review_request"}


@pytest.mark.parametrize("bad,field,words", [
    ({"sent_at": "2017-03-28T10:00:00"}, "sent_at", "no UTC offset"),
    ({"category": "promo"}, "category", "not allowed"),
    ({"buyer_opted_out": "maybe"}, "buyer_opted_out", "boolean"),
    ({"order_id": None}, "order_id", ""),
])
def test_bad_record_names_line_message_id_and_field(tmp_path, bad, field, words):
    record = {**GOOD, **bad}
    errors = _errors(tmp_path, json.dumps(GOOD | {"message_id": "m0"}) + "\n" + json.dumps(record) + "\n")
    assert len(errors) == 1
    assert (errors[0].line, errors[0].message_id, errors[0].field) == (2, "m1", field)
    assert words in errors[0].reason


def test_missing_field_and_malformed_json(tmp_path):
    missing = {k: v for k, v in GOOD.items() if k != "buyer_id"}
    errors = _errors(tmp_path, json.dumps(missing) + "\n{not json\n")
    assert [(e.line, e.field) for e in errors] == [(1, "buyer_id"), (2, None)]
    assert "required" in errors[0].reason and "malformed JSON" in errors[1].reason


def test_csv_log_with_list_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text('message_id,order_id,buyer_id,sent_at,category,attachments,buyer_opted_out\n'
                    'm1,111-1-1,b,2017-03-28T10:00:00-07:00,invoice,"[{""name"": ""i.pdf"", ""kind"": ""invoice""}]",true\n')
    (record,) = [r for _, r in read_records(path)]
    assert record.attachments[0].kind.value == "invoice" and record.buyer_opted_out is True


def test_check_exit_codes_and_json_output(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(ROOT / "samples/2017-sample.jsonl"), "--format", "json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert set(lines[0]) == {"message_id", "evaluated_at", "outcome", "policies", "findings"}
    assert {l["message_id"]: l["outcome"] for l in lines}["E3"] == "violation"

    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps({**GOOD, "buyer_opted_out": False}))
    assert runner.invoke(main, ["check", str(clean)]).exit_code == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "message_id": "m2", "marketplace": "XX"}) + "\n")
    result = runner.invoke(main, ["check", str(bad)])
    assert result.exit_code == 2
    assert "line 2 (message_id m2): field 'marketplace'" in result.output


def test_check_on_a_date_and_alternatives(tmp_path):
    runner = CliRunner()
    log = tmp_path / "one.json"
    log.write_text(json.dumps({**GOOD, "buyer_opted_out": True}))
    on_30 = json.loads(runner.invoke(main, ["check", str(log), "--on", "2017-03-30", "--format", "json"]).output)
    on_01 = json.loads(runner.invoke(main, ["check", str(log), "--on", "2017-04-01", "--format", "json"]).output)
    alt = json.loads(runner.invoke(main, ["check", str(log), "--on", "2017-04-01", "--format", "json",
                                          "--alt", "no-suspension-2017-03-31"]).output)
    assert (on_30["outcome"], on_01["outcome"], alt["outcome"]) == ("blocked", "allowed", "blocked")
    assert on_30["evaluated_at"] == "2017-03-30T12:00:00-07:00"
    assert runner.invoke(main, ["check", str(log), "--on", "2017-04-01T10:00:00"]).exit_code == 2
    assert runner.invoke(main, ["check", str(log), "--alt", "nope"]).exit_code == 2


def test_timeline_rules_and_schema_commands():
    runner = CliRunner()
    timeline = json.loads(runner.invoke(main, ["timeline", "--format", "json"]).output)
    spans = [(v["version"], v["effective_from"], v["effective_to"]) for v in timeline["versions"] if v["policy"] == "2017-optout"]
    assert spans[:3] == [("rollout", "2017-03-27", "2017-03-31"), ("suspension", "2017-03-31", "2017-04-07"),
                         ("reinstated", "2017-04-07", "2018-01-31")]
    rules = json.loads(runner.invoke(main, ["rules", "--on", "2017-03-28", "--format", "json"]).output)
    assert [r["rule"] for r in rules["versions"][0]["rules"]] == [f"D{i}" for i in range(1, 10)]
    schema = json.loads(runner.invoke(main, ["schema"]).output)
    assert "sent_at" in schema["required"] and len(schema["$defs"]["Category"]["enum"]) == 20


@pytest.mark.parametrize("date,words", [("2017-13", "month must be in 1..12"), ("2017/03/30", "should match pattern"),
                                        ("2017-02-30", "day is out of range")])
def test_a_bad_source_date_names_sources_yaml_and_the_field(policy_copy, date, words):
    _edit(policy_copy, "sources.yaml", lambda d: d["P1"].update(date=date))
    with pytest.raises(PolicyError) as info:
        load_policies(policy_copy)
    assert info.value.file.endswith("sources.yaml") and info.value.field == "P1.date" and words in str(info.value)


def test_a_source_date_may_be_partial_or_written_unquoted(policy_copy):
    path = policy_copy / "sources.yaml"
    path.write_text(path.read_text() + 'P99:\n  title: "Later"\n  date: 2021-03-01\nP98:\n  title: "Year"\n  date: "2019"\n')
    sources = load_policies(policy_copy).sources
    assert sources["P99"].date == "2021-03-01" and sources["P98"].date == "2019" and sources["P1"].date == ""
