"""Content detectors over whole columns: a native mask, then the exact Python pattern.

For a batch of messages this computes what `engine.detectors.run_detector`
computes one message at a time, value and quoted span alike. Each text
detector first runs a sound superset of its patterns (engine.batch.superset)
over the column in native code; the exact Python code of `engine.detectors`
then runs only on the rows the mask lets through. Text views (the readable
body of an HTML message, link targets) are computed in Python only for the
rows that have HTML.
"""
from __future__ import annotations

import functools
import re
from functools import cached_property
from typing import Callable, Optional

import polars as pl

from .. import detectors
from ..detectors import (_CLOCK, _HREF, _HTML_HINT, _URL, OnlyPatternsDetector, PatternDetector, PatternTimeout,
                         PhrasesDetector, UrlDetector, _host_matches, _url_host, body_text)
from .superset import FOLD_DOUBT_PATTERN, superset_pattern


def fold_doubt(column: pl.Series) -> pl.Series:
    """Rows holding a character that only Python's IGNORECASE folds (engine.batch.superset)."""
    return column.str.contains(FOLD_DOUBT_PATTERN).fill_null(False)


def _mask(column: pl.Series, patterns: list[tuple[str, int]]) -> pl.Series:
    """Rows where any of the (Python pattern, flags) may match: a superset, never fewer."""
    if not len(column):
        return pl.Series(dtype=pl.Boolean)
    combined = _combined(tuple(patterns))
    if combined is None:
        return pl.Series(values=[True] * len(column), dtype=pl.Boolean)
    # One pass of Rust's regex over the column for all the patterns (an alternation of
    # supersets is a superset of the union); each keeps its own flags inside its group.
    return column.str.contains(combined).fill_null(False)


@functools.cache
def _combined(patterns: tuple[tuple[str, int], ...]) -> Optional[str]:
    parts = []
    doubt = False
    for pattern, flags in patterns:
        rust = superset_pattern(pattern, flags)
        if rust is None:
            return None
        parts.append(f"(?:{rust})")
        doubt = doubt or bool(flags & re.IGNORECASE)
    if doubt:
        parts.append(f"(?:{FOLD_DOUBT_PATTERN})")
    return "|".join(parts)


class Views:
    """The text views of a batch of messages (columns), as engine.detectors.TextViews gives
    them. Each view is computed on first use: subject-only detectors never parse HTML."""

    def __init__(self, subject: pl.Series, body: pl.Series):
        self.subject = subject
        self.html = body
        self._lists: dict[str, list] = {}
        self._doubts: dict[str, pl.Series] = {}

    @cached_property
    def body(self) -> pl.Series:
        bodies = self.values("html")
        texts = list(bodies)
        for i in _mask(self.html, [(_HTML_HINT.pattern, _HTML_HINT.flags)]).arg_true().to_list():
            if _HTML_HINT.search(bodies[i]):
                texts[i] = body_text(bodies[i])
        return pl.Series(texts, dtype=pl.String)

    @cached_property
    def text(self) -> pl.Series:
        return pl.select(pl.concat_str([pl.lit(self.subject), pl.lit("\n"), pl.lit(self.body)])).to_series()

    @cached_property
    def links(self) -> pl.Series:
        bodies = self.values("html")
        links = [""] * len(bodies)
        for i in _mask(self.html, [(_HREF.pattern, _HREF.flags)]).arg_true().to_list():
            links[i] = "\n".join(_HREF.findall(bodies[i]))
        return pl.Series(links, dtype=pl.String)

    def column(self, name: str) -> pl.Series:
        return getattr(self, name)

    def doubt(self, name: str) -> pl.Series:
        """fold_doubt() of a view, computed once for all the detectors that read it (a pass
        over the whole column costs about as much as a detector's own)."""
        found = self._doubts.get(name)
        if found is None:
            found = self._doubts[name] = fold_doubt(self.column(name))
        return found

    def values(self, name: str) -> list:
        found = self._lists.get(name)
        if found is None:
            found = self._lists[name] = self.column(name).to_list()
        return found


def _each_distinct(texts: list, rows: list, check: Callable[[str], tuple]) -> dict:
    """check() once per distinct text among the rows (templated messages repeat)."""
    seen: dict = {}
    out = {}
    for i in rows:
        text = texts[i]
        found = seen.get(text)
        if found is None:
            found = seen[text] = check(text)
        out[i] = found
    return out


# The rows (of the batch) where a detector found something, with its (value, span): every
# other row of the batch is (False, ""). Sparse, so that no step is a Python loop per row.
Result = dict


