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
import mmap
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import polars as pl
import pyarrow as pa

from ..model import AttachmentKind, BuyerEvent, Message

# A timestamp the model accepts and whose isoformat() is the text itself (with "Z" and
# "-00:00" read as "+00:00"): seconds precision, a colon in the offset, a sane year.
_CANONICAL_TIME = r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
# Where DuckDB's JSON reader accepts a line orjson (the per-line path) rejects, or might read it
# differently: surrogate escapes, numbers past the double range (a 3-digit exponent, 300 digits),
# trailing commas, NaN and Infinity in any letter case, a byte-order mark. Nesting deeper than
# orjson's limit is counted apart. Only lines that are not in canonical form are searched.
_PARSER_DOUBT = (r"\\u[dD][89a-fA-F]|[0-9.][eE][+-]?[0-9]{3}|[0-9]{300}|,\s*[}\]]|[:\[,]\s*-?(?i:nan|inf)"
                 r"|^\x{FEFF}")
_MAX_DEPTH = 1000  # orjson refuses documents nested deeper than 1024
# Attachments as the JSON writer prints a list the model accepts as is: objects of exactly
# a plain string name and a known kind (other lists take the per-line path).
_KINDS = "|".join(k.value for k in AttachmentKind)
_ATTACHMENT = rf'\{{(?:"name":"[^"\\]*","kind":"(?:{_KINDS})"|"kind":"(?:{_KINDS})","name":"[^"\\]*")\}}'
_CANONICAL_ATTACHMENTS = rf"^\[(?:{_ATTACHMENT}(?:,{_ATTACHMENT})*)?\]$"
_CHUNK = 32768  # lines per Arrow chunk: DuckDB scans chunks in parallel


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
    max_length: Optional[int] = None


def _field_kinds(model) -> dict[str, FieldKind]:
    kinds = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        optional = False
        args = typing.get_args(ann)
        if typing.get_origin(ann) is typing.Union and type(None) in args:
            optional = True
            ann = next(a for a in args if a is not type(None))
        min_length, max_length = 0, None
        for meta in info.metadata:
            min_length = max(min_length, getattr(meta, "min_length", 0) or 0)
            max_length = getattr(meta, "max_length", None) or max_length
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
        kinds[name] = FieldKind(name, kind, info.is_required(), optional, default, min_length, values, max_length)
    return kinds


MESSAGE_FIELDS = _field_kinds(Message)
EVENT_FIELDS = _field_kinds(BuyerEvent)
# Every key the bulk path reads: the models' fields (the event's "type" and "at" included).
KEYS = tuple(dict.fromkeys([*MESSAGE_FIELDS, *EVENT_FIELDS]))


def _positions(data: np.ndarray, byte: int) -> np.ndarray:
    """Offsets of every `byte` in data, a block at a time (a whole-file mask would be a
    second file-sized allocation to fault in)."""
    step = 1 << 20
    found = [np.flatnonzero(data[i:i + step] == byte) + i for i in range(0, len(data), step)]
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def read_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The file's bytes and the start offset of every line (and the end), as the
    binary line iterator splits them: on b"\\n", the terminator kept with its line.

    The bytes are the file mapped read-only: the page cache is read in place, not copied."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = (np.frombuffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8) if size
                else np.empty(0, dtype=np.uint8))
    ends = _positions(data, 10) + 1
    if len(data) and (not len(ends) or ends[-1] != len(data)):
        ends = np.append(ends, len(data))
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends
    return data, offsets


def line_bytes(data: np.ndarray, offsets: np.ndarray, index: int) -> bytes:
    return data[offsets[index]:offsets[index + 1]].tobytes()


def _not_utf8(binary: pa.Array, start: int, found: list) -> None:
    """Indices (from `start`) of the lines of `binary` that are not UTF-8, by halving."""
    try:
        binary.cast(pa.large_string())
        return
    except pa.ArrowInvalid:
        pass
    if len(binary) == 1:
        found.append(start)
        return
    half = len(binary) // 2
    _not_utf8(binary.slice(0, half), start, found)
    _not_utf8(binary.slice(half), start + half, found)


