"""Classifier properties: inference never changes a verdict it agrees with, one message's
verdict never depends on other messages' text, classification is deterministic."""
from __future__ import annotations

import datetime as dt

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine import Message, judge_records, load_policies
from engine.classifier import Classifier, ClassifierInput, classifier_for
from engine.classifier.statistical import read_corpus

from ..conftest import POLICIES

_policies = load_policies(POLICIES)
_rows = read_corpus(POLICIES / "classifier" / "labelled_corpus.jsonl")
TZ = dt.timezone(dt.timedelta(hours=-7))

texts = st.sampled_from(_rows)


@st.composite
def raw_messages(draw, message_id="M", buyer="B1", order="111-0000001-0000001"):
    row = draw(texts)
    sent = draw(st.datetimes(min_value=dt.datetime(2017, 3, 20), max_value=dt.datetime(2025, 7, 1))).replace(tzinfo=TZ)
    anchor = draw(st.sampled_from([None, 3, 40]))
    return dict(
        message_id=message_id, order_id=order, buyer_id=buyer, sent_at=sent,
        marketplace=draw(st.sampled_from(["US", "UK", "DE"])), channel=row["channel"],
        reply_to=None, subject=row["subject"], body=row["body"],
        buyer_opted_out=draw(st.sampled_from([True, False, None])),
        delivered_at=None if anchor is None else sent - dt.timedelta(days=anchor),
        language=draw(st.sampled_from([None, row["language"]])),
        buyer_language=draw(st.sampled_from([None, "en", "de"])),
        attachments=[{"name": f"file.{k}", "kind": k} for k in row["attachments"]],
    )


def _strip_inference(verdict) -> dict:
    data = verdict.model_dump(mode="json")
    data["findings"] = [f for f in data["findings"] if not f["rule"].startswith("INFER-")]
    return data


@settings(max_examples=60)
@given(raw_messages())
def test_adding_the_inferred_category_never_changes_the_verdict(data):
    message = Message(**data)
    result = classifier_for(_policies).classify_message(message)
    assume(result.confident)
    raw = judge_records(_policies, [message], evaluator="reference")[0]
    labelled = judge_records(_policies, [Message(**{**data, "category": result.category})], evaluator="reference")[0]
    assert _strip_inference(raw)["findings"] == _strip_inference(labelled)["findings"]
    assert raw.outcome == labelled.outcome


@settings(max_examples=40)
@given(raw_messages(), st.lists(raw_messages(message_id="O", buyer="B2", order="222-0000002-0000002"), max_size=3))
def test_a_verdict_never_depends_on_other_messages_text(data, others):
    alone = judge_records(_policies, [Message(**data)], evaluator="reference")[0]
    log = [Message(**{**o, "message_id": f"O{i}"}) for i, o in enumerate(others)] + [Message(**data)]
    together = judge_records(_policies, log, evaluator="reference")[-1]
    assert alone.model_dump() == together.model_dump()


_small = _rows[::4]
_model = classifier_for(_policies).train([ClassifierInput.from_corpus(r) for r in _small], [r["category"] for r in _small])


@settings(max_examples=10)
@given(st.permutations(list(range(0, len(_rows), 60))), st.booleans())
def test_classification_is_deterministic_in_any_order(order, with_model):
    """Same input, same output, whatever came before; with or without the n-gram model
    (trained twice from the same data to show training is deterministic too)."""
    items = [ClassifierInput.from_corpus(_rows[i]) for i in order]
    base = classifier_for(_policies)
    shared = base.with_model(_model if with_model else None)
    again = base.train([ClassifierInput.from_corpus(r) for r in _small], [r["category"] for r in _small]) \
        if with_model else None
    fresh = Classifier(base.config).with_model(again)
    first = {i: shared.classify(item) for i, item in zip(order, items)}
    second = {i: fresh.classify(item) for i, item in zip(reversed(order), reversed(items))}
    assert first == second
