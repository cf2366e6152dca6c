"""Typed Parquet results (engine/results.py): every value of a result line survives
JSON Lines -> Parquet, and the streaming (iterator) and batch (column) writers agree."""
from __future__ import annotations

import datetime as dt

import orjson
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pl = pytest.importorskip("polars")

from engine import results  # noqa: E402
from engine.audit import write_results as reexported  # noqa: E402

FINDING = {"rule": "D4", "policy": "2017-optout", "version": "rollout", "outcome": "violation",
           "reason": "review request to an opted-out buyer", "sources": ["https://example.com/a", "b"]}
POLICY = {"policy": "2017-optout", "version": "rollout"}

RECORDS = [
    # no policy in force: empty lists
    {"message_id": "m-1", "evaluated_at": "2015-12-31T20:49:00-08:00", "outcome": "no_policy",
     "policies": [], "findings": []},
    # unicode and characters that need escapes in the id; microseconds and a half-hour-plus offset
    {"message_id": 'é✓😀 "q" \\ \n\t\u2028', "evaluated_at": "2017-03-01T10:00:00.123456+05:45",
     "outcome": "violation", "policies": [POLICY, {"policy": "2020-contact-guidelines", "version": "v1"}],
     "findings": [FINDING, {**FINDING, "rule": "G1", "outcome": "allowed", "sources": [],
                            "evidence": {"phone_number": "+1 (555) 010-0000", "emoji": "😀",
                                         "ctrl": "\x00\x01\x1f\x7f\t\r\n", "ké\"y": "v\\al"}}]},
    # flagged out of order, evidence on the first finding only
    {"message_id": "m-3", "evaluated_at": "2018-02-01T10:00:00+00:00", "outcome": "blocked",
     "policies": [POLICY], "findings": [{**FINDING, "outcome": "blocked", "evidence": {"in_window": "3 days"}},
                                        FINDING], "out_of_order": True},
    # a local-mean-time offset with seconds (a zone's rules before standard time)
    {"message_id": "m-4", "evaluated_at": "1850-01-01T12:00:00-07:52:58", "outcome": "no_policy",
     "policies": [], "findings": []},
]
LINES = [orjson.dumps(r) + b"\n" for r in RECORDS]
# The same kinds of values written with JSON escapes a producer other than orjson might use.
LINES.append(b'{"message_id":"\\u00e9\\ud83d\\ude00\\/\\u0000","evaluated_at":"2020-06-30T23:59:59-07:00",'
             b'"outcome":"allowed","policies":[{"policy":"p","version":"v"}],"out_of_order":false,'
             b'"findings":[{"rule":"R","policy":"p","version":"v","outcome":"allowed","reason":"\\"x\\"",'
             b'"sources":["s"],"evidence":{"\\u0041":"\\u0007\\b\\f"}}]}\n')


def expected(line: bytes) -> dict:
    """What the typed row holds for a line: the model's defaults filled in (evidence {}, out_of_order false)."""
    d = orjson.loads(line)
    at = dt.datetime.fromisoformat(d["evaluated_at"])
    return {"message_id": d["message_id"], "evaluated_at": at.astimezone(dt.timezone.utc),
            "evaluated_at_local": at.replace(tzinfo=None), "outcome": d["outcome"], "policies": d["policies"],
            "findings": [{**f, "evidence": f.get("evidence", {})} for f in d["findings"]],
            "out_of_order": d.get("out_of_order", False)}


def rows(path) -> list[dict]:
    table = pq.read_table(path)
    assert table.schema == results.parquet_schema()
    out = table.to_pylist()
    for row in out:
        for f in row["findings"]:
            f["evidence"] = dict(f["evidence"])  # pyarrow gives a map as (key, value) pairs
    return out


def test_schema_follows_the_models():
    schema = results.parquet_schema()
    assert schema.names == ["message_id", "evaluated_at", "evaluated_at_local", "outcome", "policies",
                            "findings", "out_of_order"]
    finding = schema.field("findings").type.value_type
    assert [f.name for f in finding] == list(results.ResultLine.model_fields["findings"].annotation.__args__[0]
                                             .model_fields)
    assert finding.field("evidence").type == pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False))
    assert schema.field("evaluated_at").type == pa.timestamp("us", tz="UTC")


def test_round_trip_of_tricky_lines(tmp_path):
    path = tmp_path / "r.parquet"
    assert results.write_results(iter(LINES), path) == len(LINES)
    got = rows(path)
    assert got == [expected(line) for line in LINES]
    # the evidence keeps the line's key order
    assert list(got[1]["findings"][1]["evidence"]) == list(RECORDS[1]["findings"][1]["evidence"])
    assert results.write_results is reexported


