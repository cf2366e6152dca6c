"""History columns of the batch engine against their plain definitions.

(A window-function version, `cum_max().over(key)` after a shift, left `touch` null on a
row after one that touched nothing, so a key whose history expired there was not seen.)"""
from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batch.history import earlier_per_key


def _by_definition(frame: pl.DataFrame) -> pl.DataFrame:
    """The definition, row by row: what the earlier rows of the same key hold."""
    out = {"count": [], "maybe": [], "first": [], "touch": []}
    state: dict = {}
    for key, is_def, is_poss, mid, t in frame.iter_rows():
        count, maybe, first, touch = state.get(key, (0, 0, None, None))
        for name, value in zip(out, (count, maybe, first, touch)):
            out[name].append(value)
        if is_def or is_poss:
            touch = t if touch is None else max(touch, t)
        state[key] = (count + is_def, maybe + is_poss, first or (mid if is_def else None), touch)
    return pl.DataFrame(out, schema={"count": pl.Int64, "maybe": pl.Int64, "first": pl.String, "touch": pl.Float64})


rows = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.booleans(), st.booleans(),
                          st.sampled_from([0.0, 1.5, 2.0, 3.25, 100.0, -7.0, 1e9])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(rows)
def test_earlier_per_key_is_the_window_definition(data):
    frame = pl.DataFrame({"key": [r[0] for r in data], "def": [r[1] for r in data], "poss": [r[2] for r in data],
                          "message_id": [f"M{i}" for i in range(len(data))], "t": [r[3] for r in data]},
                         schema={"key": pl.String, "def": pl.Boolean, "poss": pl.Boolean, "message_id": pl.String,
                                 "t": pl.Float64})
    got = earlier_per_key(frame)
    want = _by_definition(frame)
    assert got.schema == want.schema
    assert got.equals(want), (got, want)
