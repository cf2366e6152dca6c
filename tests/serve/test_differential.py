"""The same records give the same verdicts through `check`, `audit` and `serve`.

1,200 generated records (messages, buyer questions, replies quoting them or not,
opt-out/opt-in events) in time order. `check --format json` and `audit --results`
judge the whole log; the server gets the buyer events and buyer messages through
/v1/events and each seller message through /v1/check with commit, one request per
message, so every verdict depends on the history the server kept in its database.
"""
from __future__ import annotations

import orjson
from click.testing import CliRunner

from engine.check import check_log
from engine.cli import main
from engine.model import verdict_json
from tests.audit.gen import write

N = 1200


def _log(tmp_path, n=N, seed=31, **kw):
    path = tmp_path / "log.jsonl"
    write(path, n, seed=seed, **kw)
    return path, [orjson.loads(l) for l in path.read_bytes().splitlines()]


def _cli_check(path, *args) -> dict[str, dict]:
    result = CliRunner().invoke(main, ["check", str(path), "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    return {v["message_id"]: v for v in map(orjson.loads, result.stdout.splitlines())}


def test_check_audit_and_serve_agree(client, tmp_path, policies):
    path, rows = _log(tmp_path)
    by_cli = _cli_check(path)
    verdicts, errors = check_log(path, policies)
    assert not errors
    by_api = {v.message_id: verdict_json(v) for v in verdicts}
    assert by_api == by_cli

    results = tmp_path / "results.jsonl"
    audit = CliRunner().invoke(main, ["audit", str(path), "--results", str(results), "--jobs", "1"])
    assert audit.exit_code in (0, 1), audit.output
    by_audit = {v["message_id"]: v for v in map(orjson.loads, results.read_bytes().splitlines())}
    for v in by_audit.values():
        v.pop("out_of_order", None)
    assert by_audit == by_cli

    by_serve, sent_as_history = {}, 0
    for row in rows:
        if "message_id" not in row or row.get("initiated_by") == "buyer":
            r = client.post("/v1/events", json={"events": [row]})
            assert r.status_code == 200, r.text
            sent_as_history += 1
            continue
        r = client.post("/v1/check", json={"record": row, "commit": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["committed"] is True and len(body["verdicts"]) == 1
        by_serve[row["message_id"]] = body["verdicts"][0]
    assert len(by_serve) >= 900 and sent_as_history >= 100
    differing = [m for m, v in by_serve.items() if v != by_cli[m]]
    assert not differing, (len(differing), differing[:3], by_serve[differing[0]], by_cli[differing[0]])

    # Outcomes that need the stored history really occur (the comparison is not vacuous).
    rules = {f["rule"] for v in by_serve.values() for f in v["findings"]}
    assert {"D2", "D5", "D6"} <= rules, rules


def test_lists_with_on_and_alt_agree_with_check(client, tmp_path):
    """Whole lists in one request (the list's earlier records are history), not committed, with `on` and `alt`."""
    path, rows = _log(tmp_path, n=900, seed=8, start="2017-01-01", end="2018-06-30")
    for args, body in ((("--on", "2017-04-01"), {"on": "2017-04-01"}),
                       (("--alt", "no-suspension-2017-03-31"), {"alt": ["no-suspension-2017-03-31"]}),
                       ((), {})):
        expected = _cli_check(path, *args)
        r = client.post("/v1/check", json={"records": rows, **body})
        assert r.status_code == 200, r.text
        got = {v["message_id"]: v for v in r.json()["verdicts"]}
        assert list(got) == list(expected)  # the order `check` prints
        assert got == expected, args
    # nothing was committed: a second identical request gives identical verdicts
    assert client.post("/v1/check", json={"records": rows}).json()["verdicts"] == list(expected.values())


def test_raw_records_agree_with_check(client, tmp_path):
    """Records without category: inferred by the classifier, with its notes, through the server as through `check`."""
    import random

    from tests.audit.gen import records
    from tests.audit.test_equivalence import CORPUS

    corpus = [orjson.loads(l) for l in CORPUS.read_bytes().splitlines() if l.strip()]
    rng = random.Random(3)
    rows = []
    for raw in records(160, seed=77, start="2019-06-01"):
        rec = orjson.loads(raw)
        if "message_id" in rec and rec.get("initiated_by") != "buyer" and rng.random() < 0.6:
            example = rng.choice(corpus)
            rec["subject"], rec["body"] = example["subject"], example["body"]
            rec.pop("category", None)
        rows.append(rec)
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    expected = _cli_check(path)
    assert sum("category" not in r for r in rows if "message_id" in r) >= 50
    assert any(f["rule"] == "INFER-CATEGORY" for v in expected.values() for f in v["findings"])
    got = {}
    for i in range(0, len(rows), 40):  # committed a part at a time: later parts read the earlier from the store
        r = client.post("/v1/check", json={"records": rows[i:i + 40], "commit": True})
        assert r.status_code == 200, r.text
        got.update((v["message_id"], v) for v in r.json()["verdicts"])
    assert got == expected
