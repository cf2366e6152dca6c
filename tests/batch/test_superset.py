"""engine.batch.superset: the Rust-regex masks match at least what Python's `re` matches.

The batch engine runs a policy pattern's translation (polars `str.contains`)
over a whole column and the exact Python pattern only on the rows it selects,
so a text Python matches and the mask misses would be a silently missed
finding. Checked here: every regex the shipped policies' detectors use (and
the detectors' own HTML and URL patterns), with the flags the detectors
compile them with, on texts generated from the patterns themselves and then
disturbed (case, case-fold specials such as 'ſ', the Kelvin sign, 'İ', 'ß',
white space Python and Rust see differently, digits of other scripts,
combining marks); Python's \\w, \\s, \\d and their negations against the
translated classes on every code point; case-insensitive literals against
Python's case folding on every cased character; and the patterns the
translation must refuse (None), which the caller then treats as matching
every row.
"""
from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import _sre
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from engine import load_policies
from engine.batch.superset import FOLD_DOUBT, needs_fold_doubt, superset_pattern
from engine.batch.texts import _mask
from engine.detectors import _HREF, _HTML_HINT, _URL, OnlyPatternsDetector, _RegexSpec

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@cache
def shipped_patterns() -> tuple[tuple[str, int], ...]:
    """(pattern, flags) of every regex a shipped detector runs, as the detectors compile them."""
    policies = load_policies(POLICIES)
    found = set()
    for family in policies.families.values():
        for version in family.versions:
            for _, spec in version.detectors_used.values():
                if isinstance(spec, _RegexSpec):
                    found.update((p, spec._flags) for p in spec._alternative_patterns())
                if isinstance(spec, OnlyPatternsDetector):
                    found.update((p, spec._flags) for p in spec.required_patterns)
    found.update((r.pattern, r.flags) for r in (_HREF, _HTML_HINT, _URL))
    return tuple(sorted(found))


def test_the_shipped_policies_have_patterns():
    patterns = shipped_patterns()
    assert len(patterns) > 100
    assert any(flags & re.IGNORECASE for _, flags in patterns)
    assert any(not flags & re.IGNORECASE for _, flags in patterns)


translate = cache(superset_pattern)


def assert_superset(pattern: str, flags: int, texts: list[str], mask: bool = True) -> None:
    """Where Python's pattern matches, the translation matches (or, with IGNORECASE passed
    in flags, the text holds a FOLD_DOUBT character, which _mask lets through), and
    texts._mask selects the row."""
    compiled = re.compile(pattern, flags)
    matched = [i for i, text in enumerate(texts) if compiled.search(text)]
    if not matched:
        return
    column = pl.Series([texts[i] for i in matched], dtype=pl.String)
    rust = translate(pattern, flags)
    hits = column.str.contains(rust).to_list() if rust is not None else [True] * len(column)
    for text, hit in zip(column, hits):
        doubt = needs_fold_doubt(flags) and any(c in FOLD_DOUBT for c in text)
        assert hit or doubt, (pattern, flags, rust, text)
    if mask:
        assert _mask(column, [(pattern, flags)]).all(), (pattern, flags)


# ---- texts ----------------------------------------------------------------------------------

FOLD_SPECIALS = {
    "k": ["\u212a"], "K": ["\u212a"], "s": ["\u017f"], "S": ["\u017f"], "i": ["\u0130", "\u0131"],
    "I": ["\u0130", "\u0131"], "a": ["\u00e5", "\u212b"], "e": ["\u00e9", "e\u0301"], "o": ["\u043e"],
    "c": ["\u0441"], "t": ["\u0442"], "u": ["\u00b5", "\u00fc"], "ss": ["\u00df", "\u1e9e"], "st": ["\ufb05", "\ufb06"],
    " ": ["\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2028", "\u2029", "\u3000", "\u180e", "\u200b", "\t"],
    "0": ["\u0660", "\u0966", "\uff10", "\U0001d7ce"], "1": ["\u0661", "\u00b9", "\u2460", "\U00010d41"],
    "5": ["\u0665", "\u0e55", "\u2164"], "-": ["\u2010", "\u2212"], "'": ["\u2019"], "_": ["\u203f"],
}
EXTRA = ["", " ", "\n", "\u0301", "\u0345", "ß", "ſ", "\u212a", "İ", "ı", "Σς", "ΐ", "\x1c", "\x85", "\u2028",
         "\u1c89", "\ua7cb", "\U00010d40", "٣", "é", "Ω", "\u0000", "<", ">", '"', "'", "\\", "€"]


