"""Sound superset masks for Python regular expressions, in the columnar engine's dialect.

A policy pattern is Python `re` syntax and may use look-arounds, `\\b` and
backreferences, which Rust's regex engine (the one polars runs) does not have.
`superset_pattern` rewrites a pattern into Rust syntax that matches *at least*
every text the Python pattern matches: zero-width assertions (look-arounds,
word boundaries, anchors) are dropped, backreferences become "anything",
possessive and atomic forms become ordinary ones, and character classes are
spelled with Python's own meaning (`\\w` is letters, numbers and `_`; `\\s`
includes the four information separators U+001C–U+001F). Dropping a
constraint can only let more texts through, never fewer. Rust's Unicode
tables are newer than Python's: a class that leaves out letters or digits
(`\\W`, `[^\\w-]`, `\\D`) lets through the code points Python's database
leaves unassigned, which Python reads as neither.

The mask selects the rows on which the exact Python pattern then runs, so a
detector's value and its quoted span come from Python's `re` alone; the mask
only saves the rows it rules out. Case-insensitive matching differs in a few
characters (Python's `re.IGNORECASE` equates U+0130, U+0131 and the `st`
ligatures with letters that Rust's simple case folding does not), so rows
holding any character of `FOLD_DOUBT` always pass the mask.
"""
from __future__ import annotations

import functools
import re
import re._parser as sre_parse
import unicodedata
from re._casefix import _EXTRA_CASES
from re._constants import (ANY, ASSERT, ASSERT_NOT, AT, ATOMIC_GROUP, BRANCH, CATEGORY, CATEGORY_DIGIT,
                           CATEGORY_NOT_DIGIT, CATEGORY_NOT_SPACE, CATEGORY_NOT_WORD, CATEGORY_SPACE,
                           CATEGORY_WORD, GROUPREF, IN, LITERAL, MAX_REPEAT, MAXREPEAT, MIN_REPEAT, NEGATE,
                           NOT_LITERAL, POSSESSIVE_REPEAT, RANGE, SUBPATTERN)
from typing import Optional

# Python's str classes, written for Rust's regex (inside a bracket expression).
_WORD = r"\p{L}\p{N}_"
_SPACE = r"\s\x1C-\x1F"
_CLASS = {
    CATEGORY_DIGIT: r"\p{Nd}",
    CATEGORY_WORD: _WORD,
    CATEGORY_SPACE: _SPACE,
}
_NEGATED = {
    CATEGORY_NOT_DIGIT: r"\P{Nd}",
    CATEGORY_NOT_WORD: "[^" + _WORD + "]",
    CATEGORY_NOT_SPACE: "[^" + _SPACE + "]",
}


@functools.cache
def _unassigned() -> str:
    """Code points unassigned in Python's Unicode database, as class ranges. Rust's tables are
    newer: a letter or digit added since is \\W or \\D to Python, so a class that leaves
    out Rust's letters or digits must add these back."""
    ranges, start = [], None
    for code in range(0x110001):
        if code <= 0x10FFFF and unicodedata.category(chr(code)) == "Cn":
            start = code if start is None else start
        elif start is not None:
            ranges.append(_char(start) + ("-" + _char(code - 1) if code - 1 > start else ""))
            start = None
    return "".join(ranges)

# Characters that re.IGNORECASE treats as equal to others beyond Rust's simple case folding.
# ASCII letters among them (i, s, k, ...) equate alike in both engines; the doubt is their
# non-ASCII partners, in the text (a row holding one passes the mask) or in the pattern
# (no mask is made).
_FOLDS = ({chr(c) for c in _EXTRA_CASES} | {chr(o) for v in _EXTRA_CASES.values() for o in v}
          | {"\u0130", "\u0131", "\ufb05", "\ufb06"})
FOLD_DOUBT = "".join(sorted(c for c in _FOLDS if not c.isascii()))
FOLD_DOUBT_PATTERN = "[" + "".join("\\x{%x}" % ord(c) for c in FOLD_DOUBT) + "]"


class _Unsupported(Exception):
    pass


def _char(code: int) -> str:
    c = chr(code)
    if c.isalnum() and c.isascii():
        return c
    return "\\x{%x}" % code


def _no_fold_doubt(low: int, high: int, flags: int) -> None:
    """Under IGNORECASE, a pattern character with a partner only Python's folding knows
    (written as itself or as an escape, or inside a range) leaves no sound mask."""
    if flags & re.IGNORECASE and any(low <= ord(c) <= high for c in FOLD_DOUBT):
        raise _Unsupported("case-fold partner")


