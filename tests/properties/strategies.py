"""Hypothesis strategies for records and logs in CONTRACT §1 form."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from engine.model import BuyerEvent, Category, Channel, Message

CATEGORIES = [c.value for c in Category]
CHANNELS = [c.value for c in Channel]
SUBJECTS = ["", "Your order", "Additional Information Required", "[Important] delivery", "[IMPORTANT]",
            "IMPORTANT: delivery", "Re: your question"]
MARKETPLACES = ["US", "UK", "DE", "JP", "FR"]
ZONES = {"US": "America/Los_Angeles", "UK": "Europe/London", "DE": "Europe/Berlin", "JP": "Asia/Tokyo",
         "FR": "Europe/Paris"}
OPT = [True, False, None]


def instants(start=dt.datetime(2016, 10, 1), end=dt.datetime(2026, 6, 1)):
    return st.builds(
        lambda naive, zone: naive.replace(tzinfo=ZoneInfo(zone)),
        st.datetimes(min_value=start, max_value=end),
        st.sampled_from(sorted(set(ZONES.values())) + ["UTC"]),
    )


@st.composite
def messages(draw, sent_at=None, marketplace=None, category=None, buyer_id=None, order_id=None, **fixed):
    data = {
        "message_id": fixed.pop("message_id", None) or f"m{draw(st.integers(0, 10**9))}",
        "order_id": order_id or draw(st.sampled_from(["111-0000001-0000001", "111-0000002-0000002", "222-0000003-0000003"])),
        "buyer_id": buyer_id or draw(st.sampled_from(["B1", "B2", "B3"])),
        "sent_at": sent_at if sent_at is not None else draw(instants()),
        "marketplace": marketplace or draw(st.sampled_from(MARKETPLACES)),
        "channel": draw(st.sampled_from(CHANNELS)),
        "subject": draw(st.sampled_from(SUBJECTS)),
        "body": draw(st.sampled_from(["Hello", "Please review your order 111-0000001-0000001.", "> question\nanswer"])),
        "category": category or draw(st.sampled_from(CATEGORIES)),
        "buyer_opted_out": draw(st.sampled_from(OPT)),
        "handmade": draw(st.sampled_from(OPT)),
    }
    data.update(fixed)
    return Message.model_validate(data)


@st.composite
def logs(draw, max_size=12, start=dt.datetime(2016, 10, 1), end=dt.datetime(2026, 6, 1)):
    """Logs with events, buyer questions and replies (quoted, unquoted, dangling)."""
    records = []
    buyer_questions = []
    n = draw(st.integers(1, max_size))
    for i in range(n):
        kind = draw(st.sampled_from(["message", "message", "message", "event", "question", "reply"]))
        at = draw(instants(start, end))
        buyer = draw(st.sampled_from(["B1", "B2", "B3"]))
        if kind == "event":
            records.append(BuyerEvent(type=draw(st.sampled_from(["buyer_opt_out", "buyer_opt_in"])), buyer_id=buyer, at=at))
        elif kind == "question":
            text = draw(st.sampled_from(["Is it red?", "When will it arrive?", "Can you engrave it?"]))
            q = draw(messages(sent_at=at, buyer_id=buyer, message_id=f"q{i}", initiated_by="buyer", body=text,
                              category="customer_service_reply"))
            records.append(q)
            buyer_questions.append(q)
        elif kind == "reply" and buyer_questions:
            q = draw(st.sampled_from(buyer_questions))
            quoting = draw(st.booleans())
            body = f"Answer.\n> {q.body}" if quoting else "Answer."
            target = q.message_id if draw(st.integers(0, 4)) else "missing-question"
            records.append(draw(messages(sent_at=at, buyer_id=draw(st.sampled_from([q.buyer_id, buyer])),
                                         order_id=q.order_id, message_id=f"r{i}", reply_to=target, body=body,
                                         category="customer_service_reply")))
        else:
            records.append(draw(messages(sent_at=at, buyer_id=buyer, message_id=f"m{i}")))
    return records
