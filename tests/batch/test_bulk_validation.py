"""The bulk JSON Lines path (engine.batch.decode) is sound against the pydantic models.

A line that `classify_rows` marks `fast` is taken without asking pydantic, so
for every such line the models must accept the record and give exactly the
values the pipeline takes from the columns. Lines not marked fast go to the
models one by one; for the whole file, the batch loader (`engine.batch.load.load`)
must then end with the streaming reader's answers: the same rejects (line,
field, reason), the same messages and events with the same values, the same
log clock and message ids, the same blank and read counts.

The lines are valid records with one or more fields broken in the ways real
exports break them (wrong JSON types, values pydantic coerces, unusual
timestamps, unknown enum values, extra and escaped keys, nesting, escapes,
non-finite and huge numbers, trailing commas, byte-order marks, broken JSON,
non-objects, blank lines).

Inputs where DuckDB's JSON reader and orjson disagree (non-finite literals in
any letter case, huge numbers, deep nesting, non-UTF-8 bytes) each have a
regression test of exact inputs (PARSER_DISAGREEMENTS).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from engine.audit import _jsonl_items, log_time
from engine.batch.decode import classify_rows, read_lines
from engine.batch import load as batch_load
from engine.batch.load import _fast_frames, _message_row, _us, load as _load
from engine.io import InputError, LogError, read_line_by_line, to_record
from engine.model import BuyerEvent, Category, Channel, InitiatedBy, Message

NOT_AFTER = 4.0e9  # the audit's start: times after it do not count for the log clock
# 1.6e9 falls inside the generated years, so the log-clock cut-off is exercised both ways.
NOT_AFTERS = (NOT_AFTER, 1.6e9)

# ---- the two paths ------------------------------------------------------------------------


def pydantic_path(path: Path, not_after: float) -> dict:
    """What the streaming audit reads: every line through orjson and the pydantic models."""
    out = {"rejects": set(), "messages": {}, "events": {}, "clock": {}, "ids": {}, "blank": 0, "read": 0}
    for number, obj, _ in _jsonl_items(path, str(path)):
        if obj is None:
            out["blank"] += 1
            continue
        out["read"] += 1
        pos = number - 1
        out["clock"][pos] = log_time(obj, not_after)
        if isinstance(obj, dict) and isinstance(obj.get("message_id"), str):
            out["ids"][pos] = obj["message_id"]
        item = obj if isinstance(obj, InputError) else to_record(obj, str(path), number)
        if isinstance(item, InputError):
            out["rejects"].add((item.line, item.field, item.reason))
        elif isinstance(item, BuyerEvent):
            out["events"][pos] = (item.buyer_id, _us(item.at), item.type == "buyer_opt_out")
        else:
            row = _message_row(pos, 0, number, item)
            del row["slow"], row["attachments_json"]  # how it was read (checked above), not what
            out["messages"][pos] = row
    return out


def bulk_path(path: Path, not_after: float) -> tuple[dict, pl.DataFrame]:
    """What the batch loader reads, and the classified frame it read it from."""
    frames = []

    def classify(raw):
        frames.append(classify_rows(raw))
        return frames[-1]

    with mock.patch.object(batch_load, "classify_rows", classify):
        loaded = _load([path], None, not_after, ())
    messages = {}
    for row in loaded.messages.iter_rows(named=True):
        row.pop("slow"), row.pop("attachments_json")
        messages[row["pos"]] = row
    return {
        "rejects": {(e.line, e.field, e.reason) for _, e in loaded.rejects},
        "messages": messages,
        "events": {r["pos"]: (r["buyer_id"], r["at_us"], r["ev_state"]) for r in loaded.events.iter_rows(named=True)},
        "clock": dict(loaded.clock.iter_rows()),
        "ids": dict(loaded.ids.iter_rows()),
        "blank": loaded.blank,
        "read": loaded.read,
    }, (pl.concat(frames) if frames else None)  # None: the file was read line by line, not in bulk


def _model_of(raw: bytes):
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InputError("-", None, None, None, f"malformed JSON: {exc}")
    return to_record(obj, "-", None)


def check_file(data: bytes, not_after: float = NOT_AFTER) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        path.write_bytes(data)
        raw, offsets = read_lines(path)
        try:
            bulk, frame = bulk_path(path, not_after)
        except LogError as exc:  # a file refused whole (a JSON array, CR-only line ends)...
            with pytest.raises(LogError) as refused:  # ...is refused by the streaming reader alike
                pydantic_path(path, not_after)
            assert str(refused.value) == str(exc)
            return
        pure = pydantic_path(path, not_after)
        whole = read_line_by_line(path)

    def line(pos):
        return raw[offsets[pos]:offsets[pos + 1]].tobytes()

    # 1. Every line classify_rows marks fast is a record the models accept, of the kind
    # claimed, and the values _fast_frames takes from its columns are the model's.
    assert (frame is None) == whole  # None: read whole by the streaming reader (one pretty-printed object)
    if frame is None:
        frame = pl.DataFrame(schema={"index": pl.UInt32, "fast": pl.String})
        messages = events = pl.DataFrame(schema={"pos": pl.Int64})
    else:
        messages, events = _fast_frames(frame, 0, 0)
    claimed = dict(zip(frame["index"].to_list(), frame["fast"].to_list()))
    assert set(messages["pos"]) | set(events["pos"]) == {i for i, f in claimed.items() if f is not None}
    for row in messages.iter_rows(named=True):
        record = _model_of(line(row["pos"]))
        assert isinstance(record, Message), (line(row["pos"]), record)
        expected = _message_row(row["pos"], 0, row["line"], record)
        del row["slow"], expected["slow"]
        # The attachments' JSON kept for native detectors holds the model's attachments.
        kept, _ = row.pop("attachments_json"), expected.pop("attachments_json")
        assert (orjson.loads(kept) if kept is not None else []) == \
            [a.model_dump(mode="json") for a in record.attachments], line(row["pos"])
        assert row == expected, line(row["pos"])
    for pos, buyer, at_us, state in events.iter_rows():
        record = _model_of(line(pos))
        assert isinstance(record, BuyerEvent), (line(pos), record)
        assert (buyer, at_us, state) == (record.buyer_id, _us(record.at), record.type == "buyer_opt_out"), line(pos)
    # 2. The loader ends where the streaming reader ends, value for value.
    assert bulk["rejects"] == pure["rejects"]
    assert bulk["messages"].keys() == pure["messages"].keys()
    for pos, row in pure["messages"].items():
        assert bulk["messages"][pos] == row, line(pos)
    assert bulk["events"] == pure["events"]
    assert bulk["clock"] == pure["clock"]
    assert bulk["ids"] == pure["ids"]
    assert (bulk["blank"], bulk["read"]) == (pure["blank"], pure["read"])


# ---- generated lines ----------------------------------------------------------------------

CATEGORIES = [c.value for c in Category]
CHANNELS = [c.value for c in Channel]
INITIATORS = [i.value for i in InitiatedBy]
EVENT_TYPES = ["buyer_opt_out", "buyer_opt_in"]

# Every code point but surrogates: letters of other scripts, digits of other scripts,
# combining marks, control characters (U+001C-U+001F, U+0085), separators (U+2028), NUL.
chars = st.characters(blacklist_categories=("Cs",))
texts = st.one_of(
    st.text(chars, max_size=12),
    st.sampled_from(["", " ", "   ", "\t", "\n", "\x00", "\u2028", "\x85", "\x1c\x1f", "e\u0301", "ſK İß",
                     "١٢٣", "٣", "Ⅻ", "\ufeff", "\U0001f600", "null", "true", "1", "\\", '"', "</script>"]),
)


def _escape_all(s: str) -> bytes:
    """A JSON string with every character escaped (\\uXXXX, surrogate pairs beyond the BMP)."""
    out = []
    for c in s:
        code = ord(c)
        if code > 0xFFFF:
            code -= 0x10000
            out.append("\\u%04x\\u%04X" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
        else:
            out.append("\\u%04x" % code)
    return ('"' + "".join(out) + '"').encode()


@st.composite
def json_string(draw, s: str) -> bytes:
    mode = draw(st.sampled_from(["raw", "raw", "raw", "ascii", "all"]))
    if mode == "raw":
        return orjson.dumps(s)
    if mode == "ascii":
        return json.dumps(s, ensure_ascii=True).encode()
    return _escape_all(s)


@st.composite
def canonical_time(draw) -> str:
    """An RFC 3339 timestamp in the form the bulk path takes (sometimes not a real date)."""
    year = draw(st.integers(1900, 2199))
    month = draw(st.integers(1, 12))
    day = draw(st.one_of(st.integers(1, 28), st.integers(29, 31)))
    h, m, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    offset = draw(st.one_of(
        st.sampled_from(["Z", "+00:00", "-00:00", "+23:59", "-23:59", "+05:30", "-07:00"]),
        st.builds(lambda sign, hh, mm: f"{sign}{hh:02d}:{mm:02d}", st.sampled_from("+-"),
                  st.integers(0, 23), st.integers(0, 59))))
    return f"{year:04d}-{month:02d}-{day:02d}T{h:02d}:{m:02d}:{s:02d}{offset}"


# Values pydantic coerces, or rejects, that are not in the canonical form.
LAX_TIMES = [
    "2021-03-01T10:00:00", "2021-03-01T10:00:00.5Z", "2021-03-01T10:00:00.123456+00:00",
    "2021-03-01T10:00:00.1234567Z", "2021-03-01T10:00:00,5Z", "2021-03-01T10:00:00.000Z",
    "2021-03-01T10:00:00z", "2021-03-01t10:00:00Z", "2021-03-01 10:00:00Z", "2021-03-01T10:00:00+0100",
    "2021-03-01T10:00:00+01", "2021-03-01T10:00:00+24:00", "2021-03-01T10:00:00-24:00",
    "2021-03-01T10:00:00+05:30:15", "2021-03-01T10:00Z", "2021-03-01", "2021-03-01T10:00:60Z",
    "2021-03-01T24:00:00Z", "2021-02-30T10:00:00Z", "2021-02-29T10:00:00Z", "2020-02-29T10:00:00Z",
    "2021-04-31T10:00:00Z", "2021-13-01T10:00:00Z", "2021-00-10T10:00:00Z", "2021-03-00T10:00:00Z",
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00",
    "1899-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "1900-01-01T00:00:00+23:59",
    " 2021-03-01T10:00:00Z", "2021-03-01T10:00:00Z ", "２０２１-03-01T10:00:00Z", "2021-3-1T10:00:00Z",
    "20210301T100000Z", "2021-03-01T10:00:00+05:30[Europe/Paris]", "1614592800", "1614592800.5",
    "-1", "2021-03-01T10:00:00−01:00", "2021-03-01T10:00:00Z\n", "",
]
LAX_TIME_NUMBERS = [b"1614592800", b"1614592800.5", b"0", b"-1", b"1e10", b"253402300800", b"99999999999999"]
LAX_BOOLS = [b'"yes"', b'"no"', b'"true"', b'"false"', b'"True"', b'"1"', b'"0"', b'"on"', b'"off"', b'"t"',
             b'"f"', b'"y"', b'"n"', b"1", b"0", b"1.0", b"0.0", b"2", b'""', b'" true"']
WRONG_TYPES = [b"null", b"0", b"1", b"-1", b"1.5", b"1e5", b"true", b"false", b"[]", b"[1]", b'["a"]', b"{}",
               b'{"a":1}', b'{"message_id":"x"}', b'""', b'"x"', b"NaN", b"Infinity", b"-Infinity", b"1e400",
               b"-1e400", b"1E+400", b"18446744073709551616", b"-9223372036854775809", b"1e-400", b"0.0", b"-0",
               b'"\\ud800"', b'"\\udc00"', b'"a\\ud83d\\ude00b"', b'"\\uD83D"', b'"\\u0000"', b'[[[[{}]]]]']


def _field_kind(name: str) -> str:
    if name in ("sent_at", "delivered_at", "order_placed_at", "at"):
        return "time"
    if name in ("buyer_opted_out", "handmade"):
        return "bool"
    if name in ("initiated_by", "channel", "category", "type"):
        return "enum"
    if name == "attachments":
        return "list"
    return "str"


ENUMS = {"initiated_by": INITIATORS, "channel": CHANNELS, "category": CATEGORIES, "type": EVENT_TYPES}


@st.composite
def valid_value(draw, name: str) -> bytes:
    kind = _field_kind(name)
    if kind == "time":
        return draw(json_string(draw(canonical_time())))
    if kind == "bool":
        return draw(st.sampled_from([b"true", b"false"]))
    if kind == "enum":
        return draw(json_string(draw(st.sampled_from(ENUMS[name]))))
    if kind == "list":
        return draw(st.sampled_from([b"[]", b'[{"name":"a.pdf","kind":"invoice"}]']))
    text = draw(texts)
    if name in ("message_id", "order_id", "buyer_id") and not text:
        text = "x"
    return draw(json_string(text))


@st.composite
def broken_value(draw, name: str) -> bytes:
    kind = _field_kind(name)
    options = [st.sampled_from(WRONG_TYPES)]
    if kind == "time":
        options += [st.sampled_from(LAX_TIMES).flatmap(json_string), st.sampled_from(LAX_TIME_NUMBERS)]
    elif kind == "bool":
        options.append(st.sampled_from(LAX_BOOLS))
    elif kind == "enum":
        good = ENUMS[name]
        options.append(st.one_of(
            st.sampled_from(good).map(str.upper), st.sampled_from(good).map(lambda v: v + " "),
            st.sampled_from(good).map(lambda v: " " + v), st.sampled_from(good).map(str.title),
            st.sampled_from(["", "fax", "sms", "admin", "buyer_opt_out", "email", "seller", "marketing",
                             "Buyer_opt_out", "buyer-opt-out", "buyer_opt_outs"]),
        ).flatmap(json_string))
    elif kind == "list":
        options.append(st.sampled_from([b'[{"name":"a"}]', b'[{"kind":"invoice"}]', b'[{"name":"a","kind":"x"}]',
                                        b'"[]"', b"[null]", b'[{"name":1,"kind":"image"}]']))
    else:
        options.append(st.sampled_from(["", " ", "   ", "\t", "\n", "\u3000", "\x00"]).flatmap(json_string))
    return draw(st.one_of(*options))


MESSAGE_FIELDS = ["message_id", "order_id", "buyer_id", "sent_at", "marketplace", "initiated_by", "reply_to",
                  "channel", "subject", "body", "category", "buyer_opted_out", "delivered_at", "order_placed_at",
                  "language", "buyer_language", "attachments", "handmade"]
REQUIRED = {"message_id", "order_id", "buyer_id", "sent_at"}
EVENT_FIELDS = ["type", "buyer_id", "at"]
EXTRA_KEYS = ["x", "", " ", "_private", "__dict__", "__class__", "model_config", "model_fields", "Message_id",
              "message_id ", "MESSAGE_ID", "sentAt", "sent_at\u0000", "buyer_id\u0000x", "$.message_id",
              "message.id", "ü", "\U0001f600", "type", "at", "message_id", "sent_at", "order_id"]


@st.composite
def record_pairs(draw) -> list[tuple[str, bytes]]:
    """A record as (key, JSON value) pairs: valid, then possibly broken field by field."""
    if draw(st.integers(0, 4)) == 0:
        pairs = [(name, draw(valid_value(name))) for name in EVENT_FIELDS]
        fields = EVENT_FIELDS
    else:
        optional = [n for n in MESSAGE_FIELDS if n not in REQUIRED]
        chosen = draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)))
        fields = [n for n in MESSAGE_FIELDS if n in REQUIRED or n in chosen]
        pairs = [(name, draw(valid_value(name))) for name in fields]
    pairs = draw(st.permutations(pairs))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3]))):
        op = draw(st.sampled_from(["break", "break", "break", "null", "drop", "extra", "nested", "escape_key",
                                   "repeat"]))
        i = draw(st.integers(0, len(pairs) - 1)) if pairs else None
        if op == "break" and pairs:
            pairs[i] = (pairs[i][0], draw(broken_value(pairs[i][0])))
        elif op == "null" and pairs:
            pairs[i] = (pairs[i][0], b"null")
        elif op == "drop" and pairs:
            del pairs[i]
        elif op == "extra":
            key = draw(st.one_of(st.sampled_from(EXTRA_KEYS), st.text(chars, max_size=6)))
            value = draw(st.one_of(valid_value(key if key in MESSAGE_FIELDS + EVENT_FIELDS else "x"),
                                   st.sampled_from(WRONG_TYPES)))
            pairs.insert(draw(st.integers(0, len(pairs))), (key, value))
        elif op == "repeat" and pairs:
            # the key again, later, with another value (orjson keeps the last)
            key = pairs[i][0]
            value = draw(st.one_of(valid_value(key), broken_value(key)))
            pairs.insert(draw(st.integers(i + 1, len(pairs))), (key, value))
        elif op == "nested" and pairs:
            pairs[i] = (pairs[i][0], b'{"' + pairs[i][0].encode() + b'":' + pairs[i][1] + b"}")
        elif op == "escape_key" and pairs:
            pairs[i] = ("\x00escaped\x00" + pairs[i][0], pairs[i][1])
    return pairs


WS = st.sampled_from([b"", b"", b"", b" ", b"\t", b"\r", b"  \t "])


@st.composite
def object_line(draw) -> bytes:
    pairs = draw(record_pairs())
    parts = []
    for key, value in pairs:
        if key.startswith("\x00escaped\x00"):
            encoded = _escape_all(key[len("\x00escaped\x00"):])
        else:
            encoded = draw(json_string(key))
        parts.append(draw(WS) + encoded + draw(WS) + b":" + draw(WS) + value + draw(WS))
    body = b"{" + b",".join(parts) + b"}"
    return draw(WS) + body + draw(WS)


@st.composite
def hostile_line(draw) -> bytes:
    """A whole line that is not a plain record: broken JSON, a non-object, a blank."""
    line = draw(object_line())
    kind = draw(st.sampled_from([
        "truncate", "trailing_comma", "trailing_comma_array", "garbage", "two", "bom", "array", "string",
        "number", "literal", "blank", "control", "comment", "single_quotes", "nonfinite", "nul", "deep",
        "not_utf8", "nonfinite_known",
    ]))
    if kind == "truncate":
        return line[:draw(st.integers(0, max(len(line) - 1, 0)))]
    if kind == "trailing_comma":
        return line.rstrip()[:-1] + b",}" if line.rstrip().endswith(b"}") else line + b","
    if kind == "trailing_comma_array":
        return line.replace(b"[]", b"[1,]", 1) if b"[]" in line else line.replace(b":", b":[1 , ]", 1)
    if kind == "garbage":
        return line + draw(st.sampled_from([b"x", b"}", b"]", b",", b"\x0c", b"\x0b", b"\x1a", b"//"]))
    if kind == "two":
        return line + draw(st.sampled_from([b"", b" ", b"\t"])) + line
    if kind == "bom":
        return b"\xef\xbb\xbf" + line
    if kind == "array":
        return b"[" + line + b"]"
    if kind == "string":
        return draw(json_string(line.decode("utf-8", "replace")))
    if kind == "number":
        return draw(st.sampled_from([b"0", b"1.5", b"-1", b"1e400", b"NaN", b"18446744073709551616"]))
    if kind == "literal":
        return draw(st.sampled_from([b"true", b"false", b"null", b'""', b"[]", b"{}", b"[{}]"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t\r", b"\x0b", b"\x0c", b" \x0c\x0b "]))
    if kind == "control":
        # a raw control character inside a JSON string (JSON requires it escaped)
        return line.replace(b'":"', b'":"' + draw(st.sampled_from([b"\t", b"\x01", b"\x1f", b"\r"])), 1)
    if kind == "comment":
        return b"/* c */" + line
    if kind == "single_quotes":
        return line.replace(b'"', b"'")
    if kind == "nonfinite_known":
        # the same under a key the bulk path reads (not always one it checks on this record)
        key = draw(st.sampled_from(["at", "type", "subject", "reply_to", "attachments", "handmade", "sent_at"]))
        value = draw(st.sampled_from([b"NaN", b"-inf", b"1e400", b"[1e999]", b'{"a":nan}', b"[" * 1100 + b"]" * 1100]))
        return line[:-1] + b',"' + key.encode() + b'":' + value + b"}" if line.endswith(b"}") else line
    if kind == "nonfinite":
        # literals and numbers DuckDB reads and orjson rejects (or reads as a finite double)
        value = draw(st.sampled_from([b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"nan", b"-inf", b"INF",
                                      b"infinity", b"iNf", b"1e400", b"-2E+308", b"1.5e999", b"1e1000",
                                      b"1E+0400", b"1" + b"0" * 400, b"1" + b"0" * 300 + b"e10",
                                      b"1" + b"0" * 300, b"1e308", b"[1, nan]"]))
        return line[:-1] + b',"x":' + value + b"}" if line.endswith(b"}") else line
    if kind == "nul":
        return line + b"\x00"
    if kind == "deep":
        depth = draw(st.sampled_from([1000, 1023, 1024, 1025, 1100]))
        return line[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}" if line.endswith(b"}") else line
    if kind == "not_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"]))
        at = draw(st.integers(0, len(line)))
        return line[:at] + bad + line[at:]
    raise AssertionError(kind)


lines = st.one_of(object_line(), object_line(), object_line(), hostile_line())


@st.composite
def files(draw) -> bytes:
    body = draw(st.lists(lines, min_size=4, max_size=24))
    newline = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    data = newline.join(body)
    if draw(st.booleans()):
        data += newline
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


# ---- the property -------------------------------------------------------------------------

VALID = (b'{"message_id":"m1","order_id":"o1","buyer_id":"b1","sent_at":"2021-03-01T10:00:00Z",'
         b'"subject":"Your order","body":"Hello","category":"invoice","buyer_opted_out":false}')
EVENT = b'{"type":"buyer_opt_out","buyer_id":"b1","at":"2021-03-01T09:00:00-07:00"}'


def _with(field: str, value: bytes, base: bytes = VALID) -> bytes:
    """The valid message with one field set (added at the end, or replaced in place)."""
    head = b'"' + field.encode() + b'":'
    if head in base:
        start = base.index(head) + len(head)
        end = start
        depth, in_str, esc = 0, False, False
        while end < len(base):
            c = base[end:end + 1]
            if in_str:
                esc, in_str = (not esc and c == b"\\"), in_str and not (c == b'"' and not esc)
            elif c == b'"':
                in_str = True
            elif c in b"[{":
                depth += 1
            elif c in b"]}":
                if depth == 0:
                    break
                depth -= 1
            elif c == b"," and depth == 0:
                break
            end += 1
        return base[:start] + value + base[end:]
    return base[:-1] + b"," + head + value + b"}"


REGRESSIONS = [
    VALID, EVENT,
    _with("buyer_opted_out", b'"yes"'), _with("buyer_opted_out", b"1"), _with("handmade", b'"true"'),
    _with("sent_at", b"1614592800"), _with("sent_at", b'"2021-02-30T10:00:00Z"'),
    _with("sent_at", b'"2021-03-01T10:00:00"'), _with("sent_at", b'"2021-03-01T10:00:00.5Z"'),
    _with("sent_at", b'"2021-03-01T10:00:00z"'), _with("sent_at", b'"2021-03-01T10:00:00+0100"'),
    _with("sent_at", b'"2021-03-01T10:00:00-00:00"'), _with("sent_at", b'"0001-01-01T00:00:00Z"'),
    _with("sent_at", b'"9999-12-31T23:59:59Z"'), _with("delivered_at", b'"1900-01-01T00:00:00+23:59"'),
    _with("message_id", b'"   "'), _with("message_id", b'""'), _with("order_id", b"null"),
    _with("channel", b'"fax"'), _with("category", b"null"), _with("initiated_by", b"null"),
    _with("x", b'{"a":[1,{"b":null}]}'), _with("message_id", b'{"message_id":"m1"}'),
    _with("subject", b'"\\ud800"'), _with("subject", b'"\\ud83d\\ude00"'), _with("subject", b'"\\u0000"'),
    _with("x", b"1e400"), _with("x", b"NaN"), _with("x", b"-Infinity"),
    VALID[:-1] + b",}", b"\xef\xbb\xbf" + VALID, b"[" + VALID + b"]", b'"a string"', b"42", b"",
    b"   ", b"\t\r", VALID[:40], VALID + b"x",
    b'{"type":"buyer_opt_out","buyer_id":"b1","at":"2021-03-01T09:00:00Z","sent_at":"2021-03-01T09:00:00Z"}',
    b'{"type":null,"buyer_id":"b1","at":"2021-03-01T09:00:00Z"}',
    b'{"type":"buyer_opt_out","message_id":null,"buyer_id":"b1","at":"2021-03-01T09:00:00Z"}',
    b'{"type":"other","buyer_id":"b1","at":"2021-03-01T09:00:00Z"}',
    VALID[:-1] + b',"type":"buyer_opt_out"}',
    b'{"message\\u005fid":"m2","order_id":"o1","buyer_id":"b1","sent_at":"2021-03-01T10:00:00Z"}',
    # repeated keys: DuckDB reads the first value, orjson the last
    _with("buyer_opted_out", b'true,"buyer_opted_out":"maybe"'), _with("channel", b'"email","channel":"fax"'),
    VALID[:-1] + b',"sent_at":"2021-03-01T10:00:00"}', VALID[:-1] + b',"message\\u005fid":""}',
    _with("subject", b'"a","subject":"b"'),
]


def _examples(test):
    for i in range(0, len(REGRESSIONS), 8):
        test = example(b"\n".join(REGRESSIONS[i:i + 8]) + b"\n", NOT_AFTER)(test)
    return example(b"\n".join(REGRESSIONS), 1.6e9)(test)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=files(), not_after=st.sampled_from(NOT_AFTERS))
@_examples
def test_bulk_path_agrees_with_pydantic(data, not_after):
    check_file(data, not_after)


# ---- where DuckDB's reader and orjson disagree: the line takes the per-line path -------------

_M = b'{"message_id":"m1","order_id":"o1","buyer_id":"b1","sent_at":"2021-03-01T10:00:00Z"'

PARSER_DISAGREEMENTS = {
    # Non-finite literals DuckDB accepts in any letter case; orjson rejects the line.
    "non-finite spellings": [_M + b',"x":nan}', _M + b',"x":-nan}', _M + b',"x":inf}', _M + b',"x":-inf}',
                             _M + b',"x":INF}', _M + b',"x":NAN}', _M + b',"x":infinity}',
                             _M + b', "x": [1, -Inf]}'],
    # Numbers beyond the double range (orjson: "number is infinity when parsed as double").
    "huge numbers": [_M + b',"x":1e1000}', _M + b',"x":1E+0400}', _M + b',"x":1' + b"0" * 400 + b"}",
                     _M + b',"x":1' + b"0" * 300 + b"e10}"],
    # orjson stops at 1024 levels of nesting; DuckDB reads deeper documents.
    "deep nesting": [_M + b',"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
                     _M + b',"x":' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"}"],
    # A line that is not UTF-8 is a malformed JSON reject in the streaming reader, not a blank.
    "not UTF-8": [_M + b',"subject":"\xff"}', b"\xff", b"\xc3(", _M + b',"subject":"\xed\xa0\x80"}'],
    # Canonical-looking lines with something more: each goes to the models, which answer.
    "not canonical": [_M + b',"attachments":[{"name":"a","kind":"invoice","kind":"x"}]}',
                      _M + b',"attachments":[{"name":"a","kind":"invoice"},]}',
                      _M + b',"attachments":[{"name":"a","kind":"invoice"}] }',
                      _M + b',"subject":"\\u00e9\\/"}', _M + b',"message\\u005fid":"m2"}',
                      _M + b',"x":1,}', _M + b'}\r', b"\xef\xbb\xbf" + _M + b"}"],
    # Keys the bulk path reads but does not check on this kind of record (an event's fields on a
    # message, a message's on an event): their values still decide whether orjson reads the line.
    "unchecked keys": [_M + b',"at":NaN}', _M + b',"at":1e400}', _M + b',"type":-Infinity}',
                       _M + b',"at":' + b"[" * 1100 + b"]" * 1100 + b"}", _M + b',"at":[1,]}',
                       EVENT[:-1] + b',"subject":nan}', EVENT[:-1] + b',"reply_to":[1e999]}',
                       EVENT[:-1] + b',"body":{"a":inf}}', EVENT[:-1] + b',"attachments":[NaN]}'],
}


@pytest.mark.parametrize("line", [
    pytest.param(line, id=f"{case}-{i}")
    for case, case_lines in PARSER_DISAGREEMENTS.items() for i, line in enumerate(case_lines)
])
def test_parser_disagreement(line):
    check_file(_M + b"}\n" + line + b"\n" + EVENT + b"\n")
    check_file(line)  # last line, no terminator


def test_regressions_one_per_file():
    """Each regression line alone (a file of one line has no neighbours to hide behind)."""
    for line in REGRESSIONS:
        check_file(line + b"\n")


@pytest.mark.parametrize("data", [
    b'[{"message_id": "m1",\n  "order_id": "o1"}]\n',  # a JSON array over several lines: refused
    b'{\n  "message_id": "m1", "order_id": "o1", "buyer_id": "b1",\n  "sent_at": "2021-03-01T10:00:00Z"\n}\n',
    b'{"message_id": "m1"}\r{"message_id": "m2"}\r',  # CR-only line ends: refused
    b'[1,\n{"message_id": "m1"}\n',
])
def test_files_the_line_reader_judges_whole_are_read_alike(data):
    check_file(data)