@st.composite
def disturbed(draw, text: str) -> str:
    """The text with some characters swapped for look-alikes Python and Rust may read differently."""
    out = []
    i = 0
    while i < len(text):
        two = text[i:i + 2].lower()
        c = text[i]
        roll = draw(st.integers(0, 9))
        if roll == 0 and two in FOLD_SPECIALS:
            out.append(draw(st.sampled_from(FOLD_SPECIALS[two])))
            i += 2
            continue
        if roll <= 1 and c in FOLD_SPECIALS:
            out.append(draw(st.sampled_from(FOLD_SPECIALS[c])))
        elif roll == 2:
            out.append(c.swapcase())
        elif roll == 3:
            out.append(c + draw(st.sampled_from(EXTRA)))
        else:
            out.append(c)
        i += 1
    return draw(st.sampled_from(EXTRA)) + "".join(out) + draw(st.sampled_from(EXTRA))


any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def texts_for(draw, pattern: str, flags: int) -> list[str]:
    """Texts the pattern matches (hypothesis' from_regex), disturbed, and arbitrary ones."""
    base = draw(st.lists(st.from_regex(re.compile(pattern, flags)), min_size=1, max_size=4))
    texts = base + [draw(disturbed(t)) for t in base]
    texts += draw(st.lists(any_text, max_size=3))
    texts += draw(st.lists(st.sampled_from(EXTRA).map(lambda c, b=base[0]: b.replace(" ", c)), max_size=2))
    return texts


# ---- the shipped patterns -------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.filter_too_much])
@given(data=st.data())
def test_shipped_patterns_superset(data):
    chosen = data.draw(st.lists(st.sampled_from(shipped_patterns()), min_size=1, max_size=8), label="patterns")
    texts = [t for pattern, flags in chosen for t in data.draw(texts_for(pattern, flags), label=pattern)]
    # Every shipped pattern on the texts made for these (they share words and markup); the
    # caller's whole mask (texts._mask) for the patterns the texts were made for.
    for pattern, flags in shipped_patterns():
        assert_superset(pattern, flags, texts, mask=(pattern, flags) in chosen)


@pytest.mark.parametrize("pattern,flags", shipped_patterns(), ids=lambda v: v if isinstance(v, str) else str(v))
def test_shipped_pattern_translates(pattern, flags):
    """Each translation compiles in polars (a pattern it cannot translate would be None:
    sound, but a mask that saves nothing)."""
    rust = superset_pattern(pattern, flags)
    assert rust is not None, pattern
    pl.Series(["x"]).str.contains(rust)


# ---- patterns beyond the shipped ones ---------------------------------------------------------

TRICKY = [
    (r"(?i)straße", 0), (r"(?i:k)elvin", 0), (r"(?i)i", 0), (r"\u0131", re.I), (r"[\u0100-\u0200]", re.I),
    (r"\u017f", re.I), (r"\N{LATIN SMALL LETTER LONG S}", re.I), (r"[^\u0264]", re.I), (r"[^\u1c89]x", re.I),
    (r"\W", 0), (r"\W", re.I), (r"\D", 0), (r"[^\w-]", 0), (r"[^\d]", 0), (r"[^\W\d]", 0), (r"\S+", 0),
    (r"[^\s]", re.I), (r"(a)\1", 0), (r"(?P<q>['\"]).*?(?P=q)", 0), (r"a++b", 0), (r"(?>ab|a)c", 0),
    (r"(?s)a.b", 0), (r"a.b", re.S), (r"a.b", 0), (r"\Aab\Z", 0), (r"^ab$", re.M), (r"(?x) a \s b # comment", 0),
    (r"x{2,5}?y", 0), (r"(?-i:A)b", re.I), (r"(?i)a(?-i:B)", 0), (r"[^a]", re.I), (r"[^k]", re.I),
    (r"[^\x00-\x7f]", re.I), (r"\d{3}", re.ASCII), (r"\w+", re.ASCII | re.I), (r"café", re.I), (r"Ω", re.I),
]


