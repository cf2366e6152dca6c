"""Reading logs: a single JSON object, JSON Lines, CSV or Parquet → records or input errors.

Nothing is dropped silently: every line either becomes a record or an
InputError naming the line, the message_id when there is one, and the field.
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import orjson
from pydantic import ValidationError

from .mapping import ColumnMap, apply_map
from .model import BuyerEvent, Message

Record = Union[Message, BuyerEvent]
EVENT_TYPES = ("buyer_opt_out", "buyer_opt_in")
LIST_COLUMNS = ("attachments",)


@dataclass(frozen=True)
class InputError:
    source: str
    line: Optional[int]
    message_id: Optional[str]
    field: Optional[str]
    reason: str

    def __str__(self) -> str:
        where = self.source + (f" line {self.line}" if self.line is not None else "")
        if self.message_id:
            where += f" (message_id {self.message_id})"
        field = f": field '{self.field}'" if self.field else ""
        return f"{where}{field}: {self.reason}"

    def as_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "message_id": self.message_id,
                "field": self.field, "reason": self.reason}


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_record(data: object, source: str, line: Optional[int],
              mapping: Optional[ColumnMap] = None) -> Union[Record, InputError]:
    """Validate one parsed object as a message or a buyer event (after the column map, if any)."""
    if not isinstance(data, dict):
        return InputError(source, line, None, None, f"expected a JSON object, got {type(data).__name__}")
    data = apply_map(data, mapping)
    message_id = data.get("message_id") if isinstance(data.get("message_id"), str) else None
    kind = data.get("type")
    model = Message
    if kind is not None and "message_id" not in data:
        if kind not in EVENT_TYPES:
            return InputError(source, line, message_id, "type",
                              f"unknown record type {kind!r} (buyer events are {', '.join(EVENT_TYPES)})")
        model = BuyerEvent
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        reason = err["msg"]
        if err["type"] == "timezone_aware":
            reason = ("timestamp has no UTC offset (RFC 3339 with offset required, e.g. 2017-03-28T09:15:00-07:00; "
                      "for exports in local time, name the zone with a map file's naive_timestamps)")
        elif err["type"] == "missing":
            reason = "required field is missing"
        elif err["type"] == "enum":
            reason = f"{err.get('input')!r} is not allowed: {err['msg']}"
        return InputError(source, line, message_id, field, _short(reason))


def _json_lines(data: bytes, source: str, mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, Union[Record, InputError]]]:
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield number, InputError(source, number, None, None, f"malformed JSON: {exc}")
            continue
        yield number, to_record(obj, source, number, mapping)


def _csv_value(column: str, value: str):
    if value == "":
        return None
    if column in LIST_COLUMNS:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # validation then names the column
    return value


def _csv_rows(text: str, source: str, mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, Union[Record, InputError]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, InputError(source, line, row.get("message_id"), None, "more cells than header columns")
            continue
        # Rename first, so list columns are recognised under their record names.
        row = apply_map({k: v for k, v in row.items() if v != ""}, mapping)
        data = {k: v for k, v in ((k, _csv_value(k, v)) for k, v in row.items()) if v is not None}
        yield line, to_record(data, source, line)


def _parquet_rows(path: Path, source: str, mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, Union[Record, InputError]]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
        for data in batch.to_pylist():
            row += 1
            data = apply_map({k: v for k, v in data.items() if v is not None}, mapping)
            data = {k: (orjson.loads(v) if k in LIST_COLUMNS and isinstance(v, str) else v) for k, v in data.items()}
            yield row, to_record(data, source, row)


def read_records(path: Union[str, Path], mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, Union[Record, InputError]]]:
    """(line or row number, record or error) for every record of a log file ('-' = stdin),
    each raw row passed through the column map first when one is given."""
    source = str(path)
    if source == "-":
        data = sys.stdin.buffer.read()
        suffix = ""
    else:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            yield from _parquet_rows(path, source, mapping)
            return
        data = path.read_bytes()
    if suffix == ".csv":
        yield from _csv_rows(data.decode("utf-8-sig"), source, mapping)
        return
    stripped = data.lstrip()
    if stripped.startswith(b"{") and b"\n{" not in stripped.rstrip():
        # One JSON object, possibly pretty-printed over several lines.
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            yield 1, to_record(obj, source, 1, mapping)
            return
    yield from _json_lines(data, source, mapping)
