"""Read + validate stage of the batch audit: every input line becomes a row of the
messages or events frame, or a reject.

JSON Lines are decoded in bulk (engine.batch.decode); a line the bulk path cannot
vouch for, and every CSV, Parquet or mapped row, is validated by the pydantic
models one by one, exactly as the streaming audit does.
"""
from __future__ import annotations

import datetime as dt
import threading
from queue import Queue
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import orjson
import polars as pl

from ..audit import _mapped, log_time, stream_items
from ..io import InputError, read_line_by_line, to_record
from ..model import BuyerEvent, Message
from .decode import (BOOLEAN, MESSAGE_FIELDS, NULL, STRING, classify_rows, decode_batches, iso_text, line_bytes,
                     read_lines)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)


_MESSAGE_SCHEMA = {
    "pos": pl.Int64, "file": pl.Int32, "line": pl.Int64, "message_id": pl.String, "order_id": pl.String,
    "buyer_id": pl.String, "sent_us": pl.Int64, "sent_iso": pl.String, "marketplace": pl.String,
    "initiated_by": pl.String, "reply_to": pl.String, "channel": pl.String, "subject": pl.String,
    "body": pl.String, "category": pl.String, "buyer_opted_out": pl.Boolean, "delivered_us": pl.Int64,
    "order_placed_us": pl.Int64, "language": pl.String, "buyer_language": pl.String,
    "handmade": pl.Boolean, "slow": pl.Boolean, "attachments_json": pl.String,
}
_EVENT_SCHEMA = {"pos": pl.Int64, "buyer_id": pl.String, "at_us": pl.Int64, "ev_state": pl.Boolean}


def _us(value: Optional[dt.datetime]) -> Optional[int]:
    return None if value is None else (value - _EPOCH) // _MICRO


def _message_row(pos: int, file: int, line: int, m: Message) -> dict:
    return {
        "pos": pos, "file": file, "line": line, "message_id": m.message_id, "order_id": m.order_id,
        "buyer_id": m.buyer_id, "sent_us": _us(m.sent_at), "sent_iso": m.sent_at.isoformat(),
        "marketplace": m.marketplace, "initiated_by": m.initiated_by.value, "reply_to": m.reply_to,
        "channel": m.channel.value, "subject": m.subject, "body": m.body,
        "category": m.category.value if m.category is not None else None,
        "buyer_opted_out": m.buyer_opted_out, "delivered_us": _us(m.delivered_at),
        "order_placed_us": _us(m.order_placed_at), "language": m.language, "buyer_language": m.buyer_language,
        "handmade": m.handmade, "slow": True, "attachments_json": None,
    }


class _Objects(dict):
    """pos → Message of the records validated one by one; a record taken in bulk whose object
    is asked for (`objects[pos]`, for its attachments) is validated then, from its line."""

    def __init__(self):
        super().__init__()
        self.files: list = []  # (base, data, offsets) of each JSON Lines file read in bulk

    def __missing__(self, pos: int):
        for base, data, offsets in self.files:
            if base <= pos < base + len(offsets) - 1:
                index = pos - base
                found = to_record(orjson.loads(line_bytes(data, offsets, index)), "", index + 1)
                self[pos] = found
                return found
        raise KeyError(pos)


@dataclass
class _Loaded:
    messages: pl.DataFrame
    events: pl.DataFrame
    rejects: list  # (pos, InputError)
    clock: pl.DataFrame  # pos, lt (log time of every non-blank line, None where it has none)
    ids: pl.DataFrame  # pos, mid: every non-blank line's string message_id (for duplicates)
    objects: dict  # pos → Message, for the records validated one by one
    raw: dict  # file index → (bytes, offsets) of JSON Lines files read in bulk
    blank: int = 0
    read: int = 0