@pytest.mark.parametrize("pattern,flags", TRICKY)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_tricky_patterns_superset(pattern, flags, data):
    assert_superset(pattern, flags, data.draw(texts_for(pattern, flags)))


@pytest.mark.parametrize("pattern,flags,text", [
    ("(?i)i", 0, "\u0130"),  # the pattern alone turns IGNORECASE on: the mask must allow for İ itself
    ("(?i:i)", 0, "\u0131"),
    (r"\u0131", re.I, "I"),  # the case-fold partner written as an escape, not as itself
    (r"[\u0100-\u0200]", re.I, "i"),  # ... or inside a range
    (r"\W", 0, "\u1c89"),  # a letter in Rust's Unicode tables, unassigned in Python's
    (r"[^\w-]", 0, "\ua7cb"),
    (r"\D", 0, "\U00010d40"),  # a digit in Rust's tables only
    (r"[^\u0264]", re.I, "\ua7cb"),  # its case partner, in Rust's tables only
    (r"[^\u1c89]", re.I, "\u1c8a"),
])
def test_regressions(pattern, flags, text):
    assert re.search(pattern, text, flags)
    assert_superset(pattern, flags, [text])


@pytest.mark.parametrize("pattern,flags", [
    (r"(a)?(?(1)b|c)", 0),  # conditional groups are not translated
    ("ſ", re.I), ("x\u0130", re.I), (r"\u0130", re.I), (r"[\u0100-\u0200]", re.I), (r"(?i)[^\u03c3]", 0),
    ("", 0), ("^", 0), (r"(?=a)", 0), (r"\b", 0),  # nothing but zero-width assertions: no mask
    ("(", 0),  # not a pattern at all
])
def test_no_translation_means_every_row(pattern, flags):
    """The caller (texts._mask) then selects every row, whatever the other patterns say."""
    assert superset_pattern(pattern, flags) is None
    column = pl.Series(["", "abc", "\u0130", "x"])
    assert _mask(column, [("abc", 0), (pattern, flags)]).to_list() == [True] * 4


def test_kelvin_sign_pattern_is_sound():
    """K (U+212A) folds to k in both engines: it needs no doubt and must still be sound."""
    assert_superset(r"\N{KELVIN SIGN}x", re.I, ["kx", "KX", "\u212ax", "\u212aX"])


def test_mask_of_an_empty_column():
    assert _mask(pl.Series([], dtype=pl.String), [("a", 0)]).to_list() == []
    assert _mask(pl.Series([], dtype=pl.String), [(r"(a)?(?(1)b|c)", 0)]).to_list() == []


# ---- every code point -----------------------------------------------------------------------


@cache
def every_code_point() -> str:
    return "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@cache
def _code_point_column() -> tuple[pl.Series, np.ndarray]:
    everything = every_code_point()
    return pl.Series(list(everything)), np.frombuffer(everything.encode("utf-32-le"), dtype=np.uint32)


def _python_class(cls: str, flags: int) -> np.ndarray:
    """Per code point (in every_code_point order): whether the one-character class matches it."""
    everything = every_code_point()
    marked = [np.frombuffer(re.sub(cls, mark, everything, flags=flags).encode("utf-32-le"), dtype=np.uint32)
              for mark in ("\x00", "\x01")]
    return (marked[0] == 0) & (marked[1] == 1)


def _rust_set(rust: str, text: str) -> set:
    return set(pl.Series([text]).str.extract_all(rust).to_list()[0])


