"""The generic only_patterns detector: "the text is nothing but these phrases"."""
import datetime as dt

import pytest
from pydantic import TypeAdapter, ValidationError

from engine.detectors import DetectorSpec, TextViews, run_detector
from engine.model import Message

SPEC = TypeAdapter(DetectorSpec).validate_python({
    "kind": "only_patterns", "fields": ["body"], "max_other_words": 2,
    "patterns": [r"thank(?:s| you)(?: for your (?:order|purchase))?", r"\b(?:hi|hello)\b", r"best regards"],
})


def _msg(body: str) -> Message:
    return Message(message_id="m", order_id="o", buyer_id="b", category="invoice", body=body,
                   sent_at=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))


def _run(body):
    m = _msg(body)
    return run_detector(SPEC, m, TextViews(m), None)


@pytest.mark.parametrize("body", ["Thank you for your order!", "Hi Anna, thanks! Best regards, Acme",
                                  "<p>Hello</p><p>Thank you for your purchase.</p>"])
def test_only_the_patterns(body):
    value, span = _run(body)
    assert value is True and span


@pytest.mark.parametrize("body", ["", "   ", "Hello there Anna and Bob", "Thanks! Your invoice is attached to this message."])
def test_something_else(body):
    assert _run(body) == (False, "")


def test_bad_pattern_is_refused():
    with pytest.raises(ValidationError):
        TypeAdapter(DetectorSpec).validate_python({"kind": "only_patterns", "fields": ["body"], "patterns": ["("]})


def test_required_pattern_must_match():
    spec = TypeAdapter(DetectorSpec).validate_python({
        "kind": "only_patterns", "fields": ["body"], "max_other_words": 3,
        "patterns": [r"\border\b", r"thanks"], "required_patterns": ["thanks"]})
    m = _msg("Review order now")
    assert run_detector(spec, m, TextViews(m), None) == (False, "")
    m = _msg("Thanks for the order")
    assert run_detector(spec, m, TextViews(m), None)[0] is True
