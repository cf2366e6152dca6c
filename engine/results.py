"""The per-message results of `audit` (`--results`): JSON Lines, CSV or Parquet, by suffix.

Both audit engines hand over the same result JSON lines (one object per judged
message, see `model.verdict_json`); JSON Lines are written as they are, CSV
keeps `policies` and `findings` as JSON text, and Parquet is typed, its schema
derived from the record models (`ResultLine`):

    message_id          string
    evaluated_at        timestamp[us, tz=UTC]    the instant judged
    evaluated_at_local  timestamp[us]            the same instant on the wall clock of the
                                                 offset written in the JSON line
    outcome             string
    policies            list<struct<policy, version>>
    findings            list<struct<rule, policy, version, outcome, reason,
                                    sources: list<string>, evidence: map<string, string>>>
    out_of_order        bool

A Parquet file is built a chunk of `CHUNK` lines at a time by DuckDB's JSON reader
(no Python object per row) and written one row group per chunk, so the streaming
engine's line iterator and the batch engine's column give the same file.

CSV has a `rules` column beside `findings`: the rules with findings as
policy/rule, ';'-separated, for a spreadsheet filter without parsing JSON.
"""
from __future__ import annotations

import csv
import datetime as dt
import typing
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import orjson
from pydantic import BaseModel

from .io import atomic_output, csv_cell
from .model import Verdict

# The suffixes --results can be written in.
RESULT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet")
RESULT_COLUMNS = ("message_id", "evaluated_at", "outcome", "policies", "findings", "out_of_order")
CSV_COLUMNS = ("message_id", "evaluated_at", "outcome", "policies", "findings", "rules", "out_of_order")
CHUNK = 65536  # lines per conversion and per Parquet row group
BATCH = 16384  # lines per Arrow batch handed to DuckDB

# The instant alone loses what the line said about local time; an auditor asking "which
# messages went out on 24 December in the marketplace" wants the wall clock without offset
# arithmetic, and the offset is evaluated_at_local - evaluated_at when needed.
LOCAL_COLUMN = "evaluated_at_local"


class ResultLine(Verdict):
    """A result line: the verdict plus the audit's flag for a message judged after a later one
    of the same buyer (absent from the JSON line when false)."""

    out_of_order: bool = False


# ---- the schema, from the models ---------------------------------------------------------


def _arrow_type(annotation):
    import pyarrow as pa

    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        # "element" is the name Parquet gives list items, so a file read back has this schema.
        return pa.list_(pa.field("element", _arrow_type(item), nullable=False))
    if origin is dict:
        key, value = typing.get_args(annotation)
        # A map rather than a struct (the keys are the facts a policy quotes, an open set) or a
        # list of key/value structs: DuckDB reads it as MAP (evidence['phone_number']), polars as
        # the list of {key, value} it uses for maps anyway, pandas as (key, value) pairs.
        return pa.map_(_arrow_type(key), pa.field("value", _arrow_type(value), nullable=False))
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return pa.struct(_arrow_fields(annotation))
        if issubclass(annotation, Enum) or annotation is str:
            return pa.string()  # Parquet dictionary-encodes it; a plain string reads the same everywhere
        if annotation is bool:
            return pa.bool_()
        if annotation is dt.datetime:
            return pa.timestamp("us", tz="UTC")
    raise TypeError(f"no Parquet type for {annotation!r}")


def _arrow_fields(model: type[BaseModel]) -> list:
    import pyarrow as pa

    fields = []
    for name, info in model.model_fields.items():
        fields.append(pa.field(name, _arrow_type(info.annotation), nullable=False))
        if model is ResultLine and name == "evaluated_at":
            fields.append(pa.field(LOCAL_COLUMN, pa.timestamp("us"), nullable=False))
    return fields


@lru_cache(maxsize=None)
def parquet_schema():
    """The Parquet results schema (every field required: a line lacking one is an error)."""
    import pyarrow as pa

    return pa.schema(_arrow_fields(ResultLine))


# ---- the DuckDB query that types a chunk of lines, from the same models ------------------------


