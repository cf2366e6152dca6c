"""What earlier records tell about later ones, for a whole stream at once.

The same answers as `engine.audit.BoundedHistory` gives one record at a time,
computed with sorts, windows per buyer or order and as-of joins:

* **out of order**: a message sent before the latest instant already applied
  for its buyer;
* **opt-out state**: the message's own value, else the latest buyer event
  applied before it in the file (the state before that event when the event
  is not before `sent_at`);
* **quoted replies**: `reply_to` names a buyer message earlier in the file,
  of the same buyer, whose normalised text the body contains;
* **prior counts**: earlier counting seller messages of the same order (or
  buyer).

State not touched for `horizon` seconds of log time is forgotten (the log
clock is the latest timestamp read so far, every line counted). Where that
forgetting could change an answer (a buyer or an order idle longer than the
horizon), the keys concerned are replayed one record at a time with the
streaming rules; everywhere else the window answer is the same by
construction.
"""
from __future__ import annotations

from typing import Optional

import polars as pl

from ..facts import normalise_for_quote


def out_of_order(records: pl.DataFrame, horizon: float) -> pl.Series:
    """For every record (messages and events, in stream order): the message is out of order."""
    prev = pl.col("t").shift(1).cum_max().over("buyer_id")
    frame = records.select("pos", "buyer_id", "t", "clock", "is_message",
                           prev.alias("prev_max"))
    late = (frame["t"] < frame["prev_max"]).fill_null(False) & frame["is_message"]
    reset = (frame["prev_max"] < frame["clock"] - horizon).fill_null(False)
    doubtful = frame.filter(pl.col("buyer_id").is_in(frame.filter(reset)["buyer_id"].unique().implode())
                            & pl.col("buyer_id").is_in(frame.filter(late)["buyer_id"].unique().implode()))
    if doubtful.is_empty():
        return late
    late = late.to_list()
    index = {p: i for i, p in enumerate(frame["pos"].to_list())}
    last: dict[str, Optional[float]] = {}
    for pos, buyer, t, clock, is_message in doubtful.select("pos", "buyer_id", "t", "clock", "is_message").iter_rows():
        seen = last.get(buyer)
        if seen is not None and seen < clock - horizon:
            seen = None
        if is_message:
            late[index[pos]] = seen is not None and t < seen
        last[buyer] = t if seen is None or t > seen else seen
    return pl.Series(late, dtype=pl.Boolean)


def opted_out(messages: pl.DataFrame, events: pl.DataFrame) -> pl.Series:
    """The opt-out state each message is judged with (None: unknown)."""
    own = messages["buyer_opted_out"]
    if events.is_empty():
        return own
    ev = events.select(
        "pos", "buyer_id", pl.col("t").alias("ev_at"), pl.col("ev_state"),
        pl.col("ev_state").shift(1).over("buyer_id").alias("ev_prev"),
    ).sort("pos")
    # Both sides are sorted by pos just above (polars cannot verify it per group).
    joined = messages.select("pos", "buyer_id", "t").sort("pos").join_asof(
        ev, on="pos", by="buyer_id", strategy="backward", check_sortedness=False)
    derived = pl.when(pl.col("ev_at").is_null()).then(None) \
        .when(pl.col("ev_at") >= pl.col("t")).then(pl.col("ev_prev")) \
        .otherwise(pl.col("ev_state"))
    state = joined.select(derived.alias("s"))["s"]
    return pl.select(pl.lit(own).fill_null(pl.lit(state))).to_series()


def buyer_messages(messages: pl.DataFrame) -> pl.DataFrame:
    """The messages a reply can name (buyers' own), keyed by message_id as `reply_to`."""
    return messages.filter(pl.col("initiated_by") == "buyer").select(
        pl.col("message_id").alias("reply_to"), pl.col("buyer_id").alias("b_buyer"),
        pl.col("t").alias("b_t"), pl.col("pos").alias("b_pos"), pl.col("body").alias("b_body"))


def quotes(messages: pl.DataFrame, answered: pl.DataFrame, horizon: float) -> pl.Series:
    """Whether each message quotes the buyer message it names (None: that message is not known).

    `answered`: `buyer_messages` of the whole log. A process that judges some buyers only
    still knows every buyer message, so a reply naming another buyer's message is False,
    as in a single pass, not unknown."""
    out: list[Optional[bool]] = [False] * len(messages)
    replies = messages.with_row_index("row").filter(pl.col("reply_to").is_not_null())
    if replies.is_empty():
        return pl.Series(out, dtype=pl.Boolean)
    buyer_msgs = answered
    joined = replies.select("row", "pos", "reply_to", "buyer_id", "body", "clock").join(
        buyer_msgs, on="reply_to", how="left")
    normalised: dict[str, str] = {}
    for row, pos, _reply, buyer, body, clock, b_buyer, b_t, b_pos, b_body in joined.iter_rows():
        if b_pos is None or b_pos > pos or b_t < clock - horizon:
            out[row] = None  # the answered message is not (or no longer) in the history
            continue
        if b_buyer != buyer:
            out[row] = False
            continue
        text = normalised.get(b_body)
        if text is None:
            text = normalised[b_body] = normalise_for_quote(b_body)
        out[row] = True if not text else text in normalise_for_quote(body)
    return pl.Series(out, dtype=pl.Boolean)