@pytest.mark.parametrize("kind", ["polars", "pyarrow", "large"])
def test_column_writer_gives_the_iterator_writers_file(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(results, "CHUNK", 2)  # several chunks, one ending short
    texts = [line.decode() for line in LINES]
    column = {"polars": pl.Series(texts), "pyarrow": pa.array(texts),
              "large": pa.chunked_array([pa.array(texts[:1], pa.large_string()),
                                         pa.array(texts[1:], pa.large_string())])}[kind]
    a, b = tmp_path / "iter.parquet", tmp_path / "column.parquet"
    assert results.write_results(iter(LINES), a) == results.write_results_column(column, b) == len(LINES)
    assert pq.read_table(a).equals(pq.read_table(b))
    assert pq.ParquetFile(a).metadata.num_row_groups == 3
    assert a.read_bytes() == b.read_bytes()


def test_column_writer_jsonl_and_csv_match_the_iterator_writer(tmp_path):
    series = pl.Series([line.decode() for line in LINES]).slice(1)  # a view that does not start at 0
    for suffix in ("jsonl", "csv"):
        a, b = tmp_path / f"iter.{suffix}", tmp_path / f"column.{suffix}"
        results.write_results(iter(LINES[1:]), a)
        results.write_results_column(series, b)
        assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "column.jsonl").read_bytes() == b"".join(LINES[1:])


def test_empty_results(tmp_path):
    for write, lines in ((results.write_results, iter(())), (results.write_results_column, pl.Series([], dtype=pl.String))):
        path = tmp_path / f"{write.__name__}.parquet"
        assert write(lines, path) == 0
        assert pq.read_table(path).num_rows == 0 and pq.read_schema(path) == results.parquet_schema()


def test_a_line_missing_a_required_field_is_an_error(tmp_path):
    broken = orjson.dumps({k: v for k, v in RECORDS[0].items() if k != "outcome"}) + b"\n"
    with pytest.raises(Exception, match="null"):
        results.write_results(iter([LINES[0], broken]), tmp_path / "r.parquet")


def test_duckdb_and_polars_read_the_types(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "r.parquet"
    results.write_results(iter(LINES), path)
    got = duckdb.sql(f"""
        SELECT message_id, f.rule, f.evidence['in_window'] AS w, typeof(evaluated_at), typeof(f.evidence)
        FROM (SELECT message_id, evaluated_at, unnest(findings) AS f FROM read_parquet('{path}'))
        WHERE f.evidence['in_window'] IS NOT NULL""").fetchall()
    assert got == [("m-3", "D4", "3 days", "TIMESTAMP WITH TIME ZONE", "MAP(VARCHAR, VARCHAR)")]
    frame = pl.read_parquet(path)
    assert frame.schema["evaluated_at"] == pl.Datetime("us", "UTC")
    assert frame["out_of_order"].to_list() == [False, False, True, False, False]


def test_the_docs_query_runs(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "howto" / "audit.md").read_text(encoding="utf-8")
    query = re.search(r'```sql title="violations.sql"\n(.*?)```', page, re.S).group(1)
    path = tmp_path / "verdicts.parquet"
    line = orjson.dumps({**RECORDS[0], "message_id": "m-5", "outcome": "violation", "policies": [POLICY],
                         "findings": [{**FINDING, "evidence": {"phone_number": "555"}}]}) + b"\n"
    results.write_results(iter(LINES + [line]), path)
    got = duckdb.sql(query.replace("'verdicts.parquet'", f"'{path}'").rstrip().rstrip(";")).fetchall()
    # the violations in local time order, the quoted number only where a rule quoted one
    assert [(r[0], r[4], r[5]) for r in got] == [("m-5", "D4", "555"), (RECORDS[1]["message_id"], "D4", None),
                                                 ("m-3", "D4", None)]


def test_csv_results_have_a_flat_rules_column_beside_the_json_findings(tmp_path):
    import csv

    path = tmp_path / "r.csv"
    results.write_results(iter(LINES), path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(results.CSV_COLUMNS)
    assert list(results.CSV_COLUMNS).index("rules") == list(results.CSV_COLUMNS).index("findings") + 1
    for row, record in zip(rows, RECORDS):
        wanted = list(dict.fromkeys(f"{f['policy']}/{f['rule']}" for f in record["findings"]))
        assert row["rules"] == ";".join(wanted)
        assert [f"{f['policy']}/{f['rule']}" for f in orjson.loads(row["findings"])] == \
            [f"{f['policy']}/{f['rule']}" for f in record["findings"]]
    assert any(row["rules"].count(";") >= 1 for row in rows)
