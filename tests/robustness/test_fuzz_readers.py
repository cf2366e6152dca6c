"""Fuzzers for the log readers: random bytes and schema-shaped records with mutations, as JSON
Lines, CSV and Parquet. Whatever the input: no exception escapes the error path (a file is
refused with LogError, or every line is a record, a reject or blank), `check` and the
streaming audit read the same records and rejects, and read = judged + rejected + events."""
from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audit import AuditConfig, audit
from engine.check import load_log
from engine.io import InputError, LogError
from engine.model import BuyerEvent, Message

FIELDS = ["message_id", "order_id", "buyer_id", "sent_at", "marketplace", "category", "body", "subject",
          "buyer_opted_out", "delivered_at", "type", "at", "attachments"]
TIMES = ["2021-03-28T10:00:00-07:00", "2021-03-28T10:00:00Z", "0001-01-01T00:00:00+01:00",
         "9999-12-31T23:00:00-05:00", "2021-02-30T10:00:00Z", "2021-03-28T10:00:00", "yesterday", "1616950800"]
VALUES = st.one_of(
    st.sampled_from(TIMES), st.sampled_from(["US", "XX", "shipment_confirmation", "review_request", "buyer_opt_out"]),
    st.text(max_size=12), st.integers(-2**70, 2**70), st.booleans(), st.none(), st.floats(allow_nan=True),
    st.just("=HYPERLINK(\"x\")"), st.just('[{"name": "a", "kind": "invoice"}]'),
)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def records(draw):
    base = {"message_id": f"M{draw(st.integers(0, 30))}", "order_id": "O1",
            "buyer_id": draw(st.sampled_from(["B1", "B2"])), "sent_at": draw(st.sampled_from(TIMES[:2])),
            "category": "shipment_confirmation", "body": "Hello"}
    if draw(st.booleans()):
        base = {"type": "buyer_opt_out", "buyer_id": "B1", "at": TIMES[0]}
    for _ in range(draw(st.integers(0, 3))):  # mutations: change, add or drop a field
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            base[name] = draw(VALUES)
        else:
            base.pop(name, None)
    return base


def _agree(path: Path, policies) -> None:
    """check's reader and the streaming audit give the same records and rejects, and the audit balances."""
    try:
        log = load_log(path, policies)
    except LogError as refused:
        with pytest.raises(LogError) as again:
            audit(policies, AuditConfig(paths=[path], jobs=1, engine="stream"))
        assert str(again.value) == str(refused)
        return
    with tempfile.TemporaryDirectory() as tmp:
        rejects = Path(tmp) / "rejects.jsonl"
        results = Path(tmp) / "results.jsonl"
        result = audit(policies, AuditConfig(paths=[path], jobs=1, engine="stream", results=results,
                                             rejects=rejects))
        judged = [json.loads(line)["message_id"] for line in results.read_text().splitlines()]
        rejected = [json.loads(line)["line"] for line in rejects.read_text().splitlines()]
    s = result.summary
    assert s.balanced
    assert judged == [r.message_id for r in log.records if isinstance(r, Message)]
    assert s.events == sum(isinstance(r, BuyerEvent) for r in log.records)
    assert rejected == [e.line for e in log.errors]
    assert all(isinstance(e, InputError) for e in log.errors)


@SETTINGS
@given(st.lists(st.one_of(records().map(lambda r: json.dumps(r).encode()), st.binary(max_size=40),
                          st.just(b""), st.just(b"null"), st.just(b"[1, 2]")), max_size=8),
       st.sampled_from([b"\n", b"\r\n"]))
def test_json_lines_reader(policies, lines, end):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        path.write_bytes(end.join(lines) + end)
        _agree(path, policies)


@SETTINGS
@given(st.lists(records(), min_size=1, max_size=8), st.lists(st.binary(max_size=20), max_size=2),
       st.sampled_from(["header", "no header", "repeat", "semicolons"]))
def test_csv_reader(policies, rows, junk, shape):
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["message_id"]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";" if shape == "semicolons" else ",")
    if shape == "header" or shape == "semicolons":
        writer.writerow(columns)
    elif shape == "repeat":
        writer.writerow(columns + columns[:1])
    for r in rows:
        writer.writerow(["" if r.get(c) is None else str(r.get(c)) for c in columns])
    data = buf.getvalue().encode() + b"\n".join(junk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.csv"
        path.write_bytes(data)
        _agree(path, policies)


@SETTINGS
@given(st.lists(records(), min_size=1, max_size=6), st.integers(0, 64))
def test_parquet_reader(policies, rows, cut):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = sorted({k for r in rows for k in r})
    table = pa.table({c: pa.array([None if r.get(c) is None else str(r.get(c)) for r in rows], pa.string())
                      for c in columns})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        pq.write_table(table, path)
        if cut:  # a truncated file
            data = path.read_bytes()
            path.write_bytes(data[: max(0, len(data) - cut)])
        _agree(path, policies)
