"""The literal prefilter never hides a match: the detectors' results are unchanged."""
from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.detectors import PatternDetector, PhrasesDetector, OnlyPatternsDetector, _URL
from engine.prefilter import fold, required_literals


def _regex_detectors(policies):
    seen = {}
    for family in policies.families.values():
        for version in family.versions:
            for _name, (key, spec) in version.detectors_used.items():
                if isinstance(spec, (PatternDetector, PhrasesDetector, OnlyPatternsDetector)):
                    seen[key] = spec
    return list(seen.values())


def _may(regex: re.Pattern, text: str) -> bool:
    literals = required_literals(regex.pattern, regex.flags)
    return literals is None or any(lit in fold(text) for lit in literals)


def test_fold_equates_what_ignorecase_equates():
    # dotted capital I, long s, Kelvin sign, final sigma, micro sign
    for pattern, text in [("ist", "İST"), ("sale", "ſALE"), ("kit", "\u212aIT"), ("σας", "ΣΑΣ"), ("μ", "µ")]:
        assert re.search(pattern, text, re.IGNORECASE)
        assert fold(pattern) in fold(text), (pattern, text)


def test_required_literals_of_shapes():
    assert required_literals(r"(?:https?://|www\.)\S+", re.I) == {"http", "www."}
    # per alternative, its most selective literal
    assert required_literals(r"(?<!\w)leave\s+a\s+review(?!\w)|rate\s+us", re.I) == {"review", "rate"}
    assert required_literals(r"(?:x)?\w+", 0) is None  # nothing is required
    assert required_literals(r"a|\d+", 0) is None  # one alternative needs no literal
    assert required_literals(r"(?:ab){2,}", 0) == {"ab"}


def test_every_shipped_detector_agrees_on_the_corpus(policies):
    lines = (orjson.loads(l) for l in open("policies/classifier/labelled_corpus.jsonl", "rb"))
    texts = []
    for item in lines:
        subject, body = item.get("subject", ""), item.get("body", "")
        texts += [subject, body, body.upper(), subject.title(), body.replace("i", "İ")]
    detectors = _regex_detectors(policies)
    assert len(detectors) >= 20
    for spec in detectors:
        for text in texts:
            if spec.regex.search(text):
                assert _may(spec.regex, text), (spec, text)
    for text in texts:
        if _URL.search(text):
            assert _may(_URL, text)


@pytest.fixture(scope="module")
def shipped_regexes(policies):
    return [spec.regex for spec in _regex_detectors(policies)] + [_URL]


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
          deadline=None)
@given(data=st.data())
def test_strings_matching_a_shipped_regex_pass_the_prefilter(shipped_regexes, data):
    regex = data.draw(st.sampled_from(shipped_regexes))
    text = data.draw(st.from_regex(regex))
    assert regex.search(text)
    assert _may(regex, text)


_PIECES = st.sampled_from(["ab", "Straße", "ist", "x", r"\w+", r"\s*", "(?:cd|ef)", "[gh]", "(?:ij)?",
                           "(?<!\\w)", "(?!\\w)", "k{2,3}", "レビュー", ".", "(?:lm|\\d)"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), parts=st.lists(st.lists(_PIECES, min_size=1, max_size=5), min_size=1, max_size=3),
       ignore_case=st.booleans())
def test_generated_patterns(data, parts, ignore_case):
    regex = re.compile("|".join("".join(p) for p in parts), re.I if ignore_case else 0)
    text = data.draw(st.from_regex(regex))
    if regex.search(text):
        assert _may(regex, text)