def _as_strings(data: np.ndarray, offsets: np.ndarray) -> tuple[pa.Array, pa.ChunkedArray, np.ndarray]:
    """Lines as Arrow binaries and strings (zero copy; the strings in chunks) and the indices
    of the lines that are not UTF-8 (emptied here; the per-line path reports them as orjson does)."""
    n = len(offsets) - 1
    binary = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n,
                                              [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    chunks, bad = [], []
    for start in range(0, n, _CHUNK):
        part = binary.slice(start, _CHUNK)
        try:
            chunks.append(part.cast(pa.large_string()))
            continue
        except pa.ArrowInvalid:
            pass
        found: list = []
        _not_utf8(part, start, found)
        bad += found
        mask = np.zeros(len(part), dtype=bool)
        mask[np.array(found) - start] = True
        chunks.append(pa.compute.if_else(pa.array(mask), pa.scalar(b"", pa.large_binary()), part)
                      .cast(pa.large_string()))
    if not chunks:
        chunks = [pa.array([], pa.large_string())]
    return binary, pa.chunked_array(chunks), np.array(bad, dtype=np.int64)


def _path(key: str) -> str:
    return "'$.\"" + key.replace("'", "''") + "\"'"


# JSON types of a value (the `t_<key>` columns; null when the key is absent).
STRING, BOOLEAN, NULL, ARRAY, OTHER = 1, 2, 3, 4, 0
# Characters a JSON string holds only escaped; with no \u escape, as \" \\ \b \f \n \r \t.
_SHORT_ESCAPED = r'["\\\x08\x0c\n\r\t]'
_BATCH = 1 << 17  # lines decoded at a time: intermediate results stay small and their memory is reused


def _query(keys: tuple[str, ...]) -> str:
    """Per line: `ok` (DuckDB parses it), `blank` and per key `t<i>` (its JSON type) and `s<i>`
    (a string unescaped, anything else as printed)."""
    paths = "[" + ", ".join(_path(k) for k in keys) + "]"
    cols = []
    for i in range(len(keys)):
        t = f"t[{i + 1}]"
        cols.append(f"""CASE WHEN {t} IS NULL THEN NULL WHEN {t} = 'VARCHAR' THEN {STRING}
                        WHEN {t} = 'BOOLEAN' THEN {BOOLEAN} WHEN {t} = 'NULL' THEN {NULL}
                        WHEN {t} = 'ARRAY' THEN {ARRAY} ELSE {OTHER} END::UTINYINT AS t{i}""")
        cols.append(f"s[{i + 1}] AS s{i}")
    # Two passes over each parsed line, each reading every key at once.
    return f"""
        SELECT ok, CASE WHEN ok THEN false ELSE trim(line, ' \t\n\r\x0b\x0c') = '' END AS blank,
               {", ".join(cols)}
        FROM (SELECT line, ok, CASE WHEN ok THEN json_type(line, {paths}) END AS t,
                     CASE WHEN ok THEN json_extract_string(line, {paths}) END AS s
              FROM (SELECT line, json_valid(line) AS ok FROM lines_tbl))
    """


def _written(keys: tuple[str, ...]) -> pl.Expr:
    """The length of a line holding just these keys and their values, written without
    whitespace or \\u escapes; null when a value is not one the bulk path reads as written
    (a number, an object, a list other than canonical attachments: orjson may disagree)."""
    members = []
    for i, key in enumerate(keys):
        t, s = pl.col(f"t{i}"), pl.col(f"s{i}")
        value = (pl.when(t == STRING).then(s.str.len_bytes() + 2 + s.str.count_matches(_SHORT_ESCAPED))
                 .when(t == BOOLEAN).then(s.str.len_bytes())
                 .when(t == NULL).then(4))
        if key == "attachments":
            value = value.when((t == ARRAY) & s.str.contains(_CANONICAL_ATTACHMENTS)).then(s.str.len_bytes())
        value = value.otherwise(None)
        members.append(pl.when(t.is_null()).then(0).otherwise(value.cast(pl.Int64) + len(key.encode()) + 4))
    return pl.max_horizontal(2, 1 + pl.sum_horizontal(members, ignore_nulls=False))


def _batches(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
    """The reader's rows in tables of `size` rows (the last smaller; one table, maybe empty)."""
    pending, count, sent = [], 0, False
    for batch in reader:
        pending.append(batch)
        count += len(batch)
        if count >= size:
            yield pa.Table.from_batches(pending)
            pending, count, sent = [], 0, True
    if pending or not sent:
        yield pa.Table.from_batches(pending, schema=reader.schema)


def decode(data: np.ndarray, offsets: np.ndarray, extra_keys: tuple[str, ...] = ()) -> pl.DataFrame:
    """One row per line: `index` (0-based), `blank`, `parsed` (a JSON object the bulk path
    may trust) and, per key, `t_<key>` (its JSON type, see STRING..OTHER, null when absent) and
    `s_<key>` (its value as text: a string unescaped, a bool as true/false, a list as JSON)."""
    return pl.concat(list(decode_batches(data, offsets, extra_keys)))


def decode_batches(data: np.ndarray, offsets: np.ndarray, extra_keys: tuple[str, ...] = ()) -> Iterator[pl.DataFrame]:
    """decode(), a batch of lines at a time (at least one batch, maybe empty)."""
    import duckdb

    n = len(offsets) - 1
    binary, lines, not_utf8 = _as_strings(data, offsets)
    keys = tuple(dict.fromkeys([*KEYS, *extra_keys]))
    sql = _query(keys)
    # A line is canonical when it is nothing but its keys and their values, with no \u or \/
    # escape, and every value a string, bool, null or canonical attachments: then its length is
    # `written`, and any whitespace, repeated key, unknown key, trailing comma, comment or
    # byte-order mark would add to it; there is no number, NaN or nesting orjson could read
    # differently.
    starts, ends = offsets[:-1], offsets[1:]
    body = ends - starts
    nonempty = body > 0
    body[nonempty] -= data[ends[nonempty] - 1] == 10
    cr = body > 0
    body[cr] -= data[starts[cr] + body[cr] - 1] == 13
    brace = np.zeros(n, dtype=bool)
    brace[nonempty] = data[starts[nonempty]] == 123
    backslash = _positions(data[:-1], 92)
    after = data[backslash + 1]
    odd = backslash[(after == ord("u")) | (after == ord("/"))]
    escaped = np.zeros(n, dtype=bool)
    escaped[np.searchsorted(offsets, odd, side="right") - 1] = True
    length = np.where(brace & ~escaped, body, -1)
    utf8 = np.ones(n, dtype=bool)
    utf8[not_utf8] = False
    con = duckdb.connect(config={"threads": 2, "preserve_insertion_order": True})
    side = con.cursor()  # the other lines' checks, while the main result streams
    try:
        con.register("lines_tbl", pa.table({"line": lines}))
        # One statement over the whole file, read a batch at a time as DuckDB produces it.
        reader = con.sql(sql).to_arrow_reader(_BATCH)
        first = 0
        for record_batch in _batches(reader, _BATCH):
            out = pl.from_arrow(record_batch)
            last = first + len(out)
            canonical = (out["ok"] & (out.select(_written(keys)).to_series() == pl.Series(length[first:last])))
            canonical = canonical.fill_null(False)
            # Other JSON lines: an object, each key once (DuckDB reads a repeated key's first value,
            # orjson its last), nothing the two parsers disagree on.
            other_index = (out["ok"] & ~canonical).arg_true().to_numpy()
            parsed = canonical.to_numpy().copy()
            if len(other_index):
                subset = binary.take(pa.array(other_index + first)).cast(pa.large_string())
                side.register("other_tbl", pa.table({"line": subset}))
                ok = side.sql("""
                    SELECT json_type(line) = 'OBJECT' AND len(json_keys(line)) = len(list_distinct(json_keys(line)))
                    FROM other_tbl""").to_arrow_table().column(0).to_numpy(zero_copy_only=False)
                side.unregister("other_tbl")
                text = pl.Series(subset)
                doubt = (text.str.contains(_PARSER_DOUBT) | (text.str.count_matches(r"[\[{]") > _MAX_DEPTH))
                parsed[other_index] = ok & ~doubt.to_numpy()
            # A line that is not UTF-8 was emptied: not blank, and for the per-line path.
            valid = utf8[first:last]
            yield out.select(
                pl.int_range(first, last, dtype=pl.UInt32).alias("index"),
                pl.Series("blank", out["blank"].to_numpy() & valid), pl.Series("parsed", parsed & valid),
                *(pl.col(f"t{i}").alias(f"t_{k}") for i, k in enumerate(keys)),
                *(pl.col(f"s{i}").alias(f"s_{k}") for i, k in enumerate(keys)),
            )
            first = last
    finally:
        side.close()
        con.close()


def _field_ok(kind: FieldKind, prefix: str = "") -> pl.Expr:
    """Whether the bulk path can take this field's value as the model would."""
    t, s = pl.col(f"t_{kind.name}"), pl.col(f"s_{kind.name}")
    absent = t.is_null()
    null = t == NULL
    if kind.kind == "str":
        ok = (t == STRING) & (s.str.len_chars() >= kind.min_length)
        if kind.max_length is not None:
            ok = ok & (s.str.len_chars() <= kind.max_length)
    elif kind.kind == "enum":
        ok = (t == STRING) & s.is_in(list(kind.values))
    elif kind.kind == "bool":
        ok = t == BOOLEAN
    elif kind.kind == "time":
        ok = (t == STRING) & s.str.contains(_CANONICAL_TIME)
    else:  # lists (attachments)
        ok = (t == ARRAY) & s.str.contains(_CANONICAL_ATTACHMENTS)
    if kind.optional:
        ok = ok | null
    if kind.required:
        return ok & ~absent
    return ok | absent


def parse_time(column: str) -> pl.Expr:
    """Epoch microseconds of a canonical timestamp (see _CANONICAL_TIME)."""
    # A canonical timestamp has "Z" only at its end (others are not taken in bulk anyway).
    text = pl.col(column).str.replace("Z", "+00:00", literal=True)
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
        (pl.col(f"t_{n}") == STRING) & pl.col(f"us_{n}").is_null() for n in times])
    return out.with_columns(fast=pl.when(bad_time).then(None).otherwise(pl.col("fast")))


__all__ = ["STRING", "BOOLEAN", "NULL", "ARRAY", "OTHER", "decode", "decode_batches", "classify_rows", "read_lines", "line_bytes",
           "MESSAGE_FIELDS", "EVENT_FIELDS",
           "parse_time", "iso_text", "KEYS"]
