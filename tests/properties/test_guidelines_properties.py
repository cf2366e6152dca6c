"""Properties of the 2017 opt-out and 2020 guidelines families judged together (issue 3 §5)."""
from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import judge_records, load_policies
from engine.model import BuyerEvent, Message, Outcome

from ..conftest import POLICIES

GUIDELINES = "2020-contact-guidelines"
TZ = dt.timezone(dt.timedelta(hours=-7))
ORDERS = ["111-0000001-0000001", "111-0000002-0000002", "111-0000003-0000003"]
BUYERS = ["B1", "B2"]
START_2017 = dt.datetime(2017, 3, 20, tzinfo=TZ)
START_2020 = dt.datetime(2020, 11, 4, 12, tzinfo=TZ)  # a full day after the start in every US time zone
END = dt.datetime(2025, 7, 1, tzinfo=TZ)

_full = load_policies(POLICIES)


@pytest.fixture(scope="module")
def optout_only(tmp_path_factory):
    """The shipped policies without the guidelines family."""
    root = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(POLICIES, root, ignore=shutil.ignore_patterns(GUIDELINES))
    return load_policies(root)


SNIPPETS = [
    "Would you review order {oid}?", "Thank you for your order {oid}!", "Use coupon SAVE10 for 20% off.",
    "If you loved it, leave five stars.", "Visit https://shop.example.com", "Call 555-123-4567",
    "Could you update your review?", "🙂", '<img src="http://x.example/a.gif" width="1">',
    "When can we deliver order {oid}?", "Your order has shipped, tracking number 1Z9.", "",
]
SUBJECTS = ["", "Order {oid}", "[Important] Order {oid}", "Additional Information Required", "Important: delivery"]


@st.composite
def messages(draw, start=START_2017, end=END, orders=ORDERS, buyers=BUYERS, prefix="m"):
    sent = draw(st.datetimes(min_value=start.replace(tzinfo=None), max_value=end.replace(tzinfo=None))).replace(tzinfo=TZ)
    oid = draw(st.sampled_from(orders))
    body = " ".join(draw(st.lists(st.sampled_from(SNIPPETS), max_size=3))).format(oid=oid)
    anchor = draw(st.sampled_from([None, 5, 30, 31, 60]))
    lang = draw(st.sampled_from([(None, None), ("en", "en"), ("en", "de")]))
    return dict(
        message_id=f"{prefix}{draw(st.integers(0, 10**9))}", order_id=oid, buyer_id=draw(st.sampled_from(buyers)),
        sent_at=sent, marketplace=draw(st.sampled_from(["US", "US", "UK"])),
        initiated_by=draw(st.sampled_from(["seller", "seller", "seller", "buyer"])),
        channel=draw(st.sampled_from(["email", "seller_central", "request_a_review", "api"])),
        subject=draw(st.sampled_from(SUBJECTS)).format(oid=oid), body=body,
        category=draw(st.sampled_from(["review_request", "feedback_request", "delivery_scheduling", "invoice",
                                       "marketing", "shipment_confirmation", "product_customization",
                                       "proactive_customer_service", "customer_service_reply"])),
        buyer_opted_out=draw(st.sampled_from([True, False, None])),
        delivered_at=None if anchor is None else sent - dt.timedelta(days=anchor),
        language=lang[0], buyer_language=lang[1],
    )


def _log(raw: list[dict]) -> list:
    seen, out = set(), []
    for r in raw:
        if "type" in r:
            out.append(BuyerEvent(**r))
        elif r["message_id"] not in seen:  # message ids are unique within a log
            seen.add(r["message_id"])
            out.append(Message(**r))
    return out


events = st.builds(lambda t, b, s: {"type": t, "buyer_id": b, "at": s},
                   st.sampled_from(["buyer_opt_out", "buyer_opt_in"]), st.sampled_from(BUYERS),
                   st.datetimes(min_value=START_2017.replace(tzinfo=None), max_value=END.replace(tzinfo=None)).map(
                       lambda d: d.replace(tzinfo=TZ)))


