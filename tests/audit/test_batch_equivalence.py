"""The batch engine (engine.batch) gives the streaming audit's answers byte for byte.

The streaming audit is itself compared with the per-message `check` path
(test_equivalence.py); here the two audit engines must write the same result
lines, the same rejects and the same summary on logs from two generators with
different distributions (this suite's own and the benchmark's), labelled and
with categories removed, and the streaming side with one worker and with the
default two.
"""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import orjson
import pytest

from engine.audit import AuditConfig, audit

from .gen import write

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "policies" / "classifier" / "labelled_corpus.jsonl"


def _bench_generator():
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(result) -> dict:
    s = result.summary
    return {"counts": (s.read, s.judged, s.rejected, s.events, s.blank, s.out_of_order),
            "outcomes": dict(s.outcomes), "by_rule": dict(s.by_rule), "by_version": dict(s.by_version),
            "by_month": dict(s.by_month), "reasons": dict(s.reject_reasons),
            # the report's worst orders (the streaming audit keeps a bounded superset of them)
            "orders": s.worst_orders(), "versions": dict(s.versions_used)}


def _assert_same(policies, log: Path, tmp_path: Path, jobs: int, min_judged: int) -> None:
    outputs = {}
    for engine in ("stream", "batch"):
        results, rejects = tmp_path / f"{engine}.jsonl", tmp_path / f"{engine}.rejects.jsonl"
        result = audit(policies, AuditConfig(paths=[log], jobs=jobs, results=results, rejects=rejects,
                                             engine=engine))
        assert result.summary.balanced
        outputs[engine] = (results.read_bytes().splitlines(), rejects.read_bytes(), _summary(result))
    stream, batch = outputs["stream"], outputs["batch"]
    assert len(stream[0]) >= min_judged
    assert len(batch[0]) == len(stream[0])
    mismatches = [(a, b) for a, b in zip(stream[0], batch[0]) if a != b]
    assert not mismatches[:3], f"{len(mismatches)} result lines differ"
    assert batch[1] == stream[1]
    assert batch[2] == stream[2]


def _strip_categories(src: Path, dst: Path, share: float, seed: int) -> None:
    """A raw export: the category removed from a share of the messages, some bodies
    replaced by real messages of the classifier's corpus so inference has work."""
    corpus = [orjson.loads(line) for line in CORPUS.read_bytes().splitlines() if line.strip()]
    rng = random.Random(seed)
    with open(dst, "wb") as out:
        for raw in src.read_bytes().splitlines(keepends=True):
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                out.write(raw)
                continue
            if isinstance(rec, dict) and "message_id" in rec and rng.random() < share:
                if rng.random() < 0.5:
                    example = rng.choice(corpus)
                    rec["subject"], rec["body"] = example["subject"], example["body"]
                rec.pop("category", None)
                out.write(orjson.dumps(rec) + b"\n")
            else:
                out.write(raw)


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_equals_stream_on_this_suites_generator(policies, tmp_path, jobs):
    log = tmp_path / "log.jsonl"
    write(log, 54_000, seed=4242, malformed=0.03)
    _assert_same(policies, log, tmp_path, jobs, 50_000)


def test_batch_equals_stream_on_the_benchmark_generator(policies, tmp_path):
    log = tmp_path / "bench.jsonl"
    _bench_generator().main(["--messages", "54000", "--seed", "11", "--out", str(log), "--malformed", "0.05",
                             "--jobs", "1"])
    _assert_same(policies, log, tmp_path, 2, 48_000)


@pytest.mark.parametrize("generator", ["suite", "bench"])
def test_batch_equals_stream_on_raw_records(policies, tmp_path, generator):
    labelled = tmp_path / "labelled.jsonl"
    if generator == "suite":
        write(labelled, 6000, seed=77, malformed=0.03, start="2019-06-01")
    else:
        _bench_generator().main(["--messages", "6000", "--seed", "12", "--out", str(labelled),
                                 "--malformed", "0.05", "--start", "2019-06-01", "--jobs", "1"])
    raw = tmp_path / "raw.jsonl"
    _strip_categories(labelled, raw, 0.6, seed=5)
    _assert_same(policies, raw, tmp_path, 2, 5000)


def test_batch_reads_a_repeated_key_as_the_record_model_does(policies, tmp_path):
    """JSON parsers disagree on repeated keys (DuckDB keeps the first value, orjson the
    last); such lines take the per-line path, so both engines judge the last value."""
    base = ('{"message_id": "M%d", "order_id": "111-0000001-0000001", "buyer_id": "B1", '
            '"channel": "email", "subject": "Hi", "body": "Hi", %s}')
    lines = [base % (1, '"sent_at": "2017-03-28T10:00:00-07:00", "category": "review_request", '
                        '"category": "product_customization"'),
             base % (2, '"sent_at": "2017-03-28T10:00:00-07:00", "sent_at": "2019-03-28T10:00:00-07:00", '
                        '"category": "review_request"'),
             base % (3, '"sent_at": "2019-04-01T10:00:00-07:00", "category": "review_request", '
                        '"buyer_opted_out": false, "buyer_opted_out": true')]
    log = tmp_path / "repeated.jsonl"
    log.write_text("\n".join(lines) + "\n")
    _assert_same(policies, log, tmp_path, 1, 3)


