"""The decision log replays: unchanged policies give no difference; a policy change shows where it bites."""
from __future__ import annotations

import re
import shutil

import orjson
from click.testing import CliRunner

from engine.cli import main
from tests.conftest import POLICIES

from .test_api import A1, OPT_OUT, R1, Q, W, review


def _traffic(client):
    client.post("/v1/events", json={"events": [OPT_OUT, Q]})
    assert client.post("/v1/check", json={"records": [A1, R1], "commit": True}).status_code == 200
    assert client.post("/v1/check", json={"record": W}).status_code == 200
    assert client.post("/v1/check", json={"record": W, "on": "2017-04-03"}).status_code == 200
    t = dict(W, message_id="T", subject="[Important] Delivery slot", category="delivery_scheduling",
             sent_at="2017-05-01T10:00:00-07:00")
    assert client.post("/v1/check", json={"record": t, "alt": ["important-from-2017-05-16"]}).status_code == 200
    for mid, day in (("RR1", 5), ("RR2", 9)):
        assert client.post("/v1/check", json={"record": review(mid, day), "commit": True}).status_code == 200
    client.service.flush()  # decisions of checks without commit are written by a background thread


def _changed_policies(tmp_path):
    """A copy of the shipped policies where D8 (an [Important] tag on a non-critical message) only blocks."""
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    path = root / "2017-optout" / "2017-03-27-rollout.yaml"
    text = path.read_text()
    new, n = re.subn(r"(  - id: D8\n(?:    .*\n)*?    outcome: )violation", r"\1blocked", text, count=1)
    assert n == 1
    path.write_text(new)
    return root


def test_replay_from_store_and_file(client, store_url, tmp_path):
    _traffic(client)
    runner = CliRunner()
    same = runner.invoke(main, ["replay", "--store", store_url])
    assert same.exit_code == 0, same.output
    assert "7 decision(s) replayed, 0 would now differ" in same.stdout

    exported = tmp_path / "decisions.jsonl"
    r = runner.invoke(main, ["replay", "--store", store_url, "--export", str(exported)])
    assert r.exit_code == 0 and len(exported.read_bytes().splitlines()) == 7
    assert runner.invoke(main, ["replay", str(exported)]).exit_code == 0

    changed = _changed_policies(tmp_path)
    for source in (["--store", store_url], [str(exported)]):
        r = runner.invoke(main, ["replay", *source, "--policies", str(changed), "--format", "json"])
        assert r.exit_code == 1, r.output
        report = orjson.loads(r.stdout)
        assert report["replayed"] == 7 and report["changed"] == 1
        diff = report["differences"][0]
        # W judged as sent was a violation (D8); W judged on 2017-04-03 (suspension) is not affected.
        assert diff["message_id"] == "W" and diff["then"]["outcome"] == "violation"
        assert diff["now"]["outcome"] == "blocked"
        assert report["policy_content_changed"] >= 1

    text = runner.invoke(main, ["replay", str(exported), "--policies", str(changed)])
    assert "W  request" in text.stdout and "violation [D8] -> blocked [D8]" in text.stdout


def test_replay_filters_and_errors(client, store_url, tmp_path):
    _traffic(client)
    runner = CliRunner()
    r = runner.invoke(main, ["replay", "--store", store_url, "--order-id", W["order_id"], "--format", "json"])
    assert r.exit_code == 0 and orjson.loads(r.stdout)["replayed"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": 1}\n')
    r = runner.invoke(main, ["replay", str(bad)])
    assert r.exit_code == 2 and "line 1" in r.output
    assert runner.invoke(main, ["replay"]).exit_code == 2


def test_replay_reads_and_exports_through_dash(client, store_url, tmp_path):
    _traffic(client)
    runner = CliRunner()
    exported = tmp_path / "decisions.jsonl"
    assert runner.invoke(main, ["replay", "--store", store_url, "--export", str(exported)]).exit_code == 0
    piped = runner.invoke(main, ["replay", "--store", store_url, "--export", "-"])
    assert piped.exit_code == 0 and piped.stdout_bytes == exported.read_bytes()
    assert "7 decision(s) written to standard output" in piped.stderr
    again = runner.invoke(main, ["replay", "-"], input=exported.read_bytes())
    assert again.exit_code == 0 and "7 decision(s) replayed, 0 would now differ" in again.stdout
    bad = runner.invoke(main, ["replay", "-"], input=b"{}\n")
    assert bad.exit_code == 2 and "replay error: - line 1: not a decision" in bad.stderr