def _in_class(items, flags: int) -> str:
    negate = False
    # Whether Rust's newer Unicode tables decide membership: \w and \d, and under
    # IGNORECASE the case partners of non-ASCII characters.
    by_table = False
    parts = []
    for op, av in items:
        if op is NEGATE:
            negate = True
        elif op is LITERAL:
            _no_fold_doubt(av, av, flags)
            parts.append(_char(av))
            by_table = by_table or (av > 0x7F and bool(flags & re.IGNORECASE))
        elif op is RANGE:
            _no_fold_doubt(av[0], av[1], flags)
            parts.append(_char(av[0]) + "-" + _char(av[1]))
            by_table = by_table or (av[1] > 0x7F and bool(flags & re.IGNORECASE))
        elif op is CATEGORY:
            if av in _CLASS:
                parts.append(_CLASS[av])
                by_table = by_table or av != CATEGORY_SPACE
            elif av in _NEGATED:
                extra = "" if av == CATEGORY_NOT_SPACE else _unassigned()
                parts.append("[" + _NEGATED[av] + extra + "]" if extra else _NEGATED[av])
            else:
                raise _Unsupported(av)
        else:
            raise _Unsupported(op)
    body = "".join(parts)
    if negate and by_table:
        return "[[^" + body + "]" + _unassigned() + "]"
    return ("[^" if negate else "[") + body + "]"


def _sequence(items, flags: int, folded: list) -> str:
    """`folded` collects the flags of every case-insensitive part (see superset_pattern)."""
    out = []
    if flags & re.IGNORECASE:
        folded.append(flags)
    for op, av in items:
        if op is LITERAL:
            _no_fold_doubt(av, av, flags)
            out.append(_char(av))
        elif op is NOT_LITERAL:
            _no_fold_doubt(av, av, flags)
            out.append(_in_class([(NEGATE, None), (LITERAL, av)], flags))
        elif op is ANY:
            out.append("(?s:.)" if flags & re.DOTALL else "[^\\n]")
        elif op is IN:
            out.append(_in_class(av, flags))
        elif op is CATEGORY:
            out.append(_in_class([(CATEGORY, av)], flags))
        elif op in (AT, ASSERT, ASSERT_NOT):
            continue  # zero-width: dropping it only widens the match
        elif op is BRANCH:
            out.append("(?:" + "|".join(_sequence(alt, flags, folded) for alt in av[1]) + ")")
        elif op is SUBPATTERN:
            _group, add, remove, body = av
            inner = _sequence(body, (flags | add) & ~remove, folded)
            if add & re.IGNORECASE and not flags & re.IGNORECASE:
                out.append("(?i:" + inner + ")")
            elif remove & re.IGNORECASE and flags & re.IGNORECASE:
                out.append("(?-i:" + inner + ")")
            else:
                out.append("(?:" + inner + ")")
        elif op is ATOMIC_GROUP:
            out.append("(?:" + _sequence(av, flags, folded) + ")")
        elif op in (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT):
            low, high, body = av
            inner = _sequence(body, flags, folded)
            if high == MAXREPEAT:
                bound = "{%d,}" % low
            else:
                bound = "{%d,%d}" % (low, high)
            out.append("(?:" + inner + ")" + bound)
        elif op is GROUPREF:
            out.append("(?s:.)*")
        else:
            raise _Unsupported(op)
    return "".join(out)


def superset_pattern(pattern: str, flags: int = 0) -> Optional[str]:
    """A Rust-regex pattern matching every text `pattern` matches (None: no useful mask).

    With re.IGNORECASE in `flags` the caller lets rows holding a FOLD_DOUBT character
    through (needs_fold_doubt); when only the pattern itself turns IGNORECASE on
    ("(?i)...", "(?i:...)") the returned pattern lets them through itself."""
    folded: list = []
    try:
        parsed = sre_parse.parse(pattern, flags)
        body = _sequence(parsed.data, parsed.state.flags, folded)
    except (_Unsupported, re.error, RecursionError):
        return None
    if not body:
        return None
    body = ("(?i)" if parsed.state.flags & re.IGNORECASE else "") + body
    if folded and not needs_fold_doubt(flags):
        body = "(?:" + body + ")|" + FOLD_DOUBT_PATTERN
    return body


def needs_fold_doubt(flags: int) -> bool:
    return bool(flags & re.IGNORECASE)
