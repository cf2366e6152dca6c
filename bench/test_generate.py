"""Tests for bench/generate.py. The record checks below re-state CONTRACT §1
independently of the generator, so they catch drift in either direction."""

from __future__ import annotations

import csv
import json
import re
import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate  # noqa: E402

CATEGORIES = {
    "product_customization", "delivery_scheduling", "shipping_address_issue", "order_info_request",
    "fulfillment_issue", "return_question", "invoice", "custom_design_verification",
    "home_service_appointment", "review_request", "feedback_request", "order_confirmation",
    "shipment_confirmation", "delivery_confirmation", "proactive_customer_service", "out_of_stock_notice",
    "marketing", "cross_sell", "thank_you_only", "customer_service_reply",
}
MARKETPLACES = {"US", "UK", "DE", "JP"}
CHANNELS = {"email", "seller_central", "request_a_review", "api"}
ATTACHMENT_KINDS = {"invoice", "product_instructions", "warranty", "image", "other"}
ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def parse_instant(value) -> datetime:
    """An RFC 3339 timestamp with offset, or ValueError."""
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", value) \
            or not OFFSET.search(value):
        raise ValueError(f"not an offset timestamp: {value!r}")
    return datetime.fromisoformat(value)


def check_record(record) -> tuple[str, datetime]:
    """Returns ("message"|"event", instant) for a valid record, else raises ValueError."""
    if not isinstance(record, dict):
        raise ValueError("not an object")
    if "type" in record:
        if record["type"] not in ("buyer_opt_out", "buyer_opt_in"):
            raise ValueError("unknown event type")
        if not isinstance(record.get("buyer_id"), str) or not record["buyer_id"]:
            raise ValueError("event buyer_id")
        return "event", parse_instant(record.get("at"))
    for field in ("message_id", "order_id", "buyer_id", "category"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise ValueError(f"missing or non-string {field}")
    if not ORDER_ID.match(record["order_id"]):
        raise ValueError("order id format")
    if record["category"] not in CATEGORIES:
        raise ValueError("category")
    sent_at = parse_instant(record.get("sent_at"))
    if record.get("marketplace", "US") not in MARKETPLACES:
        raise ValueError("marketplace")
    if record.get("initiated_by", "seller") not in ("seller", "buyer"):
        raise ValueError("initiated_by")
    if record.get("channel", "email") not in CHANNELS:
        raise ValueError("channel")
    if record.get("buyer_opted_out") not in (True, False, None):
        raise ValueError("buyer_opted_out")
    if not isinstance(record.get("reply_to"), (str, type(None))):
        raise ValueError("reply_to")
    for field in ("subject", "body"):
        if not isinstance(record.get(field, ""), str):
            raise ValueError(field)
    for field in ("delivered_at", "order_placed_at"):
        if record.get(field) is not None:
            parse_instant(record[field])
    for field in ("language", "buyer_language"):
        if not isinstance(record.get(field), (str, type(None))):
            raise ValueError(field)
    attachments = record.get("attachments", [])
    if not isinstance(attachments, list) or any(
            not isinstance(a, dict) or not isinstance(a.get("name"), str) or a.get("kind") not in ATTACHMENT_KINDS
            for a in attachments):
        raise ValueError("attachments")
    return "message", sent_at


def read_jsonl(path: Path):
    """Yields (line_number, record or None when the line is not JSON)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError:
                yield number, None


def csv_record(row: dict) -> dict:
    """CSV cells back to record values: empty = absent, booleans and lists from text."""
    record = {}
    for column, cell in row.items():
        if cell == "":
            continue
        if column == "buyer_opted_out":
            record[column] = {"true": True, "false": False}.get(cell, cell)
        elif column in generate.LIST_COLUMNS:
            try:
                record[column] = json.loads(cell)
            except json.JSONDecodeError:
                record[column] = cell
        else:
            record[column] = cell
    return record


@pytest.fixture(scope="module")
def log_with_errors(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gen") / "log.jsonl"
    truth = generate.generate(30_000, seed=11, out=path, malformed=0.05)
    return path, truth


@pytest.fixture(scope="module")
def clean_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "clean.jsonl"
    generate.generate(20_000, seed=5, out=path, parts=3, jobs=1)
    return path


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    paths = [tmp_path / f"{name}.jsonl" for name in ("a", "b", "c")]
    generate.generate(4_000, seed=3, out=paths[0], malformed=0.05)
    generate.generate(4_000, seed=3, out=paths[1], malformed=0.05)
    generate.generate(4_000, seed=4, out=paths[2], malformed=0.05)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert Path(f"{paths[0]}.truth.json").read_bytes() == Path(f"{paths[1]}.truth.json").read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_process_count_does_not_change_the_bytes(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    generate.generate(6_000, seed=9, out=one, parts=3, jobs=1)
    generate.generate(6_000, seed=9, out=two, parts=3, jobs=2)
    assert one.read_bytes() == two.read_bytes()


def test_exact_line_count_and_truth_counts(log_with_errors):
    path, truth = log_with_errors
    kinds = {"message": 0, "event": 0, "malformed": 0}
    for _, record in read_jsonl(path):
        try:
            kind, _ = check_record(record)
        except (ValueError, TypeError):
            kind = "malformed"
        kinds[kind] += 1
    assert truth["total_lines"] == 30_000 == sum(kinds.values())
    assert kinds["message"] == truth["valid_messages"]
    assert kinds["event"] == truth["valid_events"]
    assert kinds["malformed"] == truth["malformed_total"] == sum(truth["malformed"].values())


def test_malformed_fraction_and_variety(log_with_errors):
    _, truth = log_with_errors
    assert abs(truth["malformed_total"] / truth["total_lines"] - 0.05) < 0.006
    assert all(count > 0 for count in truth["malformed"].values()), truth["malformed"]


def test_valid_lines_follow_the_schema(clean_log):
    message_ids = set()
    categories = set()
    marketplaces = set()
    for number, record in read_jsonl(clean_log):
        kind, _ = check_record(record)  # raises on any deviation
        if kind == "message":
            assert record["message_id"] not in message_ids, number
            message_ids.add(record["message_id"])
            categories.add(record["category"])
            marketplaces.add(record.get("marketplace", "US"))
    assert categories == CATEGORIES
    assert marketplaces == MARKETPLACES


def test_log_is_in_time_order(clean_log, log_with_errors):
    for path in (clean_log, log_with_errors[0]):
        previous = None
        for number, record in read_jsonl(path):
            try:
                _, instant = check_record(record)
            except (ValueError, TypeError):
                continue
            assert previous is None or instant >= previous, f"{path.name}:{number}"
            previous = instant


def test_replies_answer_earlier_buyer_messages_of_the_same_buyer(clean_log):
    buyer_messages: dict[str, dict] = {}
    replies = quoted = 0
    for number, record in read_jsonl(clean_log):
        if "type" in record:
            continue
        if record.get("initiated_by") == "buyer":
            buyer_messages[record["message_id"]] = record
            continue
        if record.get("reply_to") is None:
            continue
        replies += 1
        question = buyer_messages.get(record["reply_to"])
        assert question is not None, f"line {number}: reply_to names no earlier buyer message"
        assert question["buyer_id"] == record["buyer_id"]
        assert question["order_id"] == record["order_id"]
        quoted += f"> {question['body']}" in record["body"]
    assert replies > 100
    assert 0.7 < quoted / replies < 0.95  # mostly quoted, some not (D6 material)


def test_orders_carry_one_to_five_messages(clean_log):
    per_order: dict[str, int] = {}
    for _, record in read_jsonl(clean_log):
        if "type" not in record:
            per_order[record["order_id"]] = per_order.get(record["order_id"], 0) + 1
    assert max(per_order.values()) <= 5
    assert sum(1 for count in per_order.values() if count > 1) > len(per_order) / 4


def test_realistic_mix(clean_log):
    subjects = bodies = 0
    found = dict.fromkeys(("air", "important", "unbracketed", "amazon_url", "other_url", "email", "emoji",
                           "order_id", "events", "opted_out_true", "opted_out_null", "attachments",
                           "null_delivered", "language"), 0)
    for _, record in read_jsonl(clean_log):
        if "type" in record:
            found["events"] += 1
            continue
        subject, body = record.get("subject", ""), record.get("body", "")
        subjects += 1
        bodies += 1
        found["air"] += subject == "Additional Information Required"
        found["important"] += "[important]" in subject.lower()
        found["unbracketed"] += "IMPORTANT" in subject and "[" not in subject
        found["amazon_url"] += "https://www.amazon.com/" in body
        found["other_url"] += bool(re.search(r"https?://(?!www\.amazon\.com)", body))
        found["email"] += bool(re.search(r"[\w.]+@[\w-]+\.\w+", body))
        found["emoji"] += bool(re.search("[\U0001F300-\U0001FAFF\u2B50]", body))
        found["order_id"] += record["order_id"] in body
        found["opted_out_true"] += record.get("buyer_opted_out") is True
        found["opted_out_null"] += "buyer_opted_out" in record and record["buyer_opted_out"] is None
        found["attachments"] += bool(record.get("attachments"))
        found["null_delivered"] += "delivered_at" in record and record["delivered_at"] is None
        found["language"] += "language" in record
    assert all(count > 0 for count in found.values()), found


def test_csv_and_parquet_hold_the_same_records(tmp_path):
    jsonl, table, columnar = tmp_path / "l.jsonl", tmp_path / "l.csv", tmp_path / "l.parquet"
    for path, fmt in ((jsonl, "jsonl"), (table, "csv"), (columnar, "parquet")):
        generate.generate(5_000, seed=21, out=path, fmt=fmt, malformed=0.05, parts=2, jobs=1)
    truth_csv = json.loads(Path(f"{table}.truth.json").read_text())
    assert truth_csv["malformed"]["invalid_json"] == 0
    with open(table, newline="", encoding="utf-8") as handle:
        rows = [csv_record(row) for row in csv.DictReader(handle)]
    assert len(rows) == 5_000
    broken = 0
    for row in rows:
        if row.get("type") is not None:
            row = {k: row[k] for k in ("type", "buyer_id", "at") if k in row}
        try:
            check_record(row)
        except (ValueError, TypeError):
            broken += 1
    assert broken == truth_csv["malformed_total"]

    pq = pytest.importorskip("pyarrow.parquet")
    with open(table, newline="", encoding="utf-8") as handle:
        csv_cells = [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(handle)]
    # Parquet holds the CSV cells in columns (it also keeps "" apart from null, which CSV cannot).
    parquet_cells = [{k: (v if v != "" else None) for k, v in row.items()}
                     for row in pq.read_table(columnar).to_pylist()]
    assert parquet_cells == csv_cells

    # Same simulation whatever the container: the valid messages agree.
    messages_jsonl = [r for _, r in read_jsonl(jsonl) if isinstance(r, dict) and "message_id" in r]
    ids_csv = {r.get("message_id") for r in rows}
    assert sum(r["message_id"] in ids_csv for r in messages_jsonl) > 0.9 * len(messages_jsonl)
