"""Bulk decoding and validation: a JSON Lines file → typed columns, one pass in native code.

The pydantic models in `engine.model` stay the one definition of a record. This
module never re-implements their rules; it only recognises, in bulk, the rows
whose every field is already in its canonical form (a JSON string where the
model wants a string, `true`/`false` where it wants a bool, an RFC 3339
timestamp with an offset, an enumeration's own value, an absent optional
field). For such a row the model's answer is known without asking it: the
value is the text itself. Every other row (about one in twenty in a real
export: a lax value pydantic coerces, a wrong type, invalid JSON, a record
that is not an object) goes to the model itself, line by line, so rejects
name exactly the field and reason `check` names, and coerced values are
pydantic's own. The equivalence tests
(tests/audit/test_batch_equivalence.py) compare the rejects of both paths.

The file is read once into memory as an Arrow string array (no Python object
per line); DuckDB parses each line once (yyjson) and extracts the record's
fields as JSON values.
"""
from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ..model import BuyerEvent, Message

# A timestamp the model accepts and whose isoformat() is the text itself (with "Z" and
# "-00:00" read as "+00:00"): seconds precision, a colon in the offset, a sane year.
_CANONICAL_TIME = r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
# Lines the JSON parsers might read differently from orjson (which the per-line path uses):
# surrogate escapes, numbers past the double range, trailing commas, NaN and Infinity (which
# DuckDB's parser accepts), a byte-order mark. They take the per-line path.
_PARSER_DOUBT = r"\\u[dD][89a-fA-F]|[0-9][eE]\+?[0-9]{3}[,}\]\s]|,\s*[}\]]|[:\[,]\s*-?(?:NaN|Inf)"


@dataclass(frozen=True)
class FieldKind:
    """How one record field is recognised in bulk (derived from the pydantic model)."""

    name: str
    kind: str  # "str", "time", "bool", "enum", "list"
    required: bool
    optional: bool  # accepts null
    default: object
    min_length: int = 0
    values: tuple[str, ...] = ()


def _field_kinds(model) -> dict[str, FieldKind]:
    kinds = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        optional = False
        args = typing.get_args(ann)
        if typing.get_origin(ann) is typing.Union and type(None) in args:
            optional = True
            ann = next(a for a in args if a is not type(None))
        min_length = 0
        for meta in info.metadata:
            min_length = max(min_length, getattr(meta, "min_length", 0) or 0)
        if ann is str:
            kind, values = "str", ()
        elif ann is bool:
            kind, values = "bool", ()
        elif isinstance(ann, type) and issubclass(ann, enum.Enum):
            kind, values = "enum", tuple(m.value for m in ann)
        elif typing.get_origin(ann) is typing.Literal:
            kind, values = "enum", tuple(typing.get_args(ann))
        elif typing.get_origin(ann) is list:
            kind, values = "list", ()
        else:
            kind, values = "time", ()  # AwareDatetime: the only other annotation the models use
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        kinds[name] = FieldKind(name, kind, info.is_required(), optional, default, min_length, values)
    return kinds


MESSAGE_FIELDS = _field_kinds(Message)
EVENT_FIELDS = _field_kinds(BuyerEvent)
# Every key the bulk path reads: the models' fields (the event's "type" and "at" included).
KEYS = tuple(dict.fromkeys([*MESSAGE_FIELDS, *EVENT_FIELDS]))


