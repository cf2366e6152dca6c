"""The vocabulary scorer: weighted phrases and features → one score per category.

Every phrase is matched in every language at once: a message's language need
not be known (or detected correctly) for its phrases to count, and phrases of
different languages rarely collide.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..prefilter import LiteralIndex, fold, required_literals
from .config import Vocabulary


def phrase_regex(phrase: str) -> str:
    """A phrase as a regex: any white space between words, word edges at ASCII letters, `*` = stem."""
    stem = phrase.endswith("*")
    words = [re.escape(w) for w in phrase.rstrip("*").split()]
    body = r"\s+".join(words)
    first, last = phrase[:1], phrase.rstrip("*")[-1:]
    end = "" if stem else (r"(?!\w)" if last.isascii() and last.isalnum() else "")
    if first.isascii() and first.isalnum():
        # "not after a word character", asserted just after the first letter: the same
        # matches as a leading (?<!\w), but the pattern starts with a literal, which
        # lets the regex engine skip ahead to it (about 2.4x faster a search).
        body = body[0] + r"(?<!\w.)" + body[1:]
    return body + (r"\w*" if stem else "") + end


@dataclass(frozen=True)
class Score:
    value: float
    # (weight, quoted span or feature name), strongest first
    evidence: tuple[tuple[float, str], ...]


class VocabularyScorer:
    """All categories' phrases behind one literal prefilter.

    Each distinct regex (a phrase used by several categories or languages is
    one regex) is reduced to the literals any match must contain
    (engine.prefilter); one RE2 pass over the case-folded text tells which can
    match at all, and only those run their Python regex, once per text. The
    prefilter is sound (it may say "maybe", never a wrong "no"), so the scores
    are exactly those of trying every phrase.
    """

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        regexes: dict[str, int] = {}          # pattern source → regex id
        self._regexes: list[re.Pattern] = []
        # regex id → its uses: (category, label, weight), in vocabulary order
        self._uses: list[list[tuple[str, str, float]]] = []
        self._categories = [cat.value for cat in vocabulary.categories]
        for cat, cv in vocabulary.categories.items():
            labels: set[str] = set()  # a label counts once per category, at its first weight
            for group in cv.terms:
                sources = [(p, phrase_regex(p)) for phrases in group.phrases.values() for p in phrases]
                sources += [(p, p) for p in group.regex]
                for label, source in sources:
                    if label in labels:
                        continue
                    labels.add(label)
                    rid = regexes.get(source)
                    if rid is None:
                        rid = regexes[source] = len(self._regexes)
                        self._regexes.append(re.compile(source, re.I))
                        self._uses.append([])
                    self._uses[rid].append((cat.value, label, group.weight))
        self._literals = LiteralIndex()
        by_set: dict[int, list[int]] = {}
        self._unfiltered: list[int] = []  # regexes without a required literal: always tried
        for source, rid in regexes.items():
            literals = required_literals(source, re.I)
            if literals is None:
                self._unfiltered.append(rid)
            else:
                by_set.setdefault(self._literals.register(literals), []).append(rid)
        self._by_set = by_set
        self._signals = {cat.value: dict(cv.signals) for cat, cv in vocabulary.categories.items()}

    def _maybe(self, text: str) -> list[int]:
        """Ids of the regexes that may match `text` (sorted: a fixed search order)."""
        found = list(self._unfiltered)
        if self._by_set:
            for index in self._literals.matching(fold(text)):
                found.extend(self._by_set[index])
        found.sort()
        return found

    def score(self, text: str, features: set[str]) -> dict[str, Score]:
        found: dict[str, list[tuple[float, int, str]]] = {c: [] for c in self._categories}
        for rid in self._maybe(text):
            m: Optional[re.Match] = self._regexes[rid].search(text)
            if m:
                span = " ".join(m.group(0).split())
                for category, _label, weight in self._uses[rid]:
                    found[category].append((weight, m.start(), span))
        out = {}
        for category, hits in found.items():
            for name, weight in self._signals[category].items():
                if name in features:
                    hits.append((weight, len(text), name))
            # Strongest first, then in text order: the same message always gives the same evidence.
            hits.sort(key=lambda e: (-e[0], e[1], e[2]))
            total = sum(w for w, _, _ in hits)  # summed in a fixed order: bit-identical every run
            out[category] = Score(total, tuple((w, span) for w, _, span in hits))
        return out
