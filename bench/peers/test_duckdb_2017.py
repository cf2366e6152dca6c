"""The DuckDB query for the 2017 decision agrees with `msgpolicy audit` on a small
generated log (broken lines included), on every message the 2017 rules alone decide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("duckdb")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import duckdb_2017  # noqa: E402


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    if not (ROOT / "engine" / "cli.py").exists():
        pytest.skip("no msgpolicy engine in this checkout")
    tmp = tmp_path_factory.mktemp("duckdb2017")
    log, results = tmp / "log.jsonl", tmp / "results.jsonl"
    subprocess.run([sys.executable, str(ROOT / "bench" / "generate.py"), "--messages", "6000", "--seed", "11",
                    "--start", "2017-01-01", "--end", "2021-06-30", "--malformed", "0.05", "--out", str(log)],
                   check=True, capture_output=True)
    audit = subprocess.run([sys.executable, "-m", "engine.cli", "audit", str(log), "--results", str(results),
                            "--rejects", str(tmp / "rejects.jsonl"), "-o", str(tmp / "summary.txt")],
                           cwd=ROOT, capture_output=True)
    assert audit.returncode in (0, 1), audit.stderr.decode()
    return log, results, tmp


def test_query_agrees_with_the_engine(audited):
    log, results, tmp = audited
    out = tmp / "query.parquet"
    rows, _ = duckdb_2017.run(log, out, threads=1)
    report = duckdb_2017.compare(log, out, results)
    counts = report["counts"]
    assert rows == counts["engine_results"]                       # same records judged, same rejected
    assert counts["only_in_engine"] == counts["only_in_query"] == 0
    assert counts["compared"] > 2000
    assert counts["disagree"] == 0, report["examples"]
    # the log exercises more than the opt-in path
    assert {"allowed", "blocked", "no_policy", "indeterminate"} <= set(report["compared_by_engine_outcome"])


def test_parquet_results_compare_as_the_jsonl_ones(audited):
    log, results, tmp = audited
    from engine.results import write_results

    typed = tmp / "results.parquet"
    with open(results, "rb") as fh:
        write_results(fh, typed)
    out = tmp / "query-typed.parquet"
    duckdb_2017.run(log, out, threads=1)
    assert duckdb_2017.compare(log, out, typed) == duckdb_2017.compare(log, out, results)


def test_edge_cases_of_the_record_format(tmp_path):
    lines = [
        '{"type": "buyer_opt_out", "buyer_id": "B1", "at": "2017-06-01T09:00:00-07:00"}',
        '{"message_id": "A", "order_id": "o", "buyer_id": "B1", "sent_at": "2017-06-01T10:00:00-07:00", '
        '"category": "review_request"}',
        '{"message_id": "B", "order_id": "o", "buyer_id": "B1", "sent_at": "2017-06-01T09:00:00-07:00", '
        '"category": "review_request"}',                                      # same instant as the event
        '{"message_id": "C", "order_id": "o", "buyer_id": "B2", "sent_at": "2017-06-01T10:00:00-07:00", '
        '"category": "review_request", "buyer_opted_out": "yes"}',            # lax boolean
        '{"message_id": "D", "order_id": "o", "buyer_id": "B2", "sent_at": "2017-06-01T10:00:00-07:00", '
        '"category": "review_request", "buyer_opted_out": "maybe"}',          # rejected
        '{"message_id": "E", "order_id": "o", "buyer_id": "B2", "sent_at": "2017-06-01T10:00:00-07:00", '
        '"category": "review_request",}',                                     # trailing comma: rejected
        '{"message_id": "F", "order_id": "o", "buyer_id": "B2", "sent_at": "2017-04-02T10:00:00-07:00", '
        '"category": "review_request", "buyer_opted_out": true}',             # suspension
        '{"message_id": "G", "order_id": "o", "buyer_id": "B3", "sent_at": "2017-06-01T10:00:00+01:00", '
        '"marketplace": "UK", "category": "review_request", "buyer_opted_out": true}',   # UK before 2018
        '{"message_id": "H", "order_id": "o", "buyer_id": "B4", "sent_at": "2017-06-01T10:00:00-07:00", '
        '"channel": "seller_central", "subject": "Additional Information Required", "category": "feedback_request"}',
    ]
    log = tmp_path / "edge.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "edge.parquet"
    duckdb_2017.run(log, out)
    import duckdb

    got = dict(duckdb.sql(f"SELECT message_id, outcome FROM read_parquet('{out}')").fetchall())
    assert got == {"A": "blocked", "B": "indeterminate", "C": "blocked", "F": "allowed", "G": "no_policy",
                   "H": "indeterminate"}
