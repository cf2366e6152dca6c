"""A sound literal prefilter for the text detectors.

Python's `re` tries every alternative of a phrase list at every position of a
text, so a detector with a hundred phrases costs hundreds of microseconds a
message. Most messages contain none of the phrases. So every text detector's
regular expression is reduced, once, to a set of literal strings of which any
match must contain at least one ("required literals", read from the stdlib's
own parse of the pattern). One RE2 set (a DFA, one linear pass) then tells
which detectors can match a message at all; only those run their exact
Python regex. The prefilter may say "maybe" when the regex says no, never the
reverse, so results are unchanged; `tests/unit/test_prefilter.py` checks that
on the shipped policies.

Case: texts and literals are compared after `fold`, which maps two characters
to one string whenever `re.IGNORECASE` treats them as equal, so a
case-insensitive match is never missed (a case-sensitive one is a fortiori).
"""
from __future__ import annotations

import re
import re._parser as sre_parse  # the stdlib's own regex parser (3.11, 3.12)
from re._casefix import _EXTRA_CASES  # characters IGNORECASE equates beyond lower()
from re._constants import (ASSERT, ASSERT_NOT, AT, ATOMIC_GROUP, BRANCH, LITERAL, MAX_REPEAT, MIN_REPEAT,
                           POSSESSIVE_REPEAT, SUBPATTERN)
from typing import Iterable, Optional

# Each class of characters that IGNORECASE equates (after lower()) maps to its smallest member.
_REPRESENTATIVE = {}
for _code, _others in _EXTRA_CASES.items():
    _REPRESENTATIVE[_code] = min((_code, *_others))
_TRANSLATE = {code: rep for code, rep in _REPRESENTATIVE.items() if code != rep}
_NEEDS_TRANSLATE = re.compile("[" + "".join(re.escape(chr(c)) for c in _TRANSLATE) + "]")


def fold(text: str) -> str:
    """Case-fold the way re.IGNORECASE compares: simple lower case, then the extra equivalences.

    str.lower() is the simple lower-case mapping except for U+0130 (dotted
    capital I, which IGNORECASE equates with 'i') and the final-sigma rule
    (ς and σ are one class in _EXTRA_CASES)."""
    text = text.replace("\u0130", "i").lower()
    if _NEEDS_TRANSLATE.search(text):
        text = text.translate(_TRANSLATE)
    return text


_NEUTRAL = object()  # an element that requires nothing (and breaks a literal run)


def _sequence(items) -> Optional[frozenset[str]]:
    """Required literals of a sequence of parsed regex elements, or None if none are known."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close_run():
        if run:
            # A required run stays required in pieces; "\n" never occurs inside a
            # prefilter literal because the searched text joins fields with it.
            for piece in "".join(run).split("\n"):
                if piece:
                    candidates.append(frozenset({piece}))
            run.clear()

    for op, av in items:
        if op is LITERAL:
            run.append(chr(av))
            continue
        if op in (AT, ASSERT, ASSERT_NOT):
            continue  # zero-width: the characters on either side are adjacent in any match
        close_run()
        if op is SUBPATTERN:
            found = _sequence(av[-1])
        elif op is ATOMIC_GROUP:
            found = _sequence(av)
        elif op is BRANCH:
            found = _branch(av[1])
        elif op in (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT):
            low, _high, body = av
            found = _sequence(body) if low >= 1 else None
        else:  # classes, any, backreferences: nothing required
            found = None
        if found:
            candidates.append(found)
    close_run()
    if not candidates:
        return None
    # The most selective requirement: the one whose shortest literal is longest.
    return max(candidates, key=lambda lits: (min(map(len, lits)), -len(lits)))


def _branch(alternatives) -> Optional[frozenset[str]]:
    union: set[str] = set()
    for alternative in alternatives:
        found = _sequence(alternative)
        if not found:
            return None  # one alternative may match without any literal
        union |= found
    return frozenset(union)


def required_literals(pattern: str, flags: int = 0) -> Optional[frozenset[str]]:
    """Folded literals of which every match of `pattern` contains at least one (None: unknown)."""
    try:
        parsed = sre_parse.parse(pattern, flags)
    except (re.error, RecursionError):
        return None
    found = _sequence(parsed.data)
    if not found:
        return None
    return frozenset(fold(lit) for lit in found)


def _re2_literal(text: str) -> str:
    return "".join(c if c.isalnum() else "\\x{%x}" % ord(c) for c in text)


class LiteralIndex:
    """Registered literal sets → one RE2 set; `matching(text)` gives the sets that occur."""

    def __init__(self):
        self._sets: dict[frozenset[str], int] = {}
        self._compiled = None
        self.generation = 0

    def register(self, literals: Iterable[str]) -> int:
        key = frozenset(literals)
        index = self._sets.get(key)
        if index is None:
            index = self._sets[key] = len(self._sets)
            self._compiled = None
            self.generation += 1
        return index

    def _compile(self):
        import re2  # google-re2

        options = re2.Options()
        compiled = re2.Set.SearchSet(options)
        for literals in self._sets:  # dict order = index order
            compiled.Add("|".join(_re2_literal(lit) for lit in sorted(literals)))
        compiled.Compile()
        self._compiled = compiled
        return compiled

    def matching(self, folded_text: str) -> frozenset[int]:
        compiled = self._compiled or self._compile()
        hits = compiled.Match(folded_text)  # None when nothing matches
        return frozenset(hits) if hits else frozenset()


INDEX = LiteralIndex()
