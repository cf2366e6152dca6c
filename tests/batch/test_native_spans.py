"""Spans the batch engine writes natively must be what the per-record detectors print."""
from __future__ import annotations

import polars as pl
from hypothesis import example, given, settings, strategies as st

from engine.batch.pipeline import _DAY_US, _tenths

_TIE = _DAY_US // 20  # elapsed times halfway between two tenths of a day


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(
    st.integers(min_value=-3 * _DAY_US, max_value=1200 * _DAY_US),
    st.integers(min_value=0, max_value=999).map(lambda k: k * _DAY_US // 10 + _TIE),  # exact ties
    st.integers(min_value=0, max_value=40 * 86_400).map(lambda s: s * 1_000_000),  # whole seconds
), min_size=1, max_size=50))
@example([_TIE, 3 * _TIE, 0, _DAY_US, 999 * _DAY_US + _DAY_US - 1, -1])
def test_native_tenths_of_a_day_are_pythons_or_left_to_python(elapsed):
    out = pl.select(_tenths(pl.lit(pl.Series(elapsed, dtype=pl.Int64)))).to_series().to_list()
    for gap, text in zip(elapsed, out):
        if text is not None:
            assert text == f"{gap / _DAY_US:.1f}"
        else:  # only where Python's digits of the double may differ from the exact rounding
            assert gap < 0 or gap >= 1000 * _DAY_US or (gap * 10) % _DAY_US * 2 == _DAY_US