def test_a_null_line_is_rejected_and_a_log_without_messages_is_judged(policies, tmp_path):
    """A JSON `null` line is a record that is not an object (rejected, never a blank line),
    and a log of only events and rejects gives an empty, balanced audit on both engines."""
    log = tmp_path / "no-messages.jsonl"
    log.write_text('null\n{"type": "buyer_opt_out", "buyer_id": "B1", "at": "2020-01-01T00:00:00Z"}\n\n')
    _assert_same(policies, log, tmp_path, 1, 0)
    result = audit(policies, AuditConfig(paths=[log], jobs=1, engine="batch"))
    s = result.summary
    assert (s.read, s.rejected, s.events, s.blank, s.judged) == (2, 1, 1, 1, 0)


def test_batch_results_do_not_depend_on_jobs(policies, tmp_path):
    """Worker processes judge the buyers that hash to them; a reply naming another buyer's
    message (held by another worker) still reads as not quoting, as in one pass."""
    log = tmp_path / "jobs.jsonl"
    _bench_generator().main(["--messages", "6000", "--seed", "13", "--out", str(log), "--malformed", "0.05",
                             "--jobs", "1"])
    common = '"order_id": "111-0000001-0000001", "channel": "email", "category": "customer_service_reply", "marketplace": "US"'
    extra = [
        '{"message_id": "Q1", "buyer_id": "BX", "initiated_by": "buyer", "sent_at": "2026-01-02T10:00:00Z", '
        '"subject": "Where is it?", "body": "Where is my parcel?", %s}' % common,
        '{"message_id": "Q2", "buyer_id": "BY", "initiated_by": "seller", "reply_to": "Q1", '
        '"sent_at": "2026-01-02T11:00:00Z", "subject": "Re: Where is it?", '
        '"body": "It ships today. > Where is my parcel?", %s}' % common,
    ]
    with open(log, "a") as fh:
        fh.write("\n".join(extra) + "\n")
    outputs = []
    for jobs in (1, 3):
        results, rejects = tmp_path / f"r{jobs}.jsonl", tmp_path / f"j{jobs}.jsonl"
        result = audit(policies, AuditConfig(paths=[log], jobs=jobs, results=results, rejects=rejects,
                                             engine="batch"))
        assert result.summary.balanced
        outputs.append((results.read_bytes(), rejects.read_bytes(), _summary(result)))
    assert outputs[0] == outputs[1]
    reply = next(orjson.loads(line) for line in outputs[0][0].splitlines() if b'"Q2"' in line)
    # Unknown would mean the answered message was not found (it is in the log, of buyer BX).
    assert not any("quotes_buyer_message unknown" in f["reason"] for f in reply["findings"]), reply


