"""The command line's shared vocabulary: -V, help texts, completion, `sources`."""
import json

import click
import pytest
from click.testing import CliRunner

from engine import __version__, load_policies
from engine.cli import main

from ..conftest import POLICIES, ROOT


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), **kw)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    r = run(flag)
    assert r.exit_code == 0 and r.stdout.strip() == f"msgpolicy, version {__version__}"


def test_every_command_has_a_short_help_examples_and_exit_status():
    for name, command in main.commands.items():
        assert command.short_help, f"{name}: no short_help"
        text = run(name, "--help").stdout
        assert "Example" in text, f"{name} --help has no example"
        assert "Exit status" in text, f"{name} --help does not give its exit status"


def test_the_command_list_is_not_truncated():
    text = run("--help").stdout
    listing = text.split("Commands:")[1]
    assert not any(line.rstrip().endswith("...") for line in listing.splitlines()), listing
    for name, command in main.commands.items():
        assert " ".join(command.short_help.split()[:3]) in " ".join(listing.split())


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell):
    r = run("completion", shell)
    assert r.exit_code == 0 and "_MSGPOLICY_COMPLETE" in r.stdout
    assert run("completion", "tcsh").exit_code == 2


def test_the_completion_script_completes_commands_and_choices():
    # what the bash script asks: COMP_WORDS / COMP_CWORD with _MSGPOLICY_COMPLETE=bash_complete
    def complete(words):
        env = {"_MSGPOLICY_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        result = CliRunner().invoke(main, [], env=env, prog_name="msgpolicy")
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert {"check", "classify", "completion"} <= set(complete("msgpolicy c"))
    assert complete("msgpolicy test x.yaml --format ") == ["text", "json", "junit"]


def test_sources_lists_every_key_with_what_cites_it():
    policies = load_policies(POLICIES)
    r = run("sources", "--format", "json")
    assert r.exit_code == 0
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert list(rows) == list(policies.sources)
    for version in policies.all_versions():
        for rule in version.enabled_rules:
            for key in rule.rule.sources:
                assert rule.id in rows[key]["cited_by"][f"{version.family}/{version.id}"]
    for key, row in rows.items():
        source = policies.sources[key]
        assert row["title"] == source.title and row["url"] == source.url
        assert (row["file"] is None) == (source.url is not None)
        assert row["date"] == (source.date or None)
        if source.url and not source.publisher:
            assert row["publisher"] and row["publisher"] in source.url


def test_sources_text_gives_title_publisher_and_date_or_says_it_is_unknown():
    policies = load_policies(POLICIES)
    dated = next(k for k, s in policies.sources.items() if s.date and s.publisher)
    undated = next(k for k, s in policies.sources.items() if not s.date)
    text = run("sources", dated, undated).stdout
    first, second = text.split(f"\n{undated}  ")
    assert policies.sources[dated].publisher in first and f"dated {policies.sources[dated].date}" in first
    assert "date unknown" in second and "dated" not in second


def test_check_text_ends_with_the_titles_of_the_sources_it_cites():
    policies = load_policies(POLICIES)
    text = run("check", str(ROOT / "samples" / "2017-sample.jsonl")).stdout
    legend = text.split("sources cited")[1]
    cited = {k for line in text.split("sources cited")[0].splitlines() if "sources: " in line
             for k in line.split("sources: ")[1].split(", ") if k in policies.sources}
    assert cited and {line.split()[0] for line in legend.splitlines()[1:] if line.strip()} == cited
    for key in cited:
        assert policies.sources[key].title.removeprefix(f"{key}: ") in legend


def test_sources_of_given_keys_and_an_unknown_one():
    policies = load_policies(POLICIES)
    key = next(k for k, s in policies.sources.items() if s.url)
    r = run("sources", key)
    assert r.exit_code == 0 and r.stdout.startswith(f"{key}  ") and policies.sources[key].url in r.stdout
    r = run("sources", key, "no-such-source")
    assert r.exit_code == 2 and "no-such-source" in r.output


def test_rules_takes_a_timestamp_and_explains_confidence():
    r = run("rules", "--on", "2017-04-01T10:00:00-07:00")
    assert r.exit_code == 0 and "2017-optout/suspension" in r.stdout
    assert "conf: " in r.stdout and "H several consistent sources" in r.stdout
    assert "H several consistent sources" in run("timeline").stdout


def test_every_result_line_matches_the_result_schema(tmp_path):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = json.loads(run("schema", "--result").stdout)
    validator = jsonschema_rs.validator_for(schema)
    results = tmp_path / "results.jsonl"
    assert run("audit", str(ROOT / "samples" / "2017-2025-sample.jsonl"), "--results", str(results)).exit_code == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    checked = [json.loads(line) for line in run("check", str(ROOT / "samples" / "2017-sample.jsonl"),
                                                "--format", "json").stdout.splitlines()]
    assert lines and checked and any(line.get("out_of_order") for line in lines)
    for line in lines + checked:
        assert validator.is_valid(line), list(validator.iter_errors(line))[:3]
    # and the schema is not vacuous: a line without its outcome, or with an unknown one, fails
    assert not validator.is_valid({k: v for k, v in lines[0].items() if k != "outcome"})
    assert not validator.is_valid({**lines[0], "outcome": "fine"})


def test_check_formats_jsonl_and_csv_agree_with_json():
    import csv
    import io

    sample = str(ROOT / "samples" / "2017-sample.jsonl")
    as_json = run("check", sample, "--format", "json").stdout
    assert run("check", sample, "--format", "jsonl").stdout == as_json
    verdicts = [json.loads(line) for line in as_json.splitlines()]
    rows = list(csv.DictReader(io.StringIO(run("check", sample, "--format", "csv").stdout)))
    assert [r["message_id"] for r in rows] == [v["message_id"] for v in verdicts]
    for row, verdict in zip(rows, verdicts):
        assert row["outcome"] == verdict["outcome"] and row["evaluated_at"] == verdict["evaluated_at"]
        assert json.loads(row["findings"]) == verdict["findings"] and json.loads(row["policies"]) == verdict["policies"]
        assert set(filter(None, row["rules"].split(";"))) == {f"{f['policy']}/{f['rule']}" for f in verdict["findings"]}


def test_evidence_is_quoted_once(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"message_id": "RR", "order_id": "111-0000011-0000011", "buyer_id": "B1",
                               "sent_at": "2021-05-10T10:00:00-07:00", "buyer_opted_out": False,
                               "subject": "How is your new kettle?",
                               "body": "Would you leave a review of the kettle? Order 111-0000011-0000011."}) + "\n")
    text = run("check", str(raw)).stdout
    assert "evidence: “" in text and "““" not in text and "””" not in text