def _key(v):
    return (v.outcome, sorted((f.rule, f.policy, f.version, f.outcome, f.reason) for f in v.findings))


@given(st.lists(messages(start=START_2020), min_size=1, max_size=4), st.lists(events, max_size=2))
def test_guidelines_never_relax_the_opt_out_gate(optout_only, raw, evs):
    log = _log(evs + raw)
    both = judge_records(_full, log, evaluator="reference")
    alone = judge_records(optout_only, log, evaluator="reference")
    for with_2020, without in zip(both, alone):
        assert with_2020.outcome >= without.outcome, (with_2020, without)


@given(st.lists(messages(), min_size=1, max_size=4), st.lists(events, max_size=2),
       st.lists(messages(orders=["222-0000009-0000009"], buyers=["B9"], prefix="x"), min_size=1, max_size=3),
       st.booleans())
def test_other_orders_and_buyers_never_change_a_verdict(raw, evs, others, with_event):
    extra = others + ([{"type": "buyer_opt_out", "buyer_id": "B9", "at": START_2017}] if with_event else [])
    before = judge_records(_full, _log(evs + raw), evaluator="reference")
    after = judge_records(_full, _log(evs + raw + extra), evaluator="reference")
    by_id = {v.message_id: v for v in after}
    for v in before:
        assert _key(by_id[v.message_id]) == _key(v)


@given(st.lists(messages(), min_size=1, max_size=4),
       st.dates(min_value=dt.date(2017, 3, 1), max_value=dt.date(2020, 11, 2)))
def test_before_2020_11_03_no_guidelines_finding(raw, on):
    for verdict in judge_records(_full, _log(raw), at=on, evaluator="reference"):
        assert all(p.policy != GUIDELINES for p in verdict.policies)
        assert all(f.policy != GUIDELINES for f in verdict.findings)


@st.composite
def review_requests(draw):
    n = draw(st.integers(1, 8))
    base = dt.datetime(2021, 3, 1, 9, tzinfo=TZ)
    out = []
    for i in range(n):
        oid = draw(st.sampled_from(ORDERS))
        sent = base + dt.timedelta(minutes=draw(st.integers(0, 20 * 24 * 60)))
        channel = draw(st.sampled_from(["email", "seller_central", "api", "request_a_review"]))
        out.append(dict(message_id=f"r{i}", order_id=oid, buyer_id=draw(st.sampled_from(BUYERS)), sent_at=sent,
                        channel=channel, category=draw(st.sampled_from(["review_request", "feedback_request"])),
                        subject="" if channel == "request_a_review" else f"Order {oid}",
                        body="" if channel == "request_a_review" else f"Would you review order {oid}?",
                        buyer_opted_out=False, delivered_at=base - dt.timedelta(days=2),
                        language="en", buyer_language="en"))
    return out


@given(review_requests())
def test_exactly_one_review_request_per_order_is_allowed(raw):
    log = _log(raw)
    verdicts = judge_records(_full, log, evaluator="reference")
    allowed = defaultdict(int)
    for msg, v in zip(log, verdicts):
        if v.outcome is Outcome.allowed:
            allowed[msg.order_id] += 1
        else:
            assert v.outcome is Outcome.violation and {f.rule for f in v.findings if f.outcome is Outcome.violation} == {"CG2020-REV-ONCE"}
    assert allowed == {o: 1 for o in {m.order_id for m in log}}


@given(st.lists(messages(), min_size=1, max_size=4), st.lists(events, max_size=2))
def test_durable_rules_agree_with_the_reference(raw, evs):
    log = _log(evs + raw)
    durable = judge_records(_full, log, evaluator="durable", cache=False)
    reference = judge_records(_full, log, evaluator="reference")
    assert [v.model_dump() for v in durable] == [v.model_dump() for v in reference]