def test_batch_writes_ids_needing_escapes_and_late_lines_as_the_stream_does(policies, tmp_path):
    """Result lines are assembled natively; an id with a quote, a backslash or a control
    character is escaped by orjson, and an out-of-order line keeps its flag."""
    common = ('"order_id": "111-0000001-0000001", "buyer_id": "B1", "channel": "email", "marketplace": "US", '
              '"category": "review_request"')
    ids = ['plain', 'with \\"quote\\"', 'back\\\\slash', 'tab\\there', 'caf\u00e9']
    times = ["2021-03-02T10:00:00Z", "2021-03-01T10:00:00Z", "2021-03-03T10:00:00Z", "2021-03-02T12:00:00Z",
             "2021-03-04T10:00:00Z"]
    log = tmp_path / "ids.jsonl"
    log.write_text("".join(
        '{"message_id": "%s", "sent_at": "%s", "subject": "Please review", '
        '"body": "Please leave a review: https://example.com/review", %s}\n' % (mid, t, common)
        for mid, t in zip(ids, times)), encoding="utf-8")
    _assert_same(policies, log, tmp_path, 1, 5)
    lines = (tmp_path / "batch.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line).get("out_of_order", False) for line in lines] == [False, True, False, True, False]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_batch_writes_typed_parquet_and_csv_results_as_the_stream_does(policies, tmp_path, suffix):
    """The batch engine hands the results writer a column of lines rather than an iterator:
    the Parquet file (typed, read back as a table) and the CSV file are the stream's."""
    log = tmp_path / "log.jsonl"
    write(log, 3000, seed=99, malformed=0.03)
    written = {}
    for engine in ("stream", "batch"):
        results = tmp_path / f"{engine}{suffix}"
        audit(policies, AuditConfig(paths=[log], jobs=1, results=results, engine=engine))
        written[engine] = results
    if suffix == ".csv":
        assert written["batch"].read_bytes() == written["stream"].read_bytes()
    else:
        import pyarrow.parquet as pq

        stream, batch = (pq.read_table(written[e]) for e in ("stream", "batch"))
        assert stream.num_rows > 2500
        assert batch.schema == stream.schema
        assert batch.equals(stream)


def _children() -> set[int]:
    import os

    found = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            found |= {int(p) for p in fh.read().split()}
    return {p for p in found if os.path.exists(f"/proc/{p}") and
            open(f"/proc/{p}/stat").read().split()[2] != "Z"}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process table from /proc")
def test_batch_workers_started_before_the_read_leave_when_the_read_fails(policies, tmp_path):
    """The workers start while the parent reads the log; when the read fails they are told
    to leave (or stopped), never left waiting."""
    import time

    before = _children()
    with pytest.raises(OSError):
        audit(policies, AuditConfig(paths=[tmp_path / "missing.jsonl"], jobs=2, engine="batch"))
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children() - before


def test_batch_writes_inference_notes_as_the_stream_does(policies, tmp_path):
    """The notes on what was inferred come first among a line's findings; the batch engine
    renders them once per distinct inference and splices them in natively: before findings
    (with a comma), after an escaped id, for a classified record, and never on a line with no policy."""
    common = '"order_id": "111-0000001-0000001", "channel": "email", "marketplace": "US"'
    records = [
        # 2021: the guidelines read the language; the buyer's is given, the message's is not.
        ('plain-1', "B1", "2021-03-02T10:00:00Z", "review_request", "Please review",
         "Please leave a review: https://example.com/review"),
        ('quote \\"d\\"', "B2", "2021-03-02T11:00:00Z", "shipment_confirmation", "Shipped",
         "Your order has shipped today."),
        ('plain-2', "B3", "2021-03-02T12:00:00Z", "shipment_confirmation", "Versendet",
         "Ihre Bestellung wurde heute versendet."),
        ('plain-3', "B4", "2021-03-02T13:00:00Z", None, "Thanks",
         "Thank you for your order, we hope you enjoy it."),
        # Before any policy: inferred, but the line has no findings at all.
        ('early', "B5", "2015-01-05T10:00:00Z", None, "Hello", "Thank you for your order."),
    ]
    lines = []
    for mid, buyer, sent, category, subject, body in records:
        cat = f'"category": "{category}", ' if category else ""
        lines.append('{"message_id": "%s", "buyer_id": "%s", "sent_at": "%s", %s"buyer_language": "en", '
                     '"subject": "%s", "body": "%s", %s}' % (mid, buyer, sent, cat, subject, body, common))
    log = tmp_path / "notes.jsonl"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _assert_same(policies, log, tmp_path, 1, 5)
    written = [orjson.loads(line) for line in (tmp_path / "batch.jsonl").read_bytes().splitlines()]
    rules = [[f["rule"] for f in r["findings"]] for r in written]
    assert all("INFER-LANGUAGE" in r[:2] and r[0].startswith("INFER-") for r in rules[:4]), rules
    assert rules[3][0] == "INFER-CATEGORY" and all(len(r) > 2 for r in rules[:4]) and rules[4] == []


def test_batch_forgets_an_order_history_after_a_message_that_did_not_count(policies, tmp_path):
    """A review request, then a message on the order that counts for nothing, then another
    review request after --history-days of log time: the first is forgotten (the streaming
    audit's expiry), however many uncounted messages came between."""
    common = ('"order_id": "111-0000001-0000009", "buyer_id": "B9", "channel": "email", "marketplace": "US", '
              '"buyer_language": "en", "language": "en"')
    records = [("R1", "2021-03-01T10:00:00Z", "review_request", "Please review", "How was it? Leave a review."),
               ("S1", "2021-03-02T10:00:00Z", "shipment_confirmation", "Shipped", "It shipped."),
               ("R2", "2021-05-20T10:00:00Z", "review_request", "Please review", "How was it? Leave a review.")]
    log = tmp_path / "expiry.jsonl"
    log.write_text("".join(
        '{"message_id": "%s", "sent_at": "%s", "category": "%s", "subject": "%s", "body": "%s", %s}\n'
        % (mid, sent, cat, subject, body, common) for mid, sent, cat, subject, body in records))
    outputs = {}
    for engine in ("stream", "batch"):
        results = tmp_path / f"{engine}.jsonl"
        audit(policies, AuditConfig(paths=[log], jobs=1, history_days=30, results=results, engine=engine))
        outputs[engine] = results.read_bytes()
    assert outputs["batch"] == outputs["stream"]
    last = orjson.loads(outputs["batch"].splitlines()[-1])
    assert not any("earlier" in str(f.get("evidence", "")) and "1 earlier" in str(f["evidence"])
                   for f in last["findings"]), last
