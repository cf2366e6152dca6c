"""Property: whatever part of a log was committed earlier, checking the rest gives `check`'s verdicts.

Logs with events, buyer questions and replies (quoting, not quoting, dangling) are
split at a random point: the first part is committed through /v1/check, the rest
is checked as one list without commit, optionally `on` another date. The verdicts
must be those `judge_records` gives the whole log. Each example renames its buyers,
orders and messages, so the examples share one server without meeting.
"""
from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, strategies as st

from engine.evaluate import judge_records
from engine.model import BuyerEvent, Message, verdict_json
from tests.properties.strategies import logs

_examples = itertools.count()


def _renamed(record, tag: str):
    if isinstance(record, BuyerEvent):
        return record.model_copy(update={"buyer_id": f"{tag}{record.buyer_id}"})
    update = {"message_id": f"{tag}{record.message_id}", "buyer_id": f"{tag}{record.buyer_id}",
              "order_id": f"{tag}{record.order_id}"}
    if record.reply_to is not None:
        update["reply_to"] = f"{tag}{record.reply_to}"
    return record.model_copy(update=update)


def _json(record) -> dict:
    return record.model_dump(mode="json")


def test_committed_prefix_then_checked_rest(client, policies):
    @given(log=logs(max_size=10), split=st.floats(0, 1), on=st.sampled_from([None, "2017-04-01", "2021-06-15"]))
    def prop(log, split, on):
        tag = f"x{next(_examples)}-"
        log = [_renamed(r, tag) for r in log]
        cut = int(len(log) * split)
        head, tail = log[:cut], log[cut:]
        if head:
            r = client.post("/v1/check", json={"records": [_json(x) for x in head], "commit": True})
            assert r.status_code == 200, r.text
        body = {"records": [_json(x) for x in tail]}
        if on:
            body["on"] = on
        r = client.post("/v1/check", json=body)
        assert r.status_code == 200, r.text
        at = dt.date.fromisoformat(on) if on else None
        everything = judge_records(policies, log, at=at)
        wanted = {m.message_id for m in tail if isinstance(m, Message)}
        expected = [verdict_json(v) for v in everything if v.message_id in wanted]
        assert r.json()["verdicts"] == expected

    prop()