def test_dash_is_standard_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sample = str(ROOT / "samples" / "2017-sample.jsonl")
    to_dash = run("audit", sample, "--format", "json", "-o", "-")
    plain = run("audit", sample, "--format", "json")
    assert to_dash.exit_code == plain.exit_code == 1
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "provenance"}  # noqa: E731
    assert strip(to_dash.stdout) == strip(plain.stdout) and not (tmp_path / "-").exists()
    diff = run("diff", sample, "--baseline", "on=2017-03-30", "--variant", "on=2017-04-01", "--format", "json", "-o", "-")
    assert diff.exit_code == 1 and json.loads(diff.stdout)["changed"] > 0 and not (tmp_path / "-").exists()


def test_rules_wrap_long_conditions_within_the_width():
    text = run("rules", "--on", "2021-01-01").stdout
    assert max(map(len, text.splitlines())) <= 100
    assert not any(line != line.rstrip() for line in text.splitlines())
    # a long condition is wrapped onto continuation lines, not cut
    policies = load_policies(POLICIES)
    from engine.conditions import describe
    from engine.timeline import in_force_on
    import datetime as dt

    longest = max((describe(r.condition) for v in in_force_on(policies, dt.date(2021, 1, 1), "US")
                   for r in v.enabled_rules), key=len)
    assert len(longest) > 100
    assert " ".join(longest.split()) in " ".join(" ".join(line[24:].split()) for line in text.splitlines()
                                                  if line.startswith(" " * 10) or line[:1].isalnum())


def test_the_confidence_legend_says_what_the_concepts_page_says_and_comes_first():
    from engine.cli import CONFIDENCE_LEGEND

    concepts = " ".join((ROOT / "docs" / "concepts.md").read_text(encoding="utf-8").split())
    legend = " ".join(CONFIDENCE_LEGEND.split())
    for meaning in ("several consistent sources", "(or an article and an Amazon page)",
                    "one or two secondary sources", "only source is vague or contested"):
        assert meaning in legend and meaning in concepts, meaning
    for command in (("rules", "--on", "2017-04-01"), ("timeline",)):
        out = run(*command).stdout
        assert out.index("conf: how well") < out.index(" conf ")  # the legend before the first table
