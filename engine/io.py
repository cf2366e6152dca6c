"""Reading logs: a single JSON object, JSON Lines, CSV or Parquet → records or input errors.

Nothing is dropped silently: every line either becomes a record or an
InputError naming the line, the message_id when there is one, and the field.
"""
from __future__ import annotations

import csv
import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import orjson
from pydantic import ValidationError

from .mapping import ColumnMap, apply_map
from .model import BuyerEvent, Message
from .policyfile import MsgpolicyError

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
        got = "a JSON array (JSON Lines hold one object a line)" if isinstance(data, list) else type(data).__name__
        return InputError(source, line, None, None, f"expected a JSON object, got {got}")
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
        elif err["type"] == "value_error":
            reason = str(err["ctx"]["error"])
        elif err["type"] == "enum":
            reason = f"{err.get('input')!r} is not allowed: {err['msg']}"
        return InputError(source, line, message_id, field, _short(reason))


# ---- limits -------------------------------------------------------------------------------

# The largest record read: a JSON line, a CSV row (Python's csv module stops at 128 KiB by
# default) or a whole pretty-printed JSON object. A longer one is a reject at its line.
MAX_RECORD_BYTES = 4 << 20
csv.field_size_limit(MAX_RECORD_BYTES)
_SNIFF_BYTES = 1 << 16


class LogError(MsgpolicyError):
    """A log file that cannot be read as a whole (not one bad record: those are InputErrors).
    str() names the file and, when known, the line."""

    kind = "input error"

    def __init__(self, source: str, message: str, line: Optional[int] = None):
        self.source, self.line, self.message = source, line, message
        super().__init__(source + (f" line {line}" if line is not None else "") + ": " + message)

    def __reduce__(self):  # picklable, so a worker can hand it to the parent
        return (type(self), (self.source, self.message, self.line))


def log_format(path: Union[str, Path]) -> str:
    """"parquet", "csv" or "json" (a JSON object or JSON Lines), by suffix; stdin is JSON."""
    suffix = "" if str(path) == "-" else Path(path).suffix.lower()
    return {".parquet": "parquet", ".csv": "csv"}.get(suffix, "json")


# ---- JSON Lines (and one JSON object) --------------------------------------------------------


def read_line_by_line(path: Union[str, Path]) -> bool:
    """Whether a JSON Lines file needs the whole-file decisions of `_json_items` (refused for
    CR-only line ends or as a JSON array, or read as one pretty-printed object) rather than
    being read a line at a time, independently (as the batch engine reads)."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        size = os.fstat(fh.fileno()).st_size
        if b"\n" not in head and b"\r" in head.rstrip(b"\r"):
            return True
        fh.seek(0)
        line = fh.readline(MAX_RECORD_BYTES + 1)
    if not line.strip() or len(line) > MAX_RECORD_BYTES:
        return False
    try:
        orjson.loads(line)
        return False
    except orjson.JSONDecodeError:
        return line.lstrip()[:1] == b"[" or (head.lstrip()[:1] == b"{" and size <= MAX_RECORD_BYTES)


def _json_items(fh, source: str, size: Optional[int]) -> Iterator[tuple[int, object, int]]:
    head = fh.peek(_SNIFF_BYTES)[:_SNIFF_BYTES] if hasattr(fh, "peek") else b""
    if b"\n" not in head and b"\r" in head.rstrip(b"\r"):  # several lines, none ending in LF
        raise LogError(source, "lines end with a carriage return alone (classic Mac line ends); "
                               "convert them to LF or CRLF")
    first = head.lstrip()[:1]
    number = 0
    pending_document = first == b"{" and size is not None and size <= MAX_RECORD_BYTES
    while True:
        raw = fh.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            consumed = len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, bounded memory
                raw = fh.readline(1 << 20)
                consumed += len(raw)
            yield number, InputError(source, number, None, None,
                                     f"line longer than {MAX_RECORD_BYTES >> 20} MiB"), consumed
            continue
        if not raw.strip():
            yield number, None, len(raw)
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if number == 1 and raw.lstrip()[:1] == b"[":
                raise LogError(source, "the file is one JSON array over several lines; give one JSON "
                                       "object, or JSON Lines (one object a line, e.g. `jq -c '.[]'`)") from None
            if pending_document and number == 1:
                # One JSON object over several lines (pretty-printed): the whole file is one record.
                rest = fh.read(MAX_RECORD_BYTES)
                try:
                    obj = orjson.loads(raw + rest)
                except orjson.JSONDecodeError:
                    yield number, InputError(source, number, None, None, f"malformed JSON: {exc}"), len(raw)
                    yield from _json_lines_of(rest, source, number)
                    return
                yield number, obj if obj is not None else to_record(obj, source, number), len(raw) + len(rest)
                return
            yield number, InputError(source, number, None, None, f"malformed JSON: {exc}"), len(raw)
            continue
        # A JSON null line is a record that is not an object, not a blank line.
        yield number, (to_record(obj, source, number) if obj is None else obj), len(raw)


def _json_lines_of(data: bytes, source: str, after: int) -> Iterator[tuple[int, object, int]]:
    """The lines of `data` (read after line `after`) as _json_items gives them."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for number, raw in enumerate(lines, start=after + 1):
        if not raw.strip():
            yield number, None, len(raw) + 1
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield number, InputError(source, number, None, None, f"malformed JSON: {exc}"), len(raw) + 1
            continue
        yield number, (to_record(obj, source, number) if obj is None else obj), len(raw) + 1


