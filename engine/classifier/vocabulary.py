"""The vocabulary scorer: weighted phrases and features → one score per category.

Every phrase is matched in every language at once: a message's language need
not be known (or detected correctly) for its phrases to count, and phrases of
different languages rarely collide.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Vocabulary


def phrase_regex(phrase: str) -> str:
    """A phrase as a regex: any white space between words, word edges at ASCII letters, `*` = stem."""
    stem = phrase.endswith("*")
    words = [re.escape(w) for w in phrase.rstrip("*").split()]
    body = r"\s+".join(words)
    first, last = phrase[:1], phrase.rstrip("*")[-1:]
    start = r"(?<!\w)" if first.isascii() and first.isalnum() else ""
    end = "" if stem else (r"(?!\w)" if last.isascii() and last.isalnum() else "")
    return start + body + (r"\w*" if stem else "") + end


@dataclass(frozen=True)
class _Entry:
    label: str          # the phrase as written
    regex: re.Pattern   # confirms word edges and yields the quoted span
    weight: float


_TOKEN = re.compile(r"\w+")
_STEM_KEY = 3


class _Index:
    """Finds which phrases occur without trying each one: a phrase is tried only
    when its first word is among the text's words (or its stem's first letters,
    or, for phrases not starting with a word, its literal text)."""

    def __init__(self):
        self.by_word: dict[str, list[_Entry]] = {}
        self.by_stem: dict[str, list[tuple[str, _Entry]]] = {}
        self.literal: list[tuple[str, _Entry]] = []
        self.always: list[_Entry] = []

    def add_phrase(self, phrase: str, entry: _Entry) -> None:
        lowered = " ".join(phrase.lower().split())
        words = lowered.rstrip("*").split(" ")
        first = words[0]
        is_word = bool(_TOKEN.fullmatch(first)) and first.isascii() or (
            bool(_TOKEN.fullmatch(first)) and not _has_cjk(first))
        if is_word and lowered.endswith("*") and len(words) == 1:
            if len(first) >= _STEM_KEY:
                self.by_stem.setdefault(first[:_STEM_KEY], []).append((first, entry))
                return
        elif is_word and (len(words) > 1 or not lowered.endswith("*")):
            self.by_word.setdefault(first, []).append(entry)
            return
        self.literal.append((lowered.rstrip("*"), entry))

    def candidates(self, lowered: str, tokens: set[str]) -> list[_Entry]:
        found: list[_Entry] = []
        for token in tokens:
            found.extend(self.by_word.get(token, ()))
            for stem, entry in self.by_stem.get(token[:_STEM_KEY], ()):
                if token.startswith(stem):
                    found.append(entry)
        found.extend(entry for needle, entry in self.literal if needle in lowered)
        found.extend(self.always)
        return found


def _has_cjk(text: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text)


@dataclass(frozen=True)
class Score:
    value: float
    # (weight, quoted span or feature name), strongest first
    evidence: tuple[tuple[float, str], ...]


class VocabularyScorer:
    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self._index: dict[str, _Index] = {}
        for cat, cv in vocabulary.categories.items():
            index = self._index[cat.value] = _Index()
            for group in cv.terms:
                for phrases in group.phrases.values():
                    for p in phrases:
                        index.add_phrase(p, _Entry(p, re.compile(phrase_regex(p), re.I), group.weight))
                for p in group.regex:
                    index.always.append(_Entry(p, re.compile(p, re.I), group.weight))
        self._signals = {cat.value: dict(cv.signals) for cat, cv in vocabulary.categories.items()}

    def score(self, text: str, features: set[str]) -> dict[str, Score]:
        lowered = " ".join(text.lower().split())
        tokens = set(_TOKEN.findall(lowered))
        out = {}
        for category, index in self._index.items():
            found: list[tuple[float, int, str]] = []
            seen: set[str] = set()
            for entry in index.candidates(lowered, tokens):
                if entry.label in seen:
                    continue
                m = entry.regex.search(text)
                if m:
                    seen.add(entry.label)
                    found.append((entry.weight, m.start(), " ".join(m.group(0).split())))
            for name, weight in self._signals[category].items():
                if name in features:
                    found.append((weight, len(text), name))
            # Strongest first, then in text order: the same message always gives the same evidence.
            found.sort(key=lambda e: (-e[0], e[1], e[2]))
            total = sum(w for w, _, _ in found)  # summed in a fixed order: bit-identical every run
            out[category] = Score(total, tuple((w, span) for w, _, span in found))
        return out