CLASSES = [r"\w", r"\s", r"\d", r"\W", r"\S", r"\D", r"[^\w\-]", r"[^\s<>]", r"[^\W\d]", r"[\D\s]", "."]


@pytest.mark.parametrize("flags", [0, re.I], ids=["cased", "ignorecase"])
def test_classes_on_every_code_point(flags):
    column, codes = _code_point_column()
    rust = pl.DataFrame({"c": column}).select(
        pl.col("c").str.contains("^(?:" + superset_pattern(cls, flags) + ")$").alias(str(i))
        for i, cls in enumerate(CLASSES))
    fold = np.isin(codes, [ord(c) for c in FOLD_DOUBT])
    for i, cls in enumerate(CLASSES):
        python, translated = _python_class(cls, flags), rust[str(i)].to_numpy()
        missed = codes[python & ~translated & ~(fold & needs_fold_doubt(flags))]
        assert not len(missed), (cls, [hex(c) for c in missed[:20]])
        if cls in (r"\w", r"\s", r"\d"):
            # exact where Python's Unicode database knows the character
            extra = codes[translated & ~python & ~fold]
            assert all(unicodedata.category(chr(c)) == "Cn" for c in extra), cls


@cache
def cased_characters() -> tuple[str, str]:
    """(characters with a case partner in Python or in Rust's tables, the same plus the
    letters Rust's tables know and Python's database does not)."""
    cased = set(FOLD_DOUBT)
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        related = {r for r in (c.lower(), c.upper(), c.casefold(), chr(_sre.unicode_tolower(code))) if len(r) == 1}
        if related != {c}:
            cased |= related | {c}
    unknown = "".join(c for c in every_code_point() if unicodedata.category(c) == "Cn")
    newer = _rust_set(r"[\p{Lu}\p{Ll}\p{Lt}]", unknown)
    return "".join(sorted(cased)), "".join(sorted(cased | newer))


def test_ignorecase_literals_on_every_cased_character():
    """For each cased character b: (?i)b matches in Rust whatever Python's (?i)b matches
    (FOLD_DOUBT aside), and Rust's (?i)[^b] leaves out nothing Python's (?i)[^b] matches
    (a partner Rust knows and Python does not is added back as an unassigned code point)."""
    cased, pool = cased_characters()
    column = pl.Series([pool])
    for b in pool:
        if b in FOLD_DOUBT:
            assert superset_pattern(re.escape(b), re.I) is None
            continue
        python = set(re.findall(re.escape(b), pool, re.I))
        rust = set(column.str.extract_all(superset_pattern(re.escape(b), re.I)).to_list()[0])
        assert not (python - rust) - set(FOLD_DOUBT), (hex(ord(b)), python - rust)
        # [^b]: Rust leaves out `rust`; Python leaves out `python`; the difference must be
        # characters Python's database does not know (added back) or FOLD_DOUBT ones.
        left_out = {c for c in rust - python - set(FOLD_DOUBT)}
        if b.isascii():
            assert not left_out, (b, left_out)
        else:
            assert all(unicodedata.category(c) == "Cn" for c in left_out), (hex(ord(b)), left_out)


@pytest.mark.parametrize("b", ["\u0264", "\ua7cb", "\u1c89", "\u1c8a", "\u00e9", "K", "\u212a", "\u03a9", "\u1e9e",
                               "\u0412", "\u13a0", "\uab70", "\u01c5", "\U00010d50", "\U00010d70"])
def test_ignorecase_negated_literal(b):
    """The reasoning of the test above, checked on the real negated translation."""
    _, pool = cased_characters()
    for pattern in ("[^" + re.escape(b) + "]", "[^x" + re.escape(b) + "]"):
        python = set(re.findall(pattern, pool, re.I))
        rust = _rust_set(superset_pattern(pattern, re.I), pool)
        assert not python - rust - set(FOLD_DOUBT), (pattern, sorted(hex(ord(c)) for c in python - rust))