def _duckdb_type(annotation):
    origin = typing.get_origin(annotation)
    if origin is list:
        return [_duckdb_type(typing.get_args(annotation)[0])]
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"MAP({_duckdb_type(key)}, {_duckdb_type(value)})"
    if issubclass(annotation, BaseModel):
        return {name: _duckdb_type(info.annotation) for name, info in annotation.model_fields.items()}
    if annotation is bool:
        return "BOOLEAN"
    return "VARCHAR"  # strings, enumerations, and the timestamp (typed by the query)


def _default_sql(info, annotation) -> str:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == {} and typing.get_origin(annotation) is dict:
        return f"CAST(MAP {{}} AS {_duckdb_type(annotation)})"
    raise TypeError(f"no SQL literal for the default {value!r}")


def _lambda(var: str, body: str) -> str:
    import duckdb

    major, minor = (int(x) for x in duckdb.__version__.split(".")[:2])
    # DuckDB 1.3 introduced `lambda x: ...` and deprecated `x -> ...`, which 2.x refuses by default.
    return f"lambda {var}: {body}" if (major, minor) >= (1, 3) else f"{var} -> {body}"


def _value_sql(expr: str, annotation, depth: int = 0) -> str:
    """`expr` (json_transform's value) with the model's defaults filled in where a key is optional."""
    origin = typing.get_origin(annotation)
    if origin is list:
        item = typing.get_args(annotation)[0]
        var = f"x{depth}"
        inner = _value_sql(var, item, depth + 1)
        return expr if inner == var else f"list_transform({expr}, {_lambda(var, inner)})"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        parts = [f'"{name}" := {_field_sql(f"{expr}.{_q(name)}", info, depth)}'
                 for name, info in annotation.model_fields.items()]
        plain = all(p == f'"{n}" := {expr}.{_q(n)}' for p, n in zip(parts, annotation.model_fields))
        return expr if plain else f"struct_pack({', '.join(parts)})"
    return expr


def _field_sql(expr: str, info, depth: int) -> str:
    value = _value_sql(expr, info.annotation, depth)
    return value if info.is_required() else f"coalesce({value}, {_default_sql(info, info.annotation)})"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=None)
def _query() -> str:
    shape = orjson.dumps(_duckdb_type(ResultLine)).decode().replace("'", "''")
    cols = []
    for name, info in ResultLine.model_fields.items():
        value = _field_sql(f"r.{_q(name)}", info, 0)
        if info.annotation is dt.datetime:
            # The line's ISO 8601 text: TIMESTAMPTZ applies its offset (the instant), TIMESTAMP
            # keeps the wall clock as written.
            cols.append(f"CAST({value} AS TIMESTAMPTZ) AS {_q(name)}")
            cols.append(f"CAST({value} AS TIMESTAMP) AS {_q(LOCAL_COLUMN)}")
        else:
            cols.append(f"{value} AS {_q(name)}")
    return f"SELECT {', '.join(cols)} FROM (SELECT json_transform(line, '{shape}') AS r FROM lines)"


# ---- conversion --------------------------------------------------------------------------------


def _typed(con, lines):
    """A pyarrow table in `parquet_schema()` from a pyarrow string array of result lines."""
    import pyarrow as pa

    # DuckDB scans an Arrow table a batch per thread: one batch would be one thread.
    batches = pa.table({"line": lines}).to_batches(max_chunksize=BATCH)
    con.register("lines", pa.Table.from_batches(batches, schema=pa.schema([("line", lines.type)])))
    try:
        rel = con.sql(_query())
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    finally:
        con.unregister("lines")
    return table.cast(parquet_schema())  # also refuses a null where the model requires a value


def _connect():
    import duckdb

    con = duckdb.connect()
    # Lines always carry an offset; a zone is set so nothing depends on the machine's.
    con.execute("SET TimeZone = 'UTC'")
    return con


def _as_arrow(lines):
    import pyarrow as pa

    if hasattr(lines, "to_arrow") and not isinstance(lines, (pa.Array, pa.ChunkedArray)):
        lines = lines.to_arrow()  # polars
    if isinstance(lines, pa.Array):
        lines = pa.chunked_array([lines])
    return lines


