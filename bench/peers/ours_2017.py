"""msgpolicy's own judgement of the same 2017 facts, for `time_peers.py --ours`.

    PYTHONPATH=<a msgpolicy checkout> python bench/peers/time_peers.py \
        --ours ours_2017:decide_durable --ours ours_2017:decide_reference_evaluator

Each fact becomes a US message sent on 2017-06-01 (gate active, `[Important]`
honoured), preceded by the buyer's question when it is a quoted reply, and is
judged by the engine with its shipped policies. Unlike the peers, the engine
also derives the facts from the record (subject patterns, quoting, category
lists) and builds a verdict with findings and sources, so its figure is per
judged message, not per bare table lookup.
"""

from __future__ import annotations

from functools import lru_cache

SENT_AT = "2017-06-01T12:00:00-07:00"
QUESTION_AT = "2017-06-01T09:00:00-07:00"
QUESTION = "Can you engrave the name Maria on the back instead of the front?"


def _subject(fact: dict) -> str:
    if fact["subject_air"] and fact["subject_important"]:
        return "[Important] Additional Information Required"
    if fact["subject_air"]:
        return "Additional Information Required"
    if fact["subject_important"]:
        return "[Important] About your order"
    return "About your order"


def records_for(facts: list[dict]) -> list[dict]:
    """A time-ordered log: every buyer question first, then the judged messages."""
    questions, messages = [], []
    for index, fact in enumerate(facts):
        buyer = f"B{index:09d}"
        reply_to = None
        body = "Thanks for your order."
        if fact["is_quoted_reply"]:
            reply_to = f"q{index}"
            questions.append({"message_id": reply_to, "order_id": "111-0000000-0000000", "buyer_id": buyer,
                              "sent_at": QUESTION_AT, "initiated_by": "buyer", "category": "customer_service_reply",
                              "body": QUESTION})
            body = f"> {QUESTION}\n\nYes, we will engrave it on the back."
        messages.append({"message_id": f"m{index}", "order_id": "111-0000000-0000000", "buyer_id": buyer,
                         "sent_at": SENT_AT, "marketplace": "US", "channel": fact["channel"],
                         "subject": _subject(fact), "body": body, "category": fact["category"],
                         "reply_to": reply_to, "buyer_opted_out": fact["opted_out"]})
    return questions + messages


@lru_cache(maxsize=1)
def _policies():
    import engine

    return engine.load_policies()


def _decide(facts: list[dict], evaluator: str) -> list[str]:
    import engine

    judge = engine.Judge(_policies(), evaluator=evaluator)
    outcomes = []
    for record in records_for(facts):
        if record.get("initiated_by") == "buyer":
            judge.judge(engine.Message.model_validate(record))  # history for the reply check
            continue
        outcomes.append(judge.judge(engine.Message.model_validate(record)).outcome.value)
    return outcomes


def decide_durable(facts: list[dict]) -> list[str]:
    return _decide(facts, "durable")


def decide_reference_evaluator(facts: list[dict]) -> list[str]:
    return _decide(facts, "reference")
