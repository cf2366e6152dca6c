"""Text that makes a detector fire, drawn from the detector's own data.

The exhaustive what-if needs real records for points of the fact space. A
phrase detector offers its phrases; a pattern detector offers strings sampled
from its regular expressions (a small seeded sampler over the stdlib's regex
parser; lookarounds are not modelled, so every sample is checked against the
detector's own regex and dropped when it does not match). Nothing here knows a
policy: it reads the specs it is given.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

try:  # Python 3.11+: the regex parser moved under re (sre_parse is a deprecated alias)
    from re import _constants as C
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore
    import sre_parse  # type: ignore

from .detectors import (OnlyPatternsDetector, PatternDetector, PhrasesDetector, UrlDetector)

# Characters tried for negated classes and '.', in order of preference.
_POOL = "a1/ .-e_:x9"
_MAX_EXTRA_REPEAT = 2


@dataclass(frozen=True)
class Fragment:
    """Text placed in one part of a record: `subject`, `body` (plain text) or `html` (raw markup)."""

    part: str
    text: str


def _in_class(ch: str, items) -> bool:
    for op, av in items:
        if op is C.LITERAL and ch == chr(av):
            return True
        if op is C.RANGE and av[0] <= ord(ch) <= av[1]:
            return True
        if op is C.CATEGORY:
            probe = {
                C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_SPACE: r"\s",
                C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W",
            }.get(av)
            if probe and re.match(probe, ch):
                return True
    return False


def _pick_class(items, rng: random.Random) -> str:
    if items and items[0][0] is C.NEGATE:
        rest = items[1:]
        choices = [c for c in _POOL if not _in_class(c, rest)]
        return rng.choice(choices) if choices else "a"
    choices: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            choices.append(chr(av))
        elif op is C.RANGE:
            choices.append(chr(av[0]))
        elif op is C.CATEGORY:
            choices.append({C.CATEGORY_DIGIT: "7", C.CATEGORY_NOT_DIGIT: "a", C.CATEGORY_SPACE: " ",
                            C.CATEGORY_NOT_SPACE: "a", C.CATEGORY_WORD: "a", C.CATEGORY_NOT_WORD: " "}.get(av, "a"))
    return rng.choice(choices) if choices else "a"


def _generate(parsed, rng: random.Random, out: list[str]) -> None:
    for op, av in parsed:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.NOT_LITERAL:
            out.append(next(c for c in _POOL if c != chr(av)))
        elif op is C.ANY:
            out.append(rng.choice(_POOL))
        elif op is C.IN:
            out.append(_pick_class(av, rng))
        elif op is C.BRANCH:
            _generate(rng.choice(av[1]), rng, out)
        elif op is C.SUBPATTERN:
            _generate(av[-1], rng, out)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT) or op is getattr(C, "POSSESSIVE_REPEAT", None):
            low, high, item = av
            high = low + _MAX_EXTRA_REPEAT if high is C.MAXREPEAT else min(high, low + _MAX_EXTRA_REPEAT)
            for _ in range(rng.randint(low, high)):
                _generate(item, rng, out)
        elif op is getattr(C, "ATOMIC_GROUP", None):
            _generate(av, rng, out)
        elif op is C.AT and av is C.AT_BOUNDARY and out and re.match(r"\w", out[-1][-1:]):
            out.append(" ")  # \b after a word character: the next character must not be one
        # Other anchors, ASSERT, ASSERT_NOT and group references add no text.


@lru_cache(maxsize=4096)
def regex_samples(pattern: str, ignore_case: bool, tries: int = 40, keep: int = 8) -> tuple[str, ...]:
    """Distinct strings the pattern matches (shortest first), found by seeded sampling."""
    flags = re.IGNORECASE if ignore_case else 0
    compiled = re.compile(pattern, flags)
    parsed = sre_parse.parse(pattern, flags)
    found: dict[str, None] = {}
    for seed in range(tries):
        out: list[str] = []
        try:
            _generate(parsed, random.Random(seed), out)
        except (TypeError, ValueError, IndexError):  # an unexpected construct: no sample from this try
            continue
        text = "".join(out).strip()
        if text and compiled.search(text):
            found.setdefault(text, None)
    return tuple(sorted(found, key=lambda s: (len(s), s))[:keep])


def _part_for(fields) -> Optional[str]:
    for wanted, part in (("body", "body"), ("text", "body"), ("subject", "subject"), ("html", "html"),
                         ("links", "links")):
        if wanted in fields:
            return part
    return None


def _place(part: str, text: str) -> Fragment:
    if part == "links":
        return Fragment("html", f'<a href="{text}">link</a>')
    return Fragment(part, text)


def fragments(spec) -> list[Fragment]:
    """Candidate fragments that make `spec` true on their own (possibly none)."""
    if isinstance(spec, PhrasesDetector):
        part = _part_for(spec.fields)
        return [_place(part, p) for p in spec.phrases] if part else []
    if isinstance(spec, PatternDetector):
        part = _part_for(spec.fields)
        if part is None:
            return []
        out = []
        for p in spec.patterns:
            out += [_place(part, s) for s in regex_samples(p, spec.ignore_case)[:3]]
        return out
    if isinstance(spec, UrlDetector):
        part = _part_for(spec.fields) or "body"
        hosts = [f"shop.{h}" for h in spec.only_hosts] or ["example.org", "example.net", "example.com"]
        allowed = [h.lower() for h in spec.allowed_hosts]
        urls = [f"https://{h}/page" for h in hosts
                if not any(h == a or h.endswith("." + a) for a in allowed)]
        return [_place(part, u) for u in urls]
    if isinstance(spec, OnlyPatternsDetector):
        part = _part_for(spec.fields) or "body"
        texts = []
        for p in (spec.required_patterns or spec.patterns):
            texts += list(regex_samples(p, spec.ignore_case))
        return [Fragment(part, t) for t in texts if spec.check(t)[0]]
    return []