class _ParquetSink:
    """Chunks in, row groups out; a chunk is converted (DuckDB, GIL released) in a thread while
    the previous one is written and the next one gathered."""

    def __init__(self, sink):
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow.parquet as pq

        self.con = _connect()
        self.writer = pq.ParquetWriter(sink, parquet_schema())
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = None

    def write(self, lines) -> None:
        converting = self.pool.submit(_typed, self.con, lines)
        self._drain()
        self.pending = converting

    def _drain(self) -> None:
        if self.pending is not None:
            table, self.pending = self.pending.result(), None
            self.writer.write_table(table)

    def finish(self) -> None:
        self._drain()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.writer.close()
        self.con.close()


# ---- writers -----------------------------------------------------------------------------------


def rules_cell(findings: list[dict]) -> str:
    """The CSV `rules` cell: each finding's policy/rule once, in finding order, ';'-separated."""
    return ";".join(dict.fromkeys(f"{f['policy']}/{f['rule']}" for f in findings))


def write_results(lines: Iterable[bytes], path: Path) -> int:
    """Write result JSON lines (bytes ending with a newline) as JSONL, CSV or Parquet, by the
    suffix of `path`; returns the count. The file appears only once complete (atomic_output);
    CSV text cells that a spreadsheet would run as a formula get a leading ' (csv_cell)."""
    path = Path(path)
    suffix = path.suffix.lower()
    n = 0
    if suffix == ".csv":
        with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for payload in lines:
                d = orjson.loads(payload)
                w.writerow([csv_cell(d["message_id"]), d["evaluated_at"], d["outcome"],
                            orjson.dumps(d["policies"]).decode(), orjson.dumps(d["findings"]).decode(),
                            rules_cell(d["findings"]), "true" if d.get("out_of_order") else ""])
                n += 1
        return n
    if suffix == ".parquet":
        import pyarrow as pa

        with atomic_output(path, "wb") as fh:
            sink = _ParquetSink(fh)
            try:
                chunk: list[bytes] = []
                for payload in lines:
                    chunk.append(payload)
                    if len(chunk) == CHUNK:
                        sink.write(pa.array(chunk, type=pa.string()))
                        n += len(chunk)
                        chunk = []
                if chunk:
                    sink.write(pa.array(chunk, type=pa.string()))
                    n += len(chunk)
                sink.finish()
            finally:
                sink.close()
        return n
    with atomic_output(path, "wb", buffering=1 << 20) as fh:
        for payload in lines:
            fh.write(payload)
            n += 1
    return n


def write_results_column(lines, path: Path) -> int:
    """`write_results` for a column of result lines (a polars String Series or a pyarrow string
    array, each value ending with a newline): JSON Lines and Parquet are written from the
    column's buffers, with no Python object per line; returns the count."""
    path = Path(path)
    suffix = path.suffix.lower()
    arrow = _as_arrow(lines)
    if suffix == ".csv":
        return write_results((s.encode() for s in arrow.to_pylist()), path)
    if suffix == ".parquet":
        with atomic_output(path, "wb") as fh:
            sink = _ParquetSink(fh)
            try:
                # The same chunks as the iterator's, so the two give the same row groups.
                for i in range(0, len(arrow), CHUNK):
                    sink.write(arrow.slice(i, CHUNK))
                sink.finish()
            finally:
                sink.close()
        return len(arrow)
    with atomic_output(path, "wb", buffering=1 << 20) as fh:
        for chunk in arrow.chunks:
            fh.write(_string_bytes(chunk))
    return len(arrow)


def _string_bytes(chunk) -> memoryview:
    """The concatenated values of a string array, straight from its data buffer."""
    import numpy as np
    import pyarrow as pa

    if len(chunk) == 0:
        return memoryview(b"")
    if pa.types.is_string_view(chunk.type):
        chunk = chunk.cast(pa.large_string())
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(chunk.buffers()[1], dtype=width)
    start, end = int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])
    return memoryview(chunk.buffers()[2])[start:end]


__all__ = ["CSV_COLUMNS", "RESULT_COLUMNS", "rules_cell", "ResultLine", "parquet_schema", "write_results", "write_results_column"]