def _fast_frames(raw, file: int, base: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    lazy = raw.lazy() if isinstance(raw, pl.DataFrame) else raw
    messages, events = pl.collect_all(_fast_plans(lazy, file, base))
    return messages, events


def _fast_plans(raw: pl.LazyFrame, file: int, base: int, first: int = 0) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The messages and events the bulk path takes (lazy: a filter reads only the columns used).
    `index` counts from the file's line `first` (0-based); `base` is the file's first position."""
    def text(name, default=None):
        col = pl.col(f"s_{name}")
        return pl.when(pl.col(f"t_{name}").is_null()).then(pl.lit(default, dtype=pl.String)) \
            .when(pl.col(f"t_{name}") == NULL).then(None).otherwise(col)

    msgs = raw.filter(pl.col("fast") == "message").select(
        (pl.col("index").cast(pl.Int64) + (base + first)).alias("pos"), pl.lit(file, dtype=pl.Int32).alias("file"),
        (pl.col("index").cast(pl.Int64) + (first + 1)).alias("line"),
        pl.col("s_message_id").alias("message_id"), pl.col("s_order_id").alias("order_id"),
        pl.col("s_buyer_id").alias("buyer_id"), pl.col("us_sent_at").alias("sent_us"),
        iso_text("s_sent_at").alias("sent_iso"),
        *(text(n, MESSAGE_FIELDS[n].default).alias(n) for n in
          ("marketplace", "initiated_by", "reply_to", "channel", "subject", "body", "category")),
        *(pl.when(pl.col(f"t_{n}") == BOOLEAN).then(pl.col(f"s_{n}") == "true").otherwise(None).alias(n)
          for n in ("buyer_opted_out",)),
        pl.col("us_delivered_at").alias("delivered_us"), pl.col("us_order_placed_at").alias("order_placed_us"),
        text("language").alias("language"), text("buyer_language").alias("buyer_language"),
        pl.when(pl.col("t_handmade") == BOOLEAN).then(pl.col("s_handmade") == "true")
        .otherwise(None).alias("handmade"),
        # A message with attachments keeps its model object for the detectors that read them
        # (validated when first asked for: see _Objects); their canonical JSON is kept too, for
        # the detectors that read it natively.
        (pl.col("t_attachments").is_not_null() & (pl.col("s_attachments") != "[]")).alias("slow"),
        pl.when(pl.col("t_attachments").is_not_null() & (pl.col("s_attachments") != "[]"))
        .then(pl.col("s_attachments")).alias("attachments_json"),
    )
    events = raw.filter(pl.col("fast") == "event").select(
        (pl.col("index").cast(pl.Int64) + (base + first)).alias("pos"), pl.col("s_buyer_id").alias("buyer_id"),
        pl.col("us_at").alias("at_us"), (pl.col("s_type") == "buyer_opt_out").alias("ev_state"))
    return msgs.cast(_MESSAGE_SCHEMA), events.cast(_EVENT_SCHEMA)


def _merge(bulk: list, slow: Optional[pl.DataFrame], schema: dict) -> pl.DataFrame:
    """The bulk frames (each sorted by pos, files in order) and the rows validated one by one
    (sorted too, and few) as one frame sorted by pos: slices of the bulk rows with each slow
    row put between them, copied once (cheaper than sorting and gathering every column)."""
    bulk = [f for f in bulk if len(f)]
    fast = pl.concat(bulk) if bulk else pl.DataFrame(schema=schema)
    if slow is None or not len(slow):
        return fast.rechunk()
    if len(slow) > 4096:  # many pieces: a sort is cheaper than slicing in Python
        return pl.concat([fast, slow]).sort("pos")
    cuts = np.searchsorted(fast["pos"].to_numpy(), slow["pos"].to_numpy())
    pieces, start = [], 0
    for row, cut in enumerate(cuts.tolist()):
        pieces += [fast.slice(start, cut - start), slow.slice(row, 1)]
        start = cut
    pieces.append(fast.slice(start))
    return pl.concat(pieces, rechunk=True)


def share_of(n_lines: int, part: Optional[tuple[int, int]]) -> tuple[int, int]:
    """The lines [first, last) of a file that part (k, of) reads: contiguous, near-equal shares."""
    if part is None:
        return 0, n_lines
    k, of = part
    return n_lines * k // of, n_lines * (k + 1) // of


def load(paths: list, mapping, not_after: float, extra_keys: tuple,
         part: Optional[tuple[int, int]] = None) -> _Loaded:
    """Every line of the inputs, or with `part=(k, of)` the k-th of `of` shares of each JSON Lines
    file (positions stay those of the whole log; only JSON Lines without a mapping can be split)."""
    msg_frames, ev_frames, clocks, ids = [], [], [], []
    rejects, objects, raws = [], _Objects(), {}
    slow_msgs, slow_events, slow_clock, slow_ids = [], [], [], []
    blank = read = 0
    base = 0
    for file, path in enumerate(paths):
        source = str(path)
        suffix = Path(path).suffix.lower()
        # A file the line reader must judge whole (a JSON array, one pretty-printed object, CR-only
        # line ends) goes through it, so that both engines answer alike.
        if suffix not in (".csv", ".parquet") and mapping is None and not read_line_by_line(path):
            data, offsets = read_lines(Path(path))
            raws[file] = (data, offsets)
            objects.files.append((base, data, offsets))
            n_lines = len(offsets) - 1
            first, last = share_of(n_lines, part)
            # The share as a file of its own (views, no copy): indices count from its first line.
            data_part = data[offsets[first]:offsets[last]]
            offsets_part = offsets[first:last + 1] - offsets[first]
            # The per-line path is Python, in a thread: DuckDB and polars release the GIL, so the
            # next batches are decoded and the bulk rows' frames built meanwhile.
            queue: Queue = Queue()
            worker = _Worker(_validate_batches, queue, data_part, offsets_part, base, first, file, source,
                             not_after, rejects, objects, slow_msgs, slow_events, slow_clock, slow_ids)
            try:
                for batch in decode_batches(data_part, offsets_part, extra_keys):
                    frame = _routed(classify_rows(batch), extra_keys)
                    n_blank = int(frame["blank"].sum())
                    blank += n_blank
                    read += len(frame) - n_blank
                    lazy = frame.lazy()
                    queue.put(lazy.filter(pl.col("fast").is_null() & ~pl.col("blank")).select("index")
                              .collect()["index"].to_list())
                    fast = lazy.filter(pl.col("fast").is_not_null())
                    pos = (pl.col("index").cast(pl.Int64) + (base + first)).alias("pos")
                    m, e, c, i = pl.collect_all([
                        *_fast_plans(lazy, file, base, first),
                        fast.select(pos, (pl.when(pl.col("fast") == "message").then(pl.col("us_sent_at"))
                                          .otherwise(pl.col("us_at")).cast(pl.Float64) / 1e6).alias("lt")),
                        fast.filter(pl.col("t_message_id") == STRING).select(pos, pl.col("s_message_id").alias("mid")),
                    ])
                    msg_frames.append(m)
                    ev_frames.append(e)
                    clocks.append(c)
                    ids.append(i)
            finally:
                queue.put(None)
                worker.join()
            base += n_lines + 1
            continue
        if part is not None:
            raise ValueError("only JSON Lines inputs without a mapping are read in parts")
        count = 0
        # A JSON Lines file read here keeps the positions the bulk reader gives (line - 1).
        shift = 1 if suffix not in (".csv", ".parquet") and mapping is None else 0
        for number, obj, _ in stream_items(path):
            count = max(count, number)
            if obj is None:
                blank += 1
                continue
            read += 1
            if mapping is not None and isinstance(obj, dict):
                obj = _mapped(obj, mapping)
            _slow_item(base + number - shift, file, number, obj, source, None, not_after,
                       rejects, objects, slow_msgs, slow_events, slow_clock, slow_ids)
        base += count + 1
    # Each frame lists its file's lines in order, files in order, and the per-line rows in order.
    messages = _merge(msg_frames, pl.DataFrame(slow_msgs, schema=_MESSAGE_SCHEMA), _MESSAGE_SCHEMA)
    events = _merge(ev_frames, pl.DataFrame(slow_events, schema=_EVENT_SCHEMA, orient="row"), _EVENT_SCHEMA)
    clock_schema, ids_schema = {"pos": pl.Int64, "lt": pl.Float64}, {"pos": pl.Int64, "mid": pl.String}
    clock = _merge(clocks, pl.DataFrame(slow_clock, schema=clock_schema, orient="row"), clock_schema)
    clock = clock.with_columns(lt=pl.when(pl.col("lt") <= not_after).then(pl.col("lt")).otherwise(None))
    idf = _merge(ids, pl.DataFrame(slow_ids, schema=ids_schema, orient="row"), ids_schema)
    return _Loaded(messages, events, rejects, clock, idf, objects, raws, blank, read)


class _Worker(threading.Thread):
    """Runs a function beside the caller; join() re-raises what it raised."""

    def __init__(self, target, *args):
        super().__init__(daemon=True)
        self._call, self._args, self._error = target, args, None
        self.start()

    def run(self):
        try:
            self._call(*self._args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc

    def join(self, timeout=None):
        super().join(timeout)
        if self._error is not None:
            raise self._error


def _validate_batches(queue, data, offsets, base, first, file, source, not_after, *sinks) -> None:
    """The lines the bulk path did not take (lists of indices from the queue, None ends), through
    orjson and the models one by one. Indices count from the file's line `first`."""
    for indices in iter(queue.get, None):
        for index in indices:
            number = first + index + 1
            try:
                obj = orjson.loads(line_bytes(data, offsets, index))
            except orjson.JSONDecodeError as exc:
                obj = InputError(source, number, None, None, f"malformed JSON: {exc}")
            _slow_item(base + number - 1, file, number, obj, source, None, not_after, *sinks)


def _routed(frame: pl.DataFrame, extra_keys: tuple) -> pl.DataFrame:
    """Bulk rows the log clock or a policy reads beyond the model's fields go to the per-line path."""
    # Events that also carry sent_at (an extra field): the log clock reads it.
    fast = pl.when((pl.col("fast") == "event") & pl.col("t_sent_at").is_not_null()).then(None)
    if extra_keys:
        fast = fast.when(pl.any_horizontal([pl.col(f"t_{k}").is_not_null() for k in extra_keys])).then(None)
    return frame.with_columns(fast=fast.otherwise(pl.col("fast")))


def _slow_item(pos, file, number, obj, source, mapping, not_after, rejects, objects, slow_msgs, slow_events,
               slow_clock, slow_ids) -> None:
    """One record validated by the pydantic models, exactly as the streaming audit does."""
    slow_clock.append((pos, log_time(obj, not_after)))
    if isinstance(obj, dict) and isinstance(obj.get("message_id"), str):
        slow_ids.append((pos, obj["message_id"]))
    item = obj if isinstance(obj, InputError) else to_record(obj, source, number)
    if isinstance(item, InputError):
        rejects.append((pos, item))
    elif isinstance(item, BuyerEvent):
        slow_events.append((pos, item.buyer_id, _us(item.at), item.type == "buyer_opt_out"))
    else:
        objects[pos] = item
        slow_msgs.append(_message_row(pos, file, number, item))