# ---- CSV -------------------------------------------------------------------------------------


def _csv_value(column: str, value: str):
    if value == "":
        return None
    if column in LIST_COLUMNS:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # validation then names the column
    return value


def _not_utf8(value: str) -> bool:
    """Whether a cell read with surrogateescape held bytes that are not UTF-8."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_header(header: list[str], source: str, mapping: Optional[ColumnMap]) -> None:
    """Refuse a header that would silently re-shape records: repeated columns, a missing
    message_id (most likely no header line at all), or another delimiter than the comma."""
    for name in header:
        if _not_utf8(name):
            raise LogError(source, "the header is not valid UTF-8", line=1)
    seen = set()
    for name in header:
        if name in seen:
            raise LogError(source, f"column {name!r} appears more than once in the header", line=1)
        seen.add(name)
    fields = set(apply_map(dict.fromkeys(header, ""), mapping)) if mapping is not None else seen
    if "message_id" in fields or "type" in fields:
        return
    if len(header) == 1:
        for sep in (";", "\t", "|"):
            if sep in header[0]:
                raise LogError(source, f"the header is one column holding {sep!r}: CSV logs are "
                                       f"comma-separated (is this a {sep!r}-separated file?)", line=1)
    shown = _short(",".join(header), 80)
    raise LogError(source, f"the header has no message_id column (nor type, for buyer events): is the "
                           f"header line missing, or does this export need a column map (--map)? "
                           f"It reads: {shown}", line=1)


def _csv_items(path: Path, source: str, mapping: Optional[ColumnMap] = None
               ) -> Iterator[tuple[int, object, int]]:
    with open(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        # strict: a stray quote is an error at its line rather than a silently merged cell.
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LogError(source, f"the header is not valid CSV: {exc}", line=1) from None
        _check_header(header, source, mapping)
        width = len(header)
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = reader.line_num
                if "unexpected end of data" in str(exc):
                    reason = (f"unterminated quoted cell: the record runs from line {start} to the end "
                              f"of the file (line {end}) and was not read")
                elif "field larger than field limit" in str(exc):
                    reason = f"a cell is larger than {MAX_RECORD_BYTES >> 20} MiB"
                else:
                    reason = f"not valid CSV: {exc}"
                yield start, InputError(source, start, None, None, reason), 0
                continue
            if not cells:
                yield start, None, 0
                continue
            if len(cells) > width:
                yield start, InputError(source, start, cells[0] if header[0] == "message_id" else None, None,
                                        "more cells than header columns"), 0
                continue
            bad = next((name for name, value in zip(header, cells) if _not_utf8(value)), None)
            if bad is not None:
                yield start, InputError(source, start, None, bad, "not valid UTF-8"), 0
                continue
            data = {k: v for k, v in ((k, _csv_value(k, v)) for k, v in zip(header, cells)) if v is not None}
            yield start, data, 0


# ---- Parquet ---------------------------------------------------------------------------------


def _parquet_items(path: Path, source: str) -> Iterator[tuple[int, object, int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LogError(source, f"not a readable Parquet file: {exc}") from None
    # Parquet allows two columns of one name; a row would silently keep only one of them.
    names = parquet.schema_arrow.names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LogError(source, f"column {repeated[0]!r} appears more than once in the schema")
    row = 0
    batches = parquet.iter_batches(batch_size=65536)
    converting = (pa.ArrowException, ValueError, OverflowError)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise LogError(source, f"Parquet data after row {row} cannot be read: {exc}") from None
        try:
            rows = batch.to_pylist()
        except converting:
            # A value Python cannot hold (e.g. a timestamp past year 9999): find it row by row.
            rows = []
            for i in range(batch.num_rows):
                try:
                    rows.extend(batch.slice(i, 1).to_pylist())
                except converting as exc:
                    rows.append(InputError(source, row + i + 1, None, None, f"a value cannot be read: {exc}"))
        for data in rows:
            row += 1
            if isinstance(data, InputError):
                yield row, data, 0
                continue
            out = {}
            for k, v in data.items():
                if v is None:
                    continue
                if k in LIST_COLUMNS and isinstance(v, str):
                    try:
                        v = orjson.loads(v)
                    except orjson.JSONDecodeError:
                        pass
                out[k] = v
            yield row, out, 0


# ---- one reader for every command ------------------------------------------------------------


def log_items(path: Union[str, Path], mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, object, int]]:
    """(line or row, raw item, bytes consumed) for every line of a log ('-' = stdin, JSON).

    The raw item is a dict (the row before validation and before the column map; CSV and
    Parquet list columns already parsed), an InputError (a line that is no record), or None
    (a blank line). A file that cannot be read as a whole raises LogError (OSError when it
    cannot be opened). `mapping` only serves to judge a CSV header under the names the map
    gives its columns."""
    source = str(path)
    fmt = log_format(path)
    if source == "-":
        yield from _json_items(sys.stdin.buffer, source, None)
        return
    path = Path(path)
    if fmt == "parquet":
        yield from _parquet_items(path, source)
    elif fmt == "csv":
        yield from _csv_items(path, source, mapping)
    else:
        with open(path, "rb", buffering=1 << 20) as fh:
            yield from _json_items(fh, source, os.fstat(fh.fileno()).st_size)


def check_log_file(path: Union[str, Path], mapping: Optional[ColumnMap] = None) -> None:
    """Raise LogError now for a file the readers would refuse (unreadable, an ambiguous CSV
    header, a JSON array, CR-only line ends, a broken Parquet footer), before any work starts."""
    if str(path) == "-" or not Path(path).is_file():
        return  # the reader itself names a missing file (OSError)
    items = log_items(path, mapping)
    try:
        next(items, None)
    finally:
        items.close()


def prepare(obj: object, mapping: Optional[ColumnMap]) -> object:
    """A raw item under the column map (list columns the map renamed still hold JSON text)."""
    if mapping is None or not isinstance(obj, dict):
        return obj
    data = apply_map(obj, mapping)
    for name in LIST_COLUMNS:
        value = data.get(name)
        if isinstance(value, str):
            try:
                data[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass  # validation names the column
    return data


def read_records(path: Union[str, Path], mapping: Optional[ColumnMap] = None) -> Iterator[tuple[int, Union[Record, InputError]]]:
    """(line or row number, record or error) for every record of a log file ('-' = stdin),
    each raw row passed through the column map first when one is given."""
    source = str(path)
    for line, obj, _ in log_items(path, mapping):
        if obj is None:
            continue
        if isinstance(obj, InputError):
            yield line, obj
            continue
        yield line, to_record(prepare(obj, mapping), source, line)


# ---- outputs ---------------------------------------------------------------------------------


class OutputError(MsgpolicyError):
    """An output path that would be unsafe to write (it names an input, another output, an
    unknown format or a place that cannot be written); raised before any work starts."""

    kind = "output error"


def _umask() -> int:
    # Read without changing it where the system allows: setting it to read it back is racy
    # with other threads creating files.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _output_mode(path: Path) -> int:
    """The permission bits a new or replaced output should have."""
    try:
        st = os.stat(path)
    except OSError:
        return 0o666 & ~_umask()
    if stat.S_ISREG(st.st_mode):
        # Not setuid/setgid: a rewritten file should not inherit the right to run as its owner.
        return stat.S_IMODE(st.st_mode) & 0o777
    return 0o666 & ~_umask()


@contextmanager
def atomic_output(path: Path, mode: str = "wb", **kwargs):
    """A file object on a temporary file beside `path`, renamed over it only when the block
    ends normally: an interrupted or failed write leaves any earlier file untouched and no
    partial file behind."""
    path = Path(os.path.realpath(path))  # through a symlink: replace its target, keep the link
    if path.exists() and not path.is_file():
        # A device, a pipe or a terminal (/dev/null, /dev/stdout, a FIFO): renaming over it
        # would replace the node itself with a regular file; it holds no earlier file to keep.
        with open(path, mode, **kwargs) as fh:
            yield fh
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; the output should get the mode of the file it replaces,
        # or the umask's, as a plain open() would give it.
        os.fchmod(fd, _output_mode(path))
        with open(fd, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_outputs(inputs: Iterable[Union[str, Path]], outputs: dict[str, Optional[Path]],
                  suffixes: Optional[dict[str, tuple[str, ...]]] = None) -> None:
    """Refuse, before any work: an output equal to an input or to another output, an output
    whose suffix names no format it can be written in, and one whose directory is missing or
    not writable. `outputs` maps each option (e.g. "--results") to its path or None."""
    # "-" is standard output: nothing to clobber.
    given = {option: Path(path) for option, path in outputs.items() if path is not None and str(path) != "-"}
    for option, path in given.items():
        for log in inputs:
            if str(log) != "-" and _same_file(path, Path(log)):
                raise OutputError(f"{option} {path} is an input of this command; refusing to overwrite it")
    items = list(given.items())
    for i, (option, path) in enumerate(items):
        for other, other_path in items[i + 1:]:
            if _same_file(path, other_path):
                raise OutputError(f"{option} and {other} name the same file {path}")
    for option, path in given.items():
        allowed = (suffixes or {}).get(option)
        if allowed is not None and path.suffix.lower() not in allowed:
            raise OutputError(f"{option} {path}: unknown suffix {path.suffix or '(none)'!r} "
                              f"(use {', '.join(allowed)})")
        if path.is_dir():
            raise OutputError(f"{option} {path} is a directory")
        parent = Path(os.path.realpath(path)).parent  # where atomic_output makes its temporary file
        if not parent.is_dir():
            raise OutputError(f"{option} {path}: directory {parent} does not exist")
        if path.exists() and not path.is_file():
            continue  # a device or a pipe is written in place (atomic_output)
        # The temporary file is made beside the target: try it now rather than after the work.
        try:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise OutputError(f"{option} {path}: cannot write in {parent}: {exc.strerror}") from None
        os.close(fd)
        os.unlink(probe)
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"{option} {path}: the file is read-only")


# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell made inert for spreadsheets: a leading ' when it would start a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class SafeCsvWriter:
    """csv.writer whose text cells go through csv_cell (every CSV the commands write)."""

    def __init__(self, fh, **kwargs):
        self._writer = csv.writer(fh, **kwargs)

    def writerow(self, row) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)