def read_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The file's bytes and the start offset of every line (and the end), as the
    binary line iterator splits them: on b"\\n", the terminator kept with its line."""
    data = np.fromfile(path, dtype=np.uint8)
    ends = np.flatnonzero(data == 10) + 1
    if len(data) and (not len(ends) or ends[-1] != len(data)):
        ends = np.append(ends, len(data))
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends
    return data, offsets


def line_bytes(data: np.ndarray, offsets: np.ndarray, index: int) -> bytes:
    return data[offsets[index]:offsets[index + 1]].tobytes()


def _as_strings(data: np.ndarray, offsets: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Lines as an Arrow string array (zero copy) and the indices of lines that are not UTF-8
    (emptied here; the per-line path reports them as orjson does)."""
    binary = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1,
                                              [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        return binary.cast(pa.large_string()), np.empty(0, dtype=np.int64)
    except pa.ArrowInvalid:
        pass
    bad = []
    for i in range(len(offsets) - 1):
        try:
            line_bytes(data, offsets, i).decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    mask = np.zeros(len(offsets) - 1, dtype=bool)
    mask[bad] = True
    cleaned = pa.compute.if_else(pa.array(mask), pa.scalar(b"", pa.large_binary()), binary)
    return cleaned.cast(pa.large_string()), np.array(bad, dtype=np.int64)


def decode(data: np.ndarray, offsets: np.ndarray, extra_keys: tuple[str, ...] = ()) -> pl.DataFrame:
    """One row per line: `index` (0-based), `blank`, `parsed` (a JSON object the bulk path
    may trust) and, per key, `t_<key>` (its JSON type, null when absent) and `s_<key>`
    (its value as text: a string unescaped, a bool as true/false)."""
    import duckdb

    lines, not_utf8 = _as_strings(data, offsets)
    keys = tuple(dict.fromkeys([*KEYS, *extra_keys]))
    paths = "[" + ", ".join("'$." + k.replace("'", "''") + "'" for k in keys) + "]"
    con = duckdb.connect(config={"threads": 2})
    con.register("lines_tbl", pa.table({"line": lines}))
    # Native passes over each line: the JSON types of the keys, their values as text. A line
    # that repeats a key takes the per-line path: DuckDB reads the first value, orjson the last.
    sql = f"""
        SELECT trim(line, ' \t\n\r\x0b\x0c') = '' AS blank,
               ok AND len(keys) = len(list_distinct(keys)) AS parsed,
               CASE WHEN ok THEN json_type(line, {paths}) END AS types,
               CASE WHEN ok THEN json_extract_string(line, {paths}) END AS texts
        FROM (SELECT line, ok, CASE WHEN ok THEN json_keys(line) END AS keys
              FROM (SELECT line, CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END AS ok
                    FROM lines_tbl))
    """
    out = pl.from_arrow(con.sql(sql).to_arrow_table())
    con.close()
    doubt = pl.from_arrow(lines).str.contains(_PARSER_DOUBT)
    if len(not_utf8):
        doubt = doubt | pl.Series(np.isin(np.arange(len(doubt)), not_utf8))
    if len(offsets) > 1 and data[:3].tobytes() == b"\xef\xbb\xbf":
        doubt[0] = True
    types, texts = pl.col("types"), pl.col("texts")
    return out.with_row_index("index").with_columns(
        parsed=pl.col("parsed") & ~doubt,
        **{f"t_{k}": types.list.get(i) for i, k in enumerate(keys)},
        **{f"s_{k}": texts.list.get(i) for i, k in enumerate(keys)},
    ).drop("types", "texts")


def _field_ok(kind: FieldKind, prefix: str = "") -> pl.Expr:
    """Whether the bulk path can take this field's value as the model would."""
    t, s = pl.col(f"t_{kind.name}"), pl.col(f"s_{kind.name}")
    absent = t.is_null()
    null = t == "NULL"
    if kind.kind == "str":
        ok = (t == "VARCHAR") & (s.str.len_chars() >= kind.min_length)
    elif kind.kind == "enum":
        ok = (t == "VARCHAR") & s.is_in(list(kind.values))
    elif kind.kind == "bool":
        ok = t == "BOOLEAN"
    elif kind.kind == "time":
        ok = (t == "VARCHAR") & s.str.contains(_CANONICAL_TIME)
    else:  # lists (attachments): only the absent default is taken in bulk
        ok = pl.lit(False)
    if kind.optional:
        ok = ok | null
    if kind.required:
        return ok & ~absent
    return ok | absent


def parse_time(column: str) -> pl.Expr:
    """Epoch microseconds of a canonical timestamp (see _CANONICAL_TIME)."""
    text = pl.col(column).str.replace(r"Z$", "+00:00")
    return text.str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%:z", strict=False).dt.epoch("us")


def iso_text(column: str) -> pl.Expr:
    """datetime.isoformat() of a canonical timestamp: the text, with UTC written +00:00."""
    return pl.col(column).str.replace(r"(Z|-00:00)$", "+00:00")


def classify_rows(raw: pl.DataFrame) -> pl.DataFrame:
    """Adds `fast` ('message', 'event' or null: the row needs the model itself)."""
    msg_ok = pl.all_horizontal([_field_ok(k) for k in MESSAGE_FIELDS.values()])
    ev_ok = pl.all_horizontal([_field_ok(k) for k in EVENT_FIELDS.values()])
    has_mid = pl.col("t_message_id").is_not_null()
    has_type = pl.col("t_type").is_not_null()
    # A record is an event when it has a type and no message_id (engine.io.to_record).
    is_event = has_type & ~has_mid
    # Messages with a "type" key keep it as an extra field; the bulk path reads it only on events.
    kind = (pl.when(~pl.col("parsed")).then(None)
            .when(is_event & ev_ok).then(pl.lit("event"))
            .when(~is_event & msg_ok).then(pl.lit("message"))
            .otherwise(None))
    out = raw.with_columns(fast=kind)
    # Timestamps must also be real instants (2021-02-30 matches the pattern, not the calendar).
    times = [n for n, k in MESSAGE_FIELDS.items() if k.kind == "time"] + \
            [n for n, k in EVENT_FIELDS.items() if k.kind == "time"]
    times = list(dict.fromkeys(times))
    out = out.with_columns([parse_time(f"s_{n}").alias(f"us_{n}") for n in times])
    bad_time = pl.any_horizontal([
        (pl.col(f"t_{n}") == "VARCHAR") & pl.col(f"us_{n}").is_null() for n in times])
    return out.with_columns(fast=pl.when(bad_time).then(None).otherwise(pl.col("fast")))


__all__ = ["decode", "classify_rows", "read_lines", "line_bytes", "MESSAGE_FIELDS", "EVENT_FIELDS",
           "parse_time", "iso_text", "KEYS"]
