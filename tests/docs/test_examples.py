"""Every example in docs/ that shows a record and a verdict is run against the engine.

Two kinds of fenced blocks are executed (see docs/policy-format.md, "Examples in the docs"):

* a record block, whose title ends in ``.json`` or ``.jsonl``, followed by one or more verdict
  blocks titled ``verdict (msgpolicy check FILE [OPTIONS])``, one line per judged message:
  ``MESSAGE_ID  OUTCOME  [RULE, RULE ...]``. Messages not listed are history and not compared;
* an output block titled ``$ msgpolicy ...``: the command is run and its standard output must
  equal the block exactly.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence) *$",
                   re.M | re.S)
TITLE = re.compile(r'title="([^"]*)"')
VERDICT = re.compile(r"^verdict \(msgpolicy check (?P<args>[^)]*)\)$")
RECORD = re.compile(r"\.jsonl?$")


def blocks(path: Path) -> list[tuple[int, str, str]]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        title = TITLE.search(m["info"])
        out.append((text.count("\n", 0, m.start()) + 1, title.group(1) if title else "", m["body"]))
    return out


def collect():
    checks, outputs = [], []
    for path in sorted(DOCS.rglob("*.md")):
        items = blocks(path)
        for i, (line, title, body) in enumerate(items):
            where = f"{path.relative_to(ROOT)}:{line}"
            if title.startswith("$ msgpolicy "):
                outputs.append(pytest.param(title[2:], body, id=where))
            elif RECORD.search(title):
                verdicts = []
                for vline, vtitle, vbody in items[i + 1:]:
                    m = VERDICT.match(vtitle)
                    if not m:
                        break
                    verdicts.append((vline, m["args"], vbody))
                checks.append(pytest.param(title, body, verdicts, id=where))
    return checks, outputs


CHECKS, OUTPUTS = collect()


def test_examples_are_found():
    # Guards against a change of convention silently turning every example off.
    assert len(CHECKS) >= 8, CHECKS
    assert len(OUTPUTS) >= 3, OUTPUTS


def parse_expected(body: str) -> dict[str, tuple[str, list[str]]]:
    expected = {}
    for raw in body.strip().splitlines():
        parts = raw.split(None, 2)
        assert len(parts) >= 2, f"verdict line needs MESSAGE_ID OUTCOME [RULES]: {raw!r}"
        rules = [r.strip() for r in parts[2].split(",")] if len(parts) == 3 else []
        expected[parts[0]] = (parts[1], sorted(rules))
    return expected


@pytest.mark.parametrize("title,body,verdicts", CHECKS)
def test_record_example(tmp_path, title, body, verdicts):
    assert verdicts, f"record block {title!r} is not followed by a 'verdict (msgpolicy check …)' block"
    record_file = tmp_path / title
    record_file.write_text(body, encoding="utf-8")
    runner = CliRunner()
    for line, args, vbody in verdicts:
        argv = shlex.split(args)
        assert argv and argv[0] == title, f"line {line}: the verdict must check {title}, not {argv[:1]}"
        argv[0] = str(record_file)
        result = runner.invoke(main, ["check", *argv, "--format", "json"])
        assert result.exit_code in (0, 1), f"line {line}: exit {result.exit_code}\n{result.output}"
        got = {}
        for out_line in result.stdout.splitlines():
            v = orjson.loads(out_line)
            got[v["message_id"]] = (v["outcome"], sorted({f["rule"] for f in v["findings"]}))
        expected = parse_expected(vbody)
        assert expected, f"line {line}: empty verdict block"
        for message_id, want in expected.items():
            assert message_id in got, f"line {line}: {message_id} was not judged"
            assert got[message_id] == want, f"line {line}, {message_id} (msgpolicy check {args}): " \
                                            f"docs say {want}, engine says {got[message_id]}"


@pytest.mark.parametrize("command,body", OUTPUTS)
def test_command_output(monkeypatch, command, body):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)
    assert argv[0] == "msgpolicy"
    result = CliRunner().invoke(main, argv[1:])
    assert result.exit_code in (0, 1), result.output
    assert result.stdout.rstrip("\n") == body.rstrip("\n"), f"$ {command}\n{result.stdout}"
