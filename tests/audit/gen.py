"""A small seeded generator of time-ordered logs for the audit tests (not the benchmark's).

Orders of several messages per buyer, opt-out/opt-in events, buyer questions and
seller replies (quoting or not), [Important] / Additional Information Required
subjects, all four marketplaces, 2016-2025, and an optional share of malformed
lines of the kinds real exports hold.
"""
from __future__ import annotations

import datetime as dt
import random
from typing import Iterator

import orjson

CATEGORIES = (
    "product_customization", "delivery_scheduling", "shipping_address_issue", "order_info_request",
    "fulfillment_issue", "return_question", "invoice", "custom_design_verification",
    "home_service_appointment", "review_request", "feedback_request", "order_confirmation",
    "shipment_confirmation", "delivery_confirmation", "proactive_customer_service",
    "out_of_stock_notice", "marketing", "cross_sell", "thank_you_only", "customer_service_reply",
)
CHANNELS = ("email", "email", "seller_central", "request_a_review", "api")
OFFSETS = {"US": "-08:00", "UK": "+00:00", "DE": "+01:00", "JP": "+09:00"}
SUBJECTS = ("Your order", "[Important] About your order", "Additional Information Required",
            "Important: delivery", "Thanks!", "")


def _ts(t: dt.datetime, market: str) -> str:
    off = OFFSETS[market]
    sign = 1 if off[0] == "+" else -1
    local = t + sign * dt.timedelta(hours=int(off[1:3]))
    return local.strftime("%Y-%m-%dT%H:%M:%S") + off


def records(n: int, seed: int, malformed: float = 0.0, start: str = "2016-06-01",
            end: str = "2025-12-31") -> Iterator[bytes]:
    """n lines (JSON Lines, bytes without newline), in sent_at order."""
    rng = random.Random(seed)
    t0 = dt.datetime.fromisoformat(start)
    span = (dt.datetime.fromisoformat(end) - t0).total_seconds()
    step = span / max(n, 1)
    buyers = [f"B{seed}-{i:06d}" for i in range(max(10, n // 8))]
    market_of = {b: rng.choice(("US", "US", "US", "UK", "DE", "JP")) for b in buyers}
    recent_buyer_msgs: dict[str, tuple[str, str]] = {}
    orders: dict[str, str] = {}
    t = t0
    mid = 0
    for i in range(n):
        t = t + dt.timedelta(seconds=rng.random() * 2 * step)
        buyer = rng.choice(buyers[: max(10, int(len(buyers) * (i + 1) / n))])
        market = market_of[buyer]
        roll = rng.random()
        if roll < 0.03:
            rec = {"type": rng.choice(("buyer_opt_out", "buyer_opt_out", "buyer_opt_in")),
                   "buyer_id": buyer, "at": _ts(t, market)}
        else:
            mid += 1
            order, since = orders.get(buyer, (None, t))
            if order is None or rng.random() < 0.3 or (t - since).days > 90:
                order = f"{rng.randint(100, 999)}-{rng.randint(0, 9999999):07d}-{rng.randint(0, 9999999):07d}"
                since = t
                orders[buyer] = (order, since)
            rec = {"message_id": f"m{seed}-{mid}", "order_id": order, "buyer_id": buyer,
                   "sent_at": _ts(t, market), "marketplace": market}
            if rng.random() < 0.12:
                text = rng.choice(("Where is my parcel?", "Can I change the colour?", "Does it fit a 12 inch frame?"))
                rec.update(initiated_by="buyer", category="customer_service_reply", body=text)
                recent_buyer_msgs[buyer] = (rec["message_id"], text, t)
            else:
                rec["category"] = rng.choice(CATEGORIES)
                rec["channel"] = rng.choice(CHANNELS)
                rec["subject"] = rng.choice(SUBJECTS)
                body = "Hello, about your order " + order + "."
                quoted = recent_buyer_msgs.get(buyer)
                if quoted and (t - quoted[2]).days < 60 and rng.random() < 0.5:
                    rec["reply_to"] = quoted[0]
                    if rng.random() < 0.7:
                        body = "> " + quoted[1] + "\n\nThanks for asking. " + body
                elif rng.random() < 0.03:
                    rec["reply_to"] = f"unknown-{rng.randint(0, 99)}"
                rec["body"] = body
                opt = rng.random()
                if opt < 0.3:
                    rec["buyer_opted_out"] = opt < 0.05
                if rng.random() < 0.5:
                    rec["delivered_at"] = _ts(t - dt.timedelta(days=rng.randint(0, 60)), market)
        line = orjson.dumps(rec)
        if malformed and rng.random() < malformed:
            line = _break(rng, rec, line)
        yield line


def _break(rng: random.Random, rec: dict, line: bytes) -> bytes:
    kind = rng.randrange(6)
    rec = dict(rec)
    if kind == 0:
        return line[: max(1, len(line) // 2)]
    if kind == 1:
        key = "at" if "at" in rec else "sent_at"
        rec[key] = rec[key][:19]
    elif kind == 2 and "category" in rec:
        rec["category"] = "promotion"
    elif kind == 3:
        rec.pop(rng.choice([k for k in ("message_id", "buyer_id", "sent_at", "at") if k in rec]), None)
    elif kind == 4 and "message_id" in rec:
        rec["marketplace"] = "XX"
    else:
        rec["buyer_opted_out" if "message_id" in rec else "at"] = "maybe"
    return orjson.dumps(rec)


def write(path, n: int, seed: int, malformed: float = 0.0, **kw) -> None:
    with open(path, "wb") as fh:
        for line in records(n, seed, malformed, **kw):
            fh.write(line + b"\n")