def _timed(match: Callable[[], tuple]) -> tuple:
    """One message's exact matching under the pattern time limit (engine.detectors): a
    pattern that backtracks without end makes the fact unknown, never a hang."""
    timed = _CLOCK.start()
    try:
        return match()
    except PatternTimeout:  # what run_detector says then
        return None, f"pattern matching stopped after {detectors.PATTERN_TIME_LIMIT:g} s (time limit)"
    finally:
        if timed:
            _CLOCK.stop()


def _starts(column: pl.Series, patterns: list[tuple[str, int]], doubt: Optional[pl.Series] = None) -> pl.Series:
    """Per row, where the exact pattern can first match, as a byte offset (null: nowhere).

    The superset matches wherever the Python pattern does, at the same start, so its
    leftmost match is at or before the Python one's. Under IGNORECASE a row holding a
    character only Python folds may match the superset nowhere near the Python match:
    such rows start at 0, as do all rows when the patterns have no superset. `doubt` is the
    column's fold_doubt(), if known."""
    combined = _combined(tuple(patterns))
    if combined is None:
        return pl.Series(values=[0] * len(column), dtype=pl.UInt32)
    starts = column.str.find(combined)
    if any(flags & re.IGNORECASE for _, flags in patterns):
        doubt = fold_doubt(column) if doubt is None else doubt
        starts = pl.select(pl.when(doubt).then(pl.lit(0, dtype=starts.dtype)).otherwise(starts)).to_series()
    return starts


def _regex_detector(spec, views: Views) -> Result:
    patterns = [(p, spec._flags) for p in spec._alternative_patterns()]
    folded = bool(spec._flags & re.IGNORECASE)
    starts = pl.DataFrame([_starts(views.column(name), patterns, views.doubt(name) if folded else None).alias(f"f{k}")
                           for k, name in enumerate(spec.fields)])
    candidates = starts.with_row_index("row").filter(pl.any_horizontal(pl.all().exclude("row").is_not_null()))
    texts = [views.values(name) for name in spec.fields]
    regex = spec.regex
    found: Result = {}

    def first_match(i: int, offsets: list) -> tuple:
        for column, at in zip(texts, offsets):
            if at is None:
                continue
            text = column[i]
            # The offset is in UTF-8 bytes; the search wants characters. Starting there skips the
            # text before it, which is most of the exact pattern's work.
            match = regex.search(text, at if text.isascii() else len(text.encode()[:at].decode()))
            if match:
                return True, match.group(0).strip()
        return False, ""

    for i, *offsets in candidates.iter_rows():
        value, span = _timed(lambda: first_match(i, offsets))
        if (value, span) != (False, ""):
            found[i] = (value, span)
    return found


def _only_patterns(spec: OnlyPatternsDetector, views: Views) -> Result:
    if len(spec.fields) == 1:
        joined = views.column(spec.fields[0])
    else:
        joined = pl.select(pl.concat_str([pl.lit(views.column(f)) for f in spec.fields], separator="\n")).to_series()
    flags = spec._flags
    # A text counts only if a required pattern matches (when there are any) and some pattern
    # matches: the required ones are the rarer, and either mask alone is a superset.
    mask = _mask(joined, [(p, flags) for p in (spec.required_patterns or spec.patterns)])
    rows = mask.arg_true().to_list()
    checked = _each_distinct(joined.filter(mask).to_list(), range(len(rows)),
                             lambda text: _timed(lambda: spec.check(text)))
    return {rows[k]: found for k, found in checked.items() if found != (False, "")}


def _urls(spec: UrlDetector, views: Views) -> Result:
    candidates = None
    for name in spec.fields:
        m = _mask(views.column(name), [(_URL.pattern, _URL.flags)])
        candidates = m if candidates is None else candidates | m
    texts = [views.values(name) for name in spec.fields]
    found: Result = {}
    for i in candidates.arg_true().to_list():
        url = _first_offsite(spec, [column[i] for column in texts])
        if url is not None:
            found[i] = (True, url)
    return found


def _first_offsite(spec: UrlDetector, texts: list[str]) -> Optional[str]:
    for text in texts:
        for url in _URL.findall(text):
            host = _url_host(url)
            if spec.only_hosts and not _host_matches(host, spec.only_hosts):
                continue
            if not _host_matches(host, spec.allowed_hosts):
                return url
    return None


TEXT_KINDS: dict[type, Callable[..., Result]] = {
    PatternDetector: _regex_detector,
    PhrasesDetector: _regex_detector,
    OnlyPatternsDetector: _only_patterns,
    UrlDetector: _urls,
}
