"""The batch renderer writes JSON strings natively (engine.batch.pipeline._json_string): its
escaping must be orjson's, which the streaming renderer uses, character for character."""
from __future__ import annotations

import orjson
import polars as pl
from hypothesis import given, settings, strategies as st

from engine.batch.pipeline import _evidence, _json_string

# Every character class that escaping treats specially: controls, quote, backslash, DEL,
# the JavaScript line separators, non-BMP characters (surrogates cannot reach a polars string).
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_SPECIAL = st.text(st.sampled_from(["\x00", "\x1f", "\n", "\t", '"', "\\", "\x7f", "\u2028", "\u2029", "é",
                                    "😀", "\ufeff", "/", "<", "a"]), max_size=20)


@settings(max_examples=300, derandomize=True)
@given(st.lists(st.one_of(_TEXT, _SPECIAL), min_size=1, max_size=20))
def test_json_string_is_orjsons(texts):
    got = pl.select(_json_string(pl.lit(pl.Series(texts, dtype=pl.String)))).to_series().to_list()
    assert got == [orjson.dumps(t).decode() for t in texts]


def test_evidence_lists_the_facts_with_a_span_in_order():
    frame = pl.DataFrame({"a": ["x", "", None, 'q"'], "b": ["", "", "y", "z\n"]})
    got = frame.select(_evidence((("first", "a"), ("second", "b")))).to_series().to_list()
    expected = []
    for a, b in frame.iter_rows():
        own = {name: value for name, value in (("first", a), ("second", b)) if value}
        expected.append(',"evidence":' + orjson.dumps(own).decode() if own else "")
    assert got == expected
