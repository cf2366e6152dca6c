"""`msgpolicy audit`: nothing lost, jobs-invariant, formats, exit statuses."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from engine.audit import AuditConfig, SeenIds, audit
from engine.cli import main

from .gen import write


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "log.jsonl"
    write(path, 2500, seed=11, malformed=0.05)
    with open(path, "ab") as fh:  # a blank line and a non-object line
        fh.write(b"\n[1, 2]\n")
    return path


def _run(args):
    return CliRunner().invoke(main, ["audit", *map(str, args)], catch_exceptions=False)


def test_jobs_1_and_2_give_identical_results(log, tmp_path):
    outs = {}
    for jobs in (1, 2):
        res, rej, summ = tmp_path / f"r{jobs}.jsonl", tmp_path / f"j{jobs}.jsonl", tmp_path / f"s{jobs}.json"
        r = _run([log, "--jobs", jobs, "--results", res, "--rejects", rej, "--format", "json", "-o", summ])
        assert r.exit_code == 1, r.output
        s = json.loads(summ.read_text())
        for key in ("jobs", "generated_at"):
            s["provenance"].pop(key)
        outs[jobs] = (res.read_bytes(), rej.read_bytes(), s)
    assert outs[1] == outs[2]


def test_nothing_lost(log, tmp_path):
    res, rej, summ = tmp_path / "r.jsonl", tmp_path / "j.jsonl", tmp_path / "s.json"
    r = _run([log, "--results", res, "--rejects", rej, "--format", "json", "-o", summ])
    assert r.exit_code == 1
    s = json.loads(summ.read_text())
    c = s["counts"]
    lines = [l for l in log.read_bytes().splitlines() if l.strip()]
    assert c["read"] == len(lines) == c["judged"] + c["rejected"] + c["buyer_events"]
    assert c["balanced"] and c["blank_lines"] == 1
    results = [orjson.loads(l) for l in res.read_bytes().splitlines()]
    rejects = [orjson.loads(l) for l in rej.read_bytes().splitlines()]
    assert len(results) == c["judged"] and len(rejects) == c["rejected"] > 100
    assert {"source", "line", "message_id", "field", "reason"} <= set(rejects[0])
    # every line is accounted for exactly once
    events = sum(1 for l in lines if b'"type"' in l and b'"message_id"' not in l)
    assert abs(events - c["buyer_events"]) <= c["rejected"]
    assert any(j["reason"].startswith("malformed JSON") for j in rejects)
    assert any(j["field"] == "marketplace" for j in rejects)
    assert rejects[-1]["reason"].startswith("expected a JSON object")
    assert set(results[0]) >= {"message_id", "evaluated_at", "outcome", "policies", "findings"}
    assert sum(s["outcomes"].values()) == c["judged"]


def test_duplicate_ids_and_out_of_order_are_flagged(tmp_path):
    lines = [
        {"message_id": "a", "order_id": "1", "buyer_id": "b", "sent_at": "2018-03-01T10:00:00-08:00",
         "category": "marketing", "buyer_opted_out": True},
        {"message_id": "a", "order_id": "1", "buyer_id": "b", "sent_at": "2018-03-02T10:00:00-08:00",
         "category": "marketing"},
        {"message_id": "c", "order_id": "1", "buyer_id": "b", "sent_at": "2018-02-01T10:00:00-08:00",
         "category": "invoice", "buyer_opted_out": False},
    ]
    path = tmp_path / "l.jsonl"
    path.write_bytes(b"".join(orjson.dumps(l) + b"\n" for l in lines))
    res, rej = tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    r = _run([path, "--results", res, "--rejects", rej, "--jobs", 1])
    assert r.exit_code == 1
    rejects = [orjson.loads(l) for l in rej.read_bytes().splitlines()]
    assert [(j["line"], j["field"]) for j in rejects] == [(2, "message_id")]
    results = [orjson.loads(l) for l in res.read_bytes().splitlines()]
    assert [x["message_id"] for x in results] == ["a", "c"]
    assert results[1].get("out_of_order") is True and "out_of_order" not in results[0]


def test_clean_log_exits_0_and_missing_file_exits_2(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_bytes(orjson.dumps({"message_id": "a", "order_id": "1", "buyer_id": "b",
                                   "sent_at": "2016-03-01T10:00:00-08:00", "category": "marketing"}) + b"\n")
    assert _run([path]).exit_code == 0
    assert _run([tmp_path / "nope.jsonl"]).exit_code == 2


def test_results_csv_and_parquet_match_jsonl(log, tmp_path):
    import datetime as dt

    import pyarrow.parquet as pq

    # The generated log plus a message_id that needs escapes, a quoted [Important] subject
    # (a finding with evidence) and a message sent before its buyer's previous one (out of order).
    extra = [
        {"message_id": 'q"uote\\back\u00e9\u2028😀', "order_id": "o-x", "buyer_id": "BX",
         "sent_at": "2026-01-02T10:00:00-08:00", "category": "order_info_request",
         "subject": "[Important] About your order"},
        {"message_id": "late", "order_id": "o-x", "buyer_id": "BX", "sent_at": "2026-01-01T10:00:00-08:00",
         "category": "order_info_request", "body": "Hello"},
    ]
    full = tmp_path / "log.jsonl"
    full.write_bytes(log.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in extra))
    paths = {ext: tmp_path / f"r.{ext}" for ext in ("jsonl", "csv", "parquet")}
    for p in paths.values():
        _run([full, "--results", p, "--rejects", tmp_path / "j.jsonl", "-o", tmp_path / "s.txt"])
    ref = [orjson.loads(l) for l in paths["jsonl"].read_bytes().splitlines()]
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = pq.read_table(paths["parquet"]).to_pylist()
    assert len(rows) == len(table) == len(ref)
    assert ref[-2]["message_id"] == extra[0]["message_id"] and ref[-1].get("out_of_order") is True
    assert any("evidence" in f for f in ref[-2]["findings"])
    for a, b, c in zip(ref, rows, table):
        assert b["message_id"] == a["message_id"] and b["outcome"] == a["outcome"]
        assert b["evaluated_at"] == a["evaluated_at"]
        assert json.loads(b["findings"]) == a["findings"] and json.loads(b["policies"]) == a["policies"]
        assert b["out_of_order"] == ("true" if a.get("out_of_order") else "")
        # Parquet: typed values, field by field
        at = dt.datetime.fromisoformat(a["evaluated_at"])
        assert c["message_id"] == a["message_id"] and c["outcome"] == a["outcome"]
        assert c["evaluated_at"] == at and c["evaluated_at"].tzinfo is not None
        assert c["evaluated_at_local"] == at.replace(tzinfo=None)
        assert c["policies"] == a["policies"]
        assert len(c["findings"]) == len(a["findings"])
        for got, want in zip(c["findings"], a["findings"]):
            for key in ("rule", "policy", "version", "outcome", "reason", "sources"):
                assert got[key] == want[key]
            assert dict(got["evidence"]) == want.get("evidence", {})
        assert c["out_of_order"] is bool(a.get("out_of_order"))


def test_csv_input(log, tmp_path):
    rows = []
    for line in log.read_bytes().splitlines()[:500]:
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(d, dict) and "message_id" in d:
            rows.append(d)
    cols = sorted({k for d in rows for k in d})
    path = tmp_path / "l.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        for d in rows:
            w.writerow({k: ("true" if v is True else "false" if v is False else v) for k, v in d.items()})
    summ = tmp_path / "s.json"
    r = _run([path, "--format", "json", "-o", summ, "--rejects", tmp_path / "j.jsonl"])
    c = json.loads(summ.read_text())["counts"]
    assert c["read"] == len(rows) and c["balanced"]


def test_summary_formats_and_provenance(log, tmp_path):
    for fmt in ("text", "json", "csv", "html"):
        out = tmp_path / f"s.{fmt}"
        r = _run([log, "--format", fmt, "-o", out, "--rejects", tmp_path / "j.jsonl"])
        assert r.exit_code == 1
        text = out.read_text()
        assert "0.1.0" in text
        import hashlib
        assert hashlib.sha256(log.read_bytes()).hexdigest() in text
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["provenance"]["policies"] and all(len(h) >= 16 for h in s["provenance"]["policies"].values())
    assert s["by_month"] and s["by_rule"] and s["by_version"]


def test_seen_ids_runs():
    seen = SeenIds()
    seen.RUN = 100
    keys = [SeenIds.key(f"id{i}") for i in range(1000)]
    for k in keys:
        assert k not in seen
        seen.add(k)
    assert all(k in seen for k in keys)
    assert SeenIds.key("other") not in seen
    # 10 runs of 100 were written; merging keeps each run more than twice the next one.
    sizes = [len(r) for r in seen.runs]
    assert sum(sizes) == 1000 and all(a > 2 * b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(list(r) == sorted(r) for r in seen.runs)


def test_on_date_judges_every_message_at_that_date_but_counts_by_month_sent(log, tmp_path):
    summ, res = tmp_path / "s.json", tmp_path / "r.jsonl"
    _run([log, "--on", "2017-04-01", "--format", "json", "-o", summ, "--results", res,
          "--rejects", tmp_path / "j.jsonl"])
    s = json.loads(summ.read_text())
    assert s["provenance"]["evaluated_on"] == "2017-04-01"
    assert len(s["by_month"]) > 12  # months sent, not the what-if date
    results = [orjson.loads(l) for l in res.read_bytes().splitlines()]
    assert {r["evaluated_at"][:10] for r in results} == {"2017-04-01"}
    # the suspension: no opt-out rule decides anything
    assert s["outcomes"]["blocked"] == s["outcomes"]["violation"] == s["outcomes"]["indeterminate"] == 0


def test_a_failing_audit_exits_2_not_1(log, tmp_path, monkeypatch):
    import engine.audit as A

    def boom(*a, **k):
        raise RuntimeError("audit worker 0 failed")
    monkeypatch.setattr(A, "audit", boom)
    r = CliRunner().invoke(main, ["audit", str(log)])
    assert r.exit_code == 2 and "audit error" in r.output


def _buyers_owned_by(worker: int, n: int, jobs: int = 2) -> list[str]:
    import zlib

    out, i = [], 0
    while len(out) < n:
        name = f"B{i:06d}"
        if zlib.crc32(name.encode()) % jobs == worker:
            out.append(name)
        i += 1
    return out


@pytest.mark.parametrize("history_days, flagged", [(400, False), (5000, True)])
def test_history_expiry_follows_the_log_clock_whatever_the_jobs(tmp_path, history_days, flagged):
    # One buyer's message in 2021, then 5,000 messages of buyers that another worker owns in
    # 2023 (enough touches for sweeps), then the first buyer again, dated 2017 (out of order).
    # Expiry is judged against the log clock (2023), in one worker or two alike.
    (first,), others = _buyers_owned_by(0, 1), _buyers_owned_by(1, 50)
    def msg(mid, buyer, when):
        return {"message_id": mid, "order_id": f"o-{mid}", "buyer_id": buyer, "sent_at": when,
                "marketplace": "US", "category": "invoice", "buyer_opted_out": False}
    lines = [msg("m0", first, "2021-01-30T10:00:00+00:00")]
    lines += [msg(f"x{i}", others[i % 50], f"2023-01-{1 + i % 28:02d}T10:00:00+00:00") for i in range(5000)]
    lines.append(msg("late", first, "2017-03-28T10:00:00+00:00"))
    path = tmp_path / "l.jsonl"
    path.write_bytes(b"".join(orjson.dumps(l) + b"\n" for l in lines))
    outs = {}
    for jobs in (1, 2):
        res = tmp_path / f"r{jobs}.jsonl"
        r = _run([path, "--results", res, "--jobs", jobs, "--history-days", history_days])
        assert r.exit_code in (0, 1), r.output  # 1: some verdict is not clean
        outs[jobs] = res.read_bytes()
    assert outs[1] == outs[2]
    last = orjson.loads(outs[1].splitlines()[-1])
    assert last["message_id"] == "late" and bool(last.get("out_of_order")) is flagged


def test_log_time_reads_offsets_and_epochs_and_ignores_the_future():
    from engine.audit import log_time

    now = 2_000_000_000.0
    assert log_time({"sent_at": "2021-01-30T10:00:00+00:00"}, now) == 1612000800.0
    assert log_time({"at": "2021-01-30T10:00:00Z"}, now) == 1612000800.0
    assert log_time({"sent_at": "1490700000"}, now) == 1490700000.0
    assert log_time({"sent_at": 1490700000}, now) == 1490700000.0
    assert log_time({"sent_at": "2021-01-30T10:00:00"}, now) is None  # naive: no instant
    assert log_time({"sent_at": "2099-01-01T00:00:00+00:00"}, now) is None  # future
    assert log_time({"sent_at": True}, now) is None and log_time([1], now) is None