def earlier_per_key(frame: pl.DataFrame) -> pl.DataFrame:
    """For each row of `frame` (key, def, poss, message_id, t; in log order), over the earlier
    rows of its key: `count` of def rows, `maybe` of poss rows, `first` def row's message_id,
    and `touch`, the latest t of a def or poss row (null when none).

    Window functions over a key with many small groups (orders) cost about a microsecond a
    row each; this sorts once by key and scans: running sums less each group's base, and the
    running maximum made segmented by offsetting each group's dense ranks of t above the last's."""
    d, q = pl.col("def").cast(pl.Int64), pl.col("poss").cast(pl.Int64)
    start = (pl.col("key") != pl.col("key").shift(1)).fill_null(True)
    ranks = frame["t"].unique().sort()
    span = len(ranks) + 1
    s = frame.select("key", "def", "poss", "message_id", "t").with_row_index("row").sort("key", maintain_order=True)
    s = s.with_columns(start=start, cd=d.cum_sum() - d, cq=q.cum_sum() - q,
                       rank=pl.col("t").rank("dense").cast(pl.Int64))
    s = s.with_columns(base=pl.col("start").cast(pl.Int64).cum_sum() * span)
    s = s.with_columns(count=pl.col("cd") - pl.when("start").then("cd").forward_fill(),
                       maybe=pl.col("cq") - pl.when("start").then("cq").forward_fill(),
                       mark=pl.when(pl.col("def") | pl.col("poss")).then(pl.col("base") + pl.col("rank"))
                       .otherwise(pl.col("base")))
    s = s.with_columns(
        # Only one row of a key is its first def; the fill reaches back no further than it.
        first=pl.when(pl.col("count") > 0).then(
            pl.when(pl.col("def") & (pl.col("count") == 0)).then(pl.col("message_id")).forward_fill()),
        seen=pl.when(pl.col("start")).then(pl.col("base")).otherwise(pl.col("mark").shift(1)).cum_max()
        - pl.col("base"))
    touch = pl.when(pl.col("seen") > 0).then(pl.col("seen") - 1)
    return s.sort("row").select("count", "maybe", "first",
                                pl.lit(ranks).gather(touch).alias("touch") if len(ranks) else pl.lit(None, pl.Float64).alias("touch"))


def prior_counts(messages: pl.DataFrame, spec, counting: pl.Expr, possible: pl.Expr,
                 horizon: float) -> pl.DataFrame:
    """(count, first, possible) before each message for one prior_count detector."""
    key = "order_id" if spec.scope == "order" else "buyer_id"
    frame = messages.select(
        "pos", "message_id", "t", "clock", pl.col(key).alias("key"),
        counting.alias("def"), possible.alias("poss"))
    frame = frame.hstack(earlier_per_key(frame))
    reset = (frame["touch"] < frame["clock"] - horizon).fill_null(False)
    flagged = frame.filter(reset)["key"].unique()
    out = frame.select("count", "first", "maybe")
    if flagged.is_empty():
        return out
    counts, firsts, maybes = (out[c].to_list() for c in ("count", "first", "maybe"))
    state: dict[str, list] = {}
    rows = frame.with_row_index("row").filter(pl.col("key").is_in(flagged.implode()))
    for row, mid, t, clock, k, is_def, is_poss in rows.select(
            "row", "message_id", "t", "clock", "key", "def", "poss").iter_rows():
        s = state.get(k)
        if s is not None and s[3] < clock - horizon:
            s = None
        counts[row], firsts[row], maybes[row] = (s[0], s[1], s[2]) if s is not None else (0, None, 0)
        if is_def or is_poss:
            if s is None:
                s = [0, None, 0, t]
            if is_def:
                s[0] += 1
                s[1] = s[1] or mid
            else:
                s[2] += 1
            s[3] = t if t > s[3] else s[3]
            state[k] = s
    return pl.DataFrame({"count": counts, "first": firsts, "maybe": maybes},
                        schema={"count": pl.Int64, "first": pl.String, "maybe": pl.Int64})
