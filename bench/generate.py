"""Seeded generator of realistic seller/buyer message logs (CONTRACT §1).

The log is simulated as a discrete-event stream: orders arrive in time order
(denser 2017-2021), each order carries a short plan of messages (confirmation,
shipment, delivery, review request, buyer question and reply, ...), and a heap
holds only the *open* orders and pending buyer events. Records are emitted in
`sent_at` order and written as they come, so memory stays flat however many
lines are asked for. `--messages N` is the exact number of lines written
(messages + buyer events, malformed ones included).

    python bench/generate.py --messages 1000000 --seed 7 --out bench/out/log.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import csv
import heapq
import multiprocessing
import os
import random
import shutil
import string
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

CATEGORIES = (
    "product_customization", "delivery_scheduling", "shipping_address_issue",
    "order_info_request", "fulfillment_issue", "return_question", "invoice",
    "custom_design_verification", "home_service_appointment", "review_request",
    "feedback_request", "order_confirmation", "shipment_confirmation",
    "delivery_confirmation", "proactive_customer_service", "out_of_stock_notice",
    "marketing", "cross_sell", "thank_you_only", "customer_service_reply",
)
CRITICAL_CATEGORIES = (
    "product_customization", "delivery_scheduling", "shipping_address_issue",
    "order_info_request", "custom_design_verification", "home_service_appointment",
)
OTHER_CATEGORIES = (
    "invoice", "proactive_customer_service", "out_of_stock_notice", "marketing", "cross_sell",
    "thank_you_only", "fulfillment_issue", "return_question",
)
MARKETPLACE_ZONES = {
    "US": "America/Los_Angeles", "UK": "Europe/London",
    "DE": "Europe/Berlin", "JP": "Asia/Tokyo",
}
# Column order for CSV/Parquet: every field a message or an event can carry.
COLUMNS = (
    "type", "message_id", "order_id", "buyer_id", "sent_at", "at", "marketplace",
    "initiated_by", "reply_to", "channel", "subject", "body", "category",
    "buyer_opted_out", "delivered_at", "order_placed_at", "language",
    "buyer_language", "attachments",
)
LIST_COLUMNS = ("attachments",)

DAY = 86400
HOUR = 3600


def _epoch(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


ROLLOUT_2017 = _epoch(date(2017, 3, 27))
REQUEST_A_REVIEW_LAUNCH = _epoch(date(2019, 11, 1))
GUIDELINES_2020 = _epoch(date(2020, 11, 3))

# Relative order volume per year: densest 2017-2021, a thin tail on both sides.
YEAR_WEIGHT = {2016: 0.5, 2017: 1.6, 2018: 1.5, 2019: 1.4, 2020: 1.6, 2021: 1.4,
               2022: 0.7, 2023: 0.6, 2024: 0.5, 2025: 0.5}
MONTH_WEIGHT = {11: 1.4, 12: 1.5}  # holiday peak; other months 1.0


# --------------------------------------------------------------------------
# Time formatting. Formatting with datetime/zoneinfo per record is the main
# cost of a naive generator, so zone offsets are precomputed as transition
# lists and the date/time parts come from lookup tables.

_CLOCK_OF_DAY = [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY)]
_DATE_OF_DAY: dict[int, str] = {}


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}"


class LocalClock:
    """Writes UTC epoch seconds as RFC 3339 local time of one marketplace."""

    def __init__(self, zone_name: str, first_year: int, last_year: int):
        zone = ZoneInfo(zone_name)

        def offset(epoch: int) -> int:
            return int(datetime.fromtimestamp(epoch, zone).utcoffset().total_seconds())

        begin = _epoch(date(first_year - 1, 1, 1))
        finish = _epoch(date(last_year + 2, 1, 1))
        self.starts = [begin]
        self.offsets = [offset(begin)]
        for day_start in range(begin, finish, DAY):
            if offset(day_start + DAY) == self.offsets[-1]:
                continue
            low, high = day_start, day_start + DAY  # offset changes in (low, high]
            while high - low > 1:
                middle = (low + high) // 2
                if offset(middle) == self.offsets[-1]:
                    low = middle
                else:
                    high = middle
            self.starts.append(high)
            self.offsets.append(offset(high))
        self.offset_texts = {o: _offset_text(o) for o in self.offsets}

    def format(self, epoch: int) -> str:
        offset = self.offsets[bisect.bisect_right(self.starts, epoch) - 1]
        return self._format(epoch + offset) + self.offset_texts[offset]

    def format_naive(self, epoch: int) -> str:
        offset = self.offsets[bisect.bisect_right(self.starts, epoch) - 1]
        return self._format(epoch + offset)

    @staticmethod
    def format_utc(epoch: int) -> str:
        return LocalClock._format(epoch) + "Z"

    @staticmethod
    def _format(local_epoch: int) -> str:
        day, second = divmod(local_epoch, DAY)
        text = _DATE_OF_DAY.get(day)
        if text is None:
            text = _DATE_OF_DAY[day] = date.fromordinal(day + 719163).isoformat()
        return text + _CLOCK_OF_DAY[second]


_CLOCKS: dict[tuple[str, int, int], LocalClock] = {}


def _clock(zone_name: str, first_year: int, last_year: int) -> LocalClock:
    key = (zone_name, first_year, last_year)
    if key not in _CLOCKS:
        _CLOCKS[key] = LocalClock(zone_name, first_year, last_year)
    return _CLOCKS[key]


# --------------------------------------------------------------------------
# Text pools. Bodies are templates filled per message; the pools are small
# but combined with optional extras they give plenty of variety.

FIRST_NAMES = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael",
               "Linda", "David", "Elizabeth", "William", "Susan", "Maria", "Daniel",
               "Olivia", "Harry", "Amelia", "George", "Isla", "Jack", "Lukas", "Anna",
               "Felix", "Lena", "Jonas", "Sophie", "Haruto", "Yui", "Sota", "Hina",
               "Carlos", "Ana", "Priya", "Wei", "Fatima", "Omar", "Chloe", "Noah")
PRODUCTS = ("wireless earbuds", "stainless water bottle", "yoga mat", "phone case",
            "LED desk lamp", "coffee grinder", "kids' backpack", "engraved cutting board",
            "personalised necklace", "memory foam pillow", "garden hose", "camping lantern",
            "bluetooth speaker", "cast iron skillet", "USB-C charger", "leather wallet",
            "standing desk", "3-seat sofa", "chest freezer", "treadmill", "dog bed",
            "ceramic planter", "custom photo mug", "car phone mount", "hiking socks")
BULKY_PRODUCTS = ("standing desk", "3-seat sofa", "chest freezer", "treadmill")
BRAND_HOSTS = ("brightnest-home.com", "peakgear-outdoor.com", "lunaleaf.co.uk",
               "kochwerk-shop.de", "sakura-goods.jp", "zestkitchen.com", "urbanpaws.com",
               "voltique.com", "cedarcraft-gifts.com", "northloop-supply.com")
SHORT_HOSTS = ("bit.ly", "tinyurl.com", "goo.gl")

CORE_TEXT = {
    "order_confirmation": (
        "Thank you for your order {oid}! We have received it and are preparing your {product} for shipment.",
        "Thanks for shopping with us. Your order for the {product} is confirmed and will ship soon.",
        "Your order {oid} has been received. We will let you know as soon as it ships.",
    ),
    "shipment_confirmation": (
        "Good news: your {product} has shipped and is on its way. Order {oid}.",
        "Your package left our warehouse today. You can follow the tracking in Your Orders.",
        "Order {oid} has been handed to the carrier and should arrive within a few days.",
    ),
    "delivery_confirmation": (
        "Our records show your {product} was delivered. We hope you enjoy it!",
        "Your order {oid} has been delivered. Please check that everything arrived in good condition.",
    ),
    "review_request": (
        "How is your {product}? If you have a moment, please share your experience with a product review on Amazon. Order {oid}.",
        "We would appreciate it if you could review your recent purchase ({oid}). Reviews help other shoppers decide.",
        "We hope the {product} is working well for you. Would you mind leaving a review? Order ID: {oid}",
    ),
    "feedback_request": (
        "We hope order {oid} arrived in good condition. Your seller feedback helps other shoppers and helps us improve.",
        "Could you take a minute to rate your experience with us as a seller? Order {oid}.",
    ),
    "product_customization": (
        "Please confirm the engraving text for your {product} (order {oid}). We need it before we can start production.",
        "Which font and colour would you like for the personalisation of order {oid}? Please reply with your choice.",
    ),
    "delivery_scheduling": (
        "Your {product} is a large item delivered by freight. Please tell us which weekday suits you for delivery of order {oid}.",
        "The carrier needs to book a delivery slot for order {oid}. Which morning or afternoon next week works for you?",
    ),
    "shipping_address_issue": (
        "The carrier could not verify the shipping address for order {oid}. Could you confirm the street name and apartment number?",
        "Your package for order {oid} was returned as undeliverable. Please confirm your address so we can reship it.",
    ),
    "order_info_request": (
        "To complete order {oid} we need to know which size you would like; the listing allowed two options.",
        "We need the name to print on the {product} in order {oid}. Please reply with the exact spelling.",
    ),
    "custom_design_verification": (
        "Attached is the proof of your custom design for order {oid}. Please approve it or tell us what to change.",
        "Before we print your {product}, please check the design preview for order {oid}.",
    ),
    "home_service_appointment": (
        "Please choose an appointment slot for the installation service booked with order {oid}.",
        "Our technician can install your {product} on Tuesday or Thursday. Which day suits you? Order {oid}.",
    ),
    "invoice": (
        "Please find the invoice for order {oid} attached.",
        "As requested, here is the VAT invoice for your purchase (order {oid}).",
    ),
    "proactive_customer_service": (
        "Here are a few tips to get the most out of your {product}. The user manual is attached for reference.",
        "A quick tip for your {product}: charge it fully before the first use. Order {oid}.",
    ),
    "out_of_stock_notice": (
        "Unfortunately your {product} is delayed by about a week. We can offer a similar item instead if you prefer.",
        "We are sorry: the {product} in order {oid} is out of stock. We suggest cancelling or choosing an alternative.",
    ),
    "marketing": (
        "Our spring sale starts today: everything in the store is 25% off. Use code SPRING25 at checkout.",
        "New arrivals are in! Follow our store to be the first to hear about our deals.",
    ),
    "cross_sell": (
        "Customers who bought the {product} also love our {product2}. Check it out in our storefront.",
        "Complete your set: the matching {product2} is now available.",
    ),
    "thank_you_only": (
        "Thank you for your order! If you have any problems, just let us know.",
        "Thanks again for choosing us. Have a great day!",
    ),
    "fulfillment_issue": (
        "One item of order {oid} was damaged in our warehouse; we are shipping a replacement separately at no cost.",
        "Part of order {oid} will arrive in a second package because of a stock split.",
    ),
    "return_question": (
        "We received your return request for order {oid}. Could you tell us whether the item was opened?",
        "For the return of order {oid}, would you accept a partial refund of 20% and keep the item?",
    ),
}
FOREIGN_TEXT = {
    "de": ("Vielen Dank für Ihre Bestellung {oid}. Bei Fragen helfen wir gern.",
           "Ihre Bestellung {oid} ist unterwegs. Wir wünschen viel Freude mit dem Artikel.",
           "Wir benötigen noch eine Angabe, um Ihre Bestellung {oid} abzuschließen."),
    "ja": ("ご注文{oid}ありがとうございます。商品を発送いたしました。",
           "ご注文{oid}について確認させていただきたいことがございます。",
           "商品の到着をご確認ください。ご不明な点がございましたらご連絡ください。"),
}
SUBJECTS = {
    "order_confirmation": ("Your order {oid} is confirmed", "Thank you for your order", "Order confirmation"),
    "shipment_confirmation": ("Your order has shipped", "Shipping notice for order {oid}", "On its way!"),
    "delivery_confirmation": ("Your order was delivered", "Delivered: order {oid}"),
    "review_request": ("How was your {product}?", "Quick question about your order", "Share your experience"),
    "feedback_request": ("Seller feedback for order {oid}", "How did we do?"),
    "critical": ("Question about order {oid}", "Action needed for order {oid}", "Your order {oid}"),
    "other": ("About your order {oid}", "Information about your purchase", "A note from the seller"),
}
BUYER_QUESTIONS = (
    ("fulfillment_issue", "Where is my order?", "My order was supposed to arrive yesterday and tracking has not moved."),
    ("product_customization", "Engraving", "Can you engrave the name Maria on the back instead of the front?"),
    ("customer_service_reply", "Product question", "Does this charger work with 220V outlets in Europe?"),
    ("invoice", "Invoice request", "I need an invoice with my company VAT number please."),
    ("return_question", "Return", "The box arrived damaged, how do I return it?"),
    ("delivery_scheduling", "Delivery day", "Could you deliver on Saturday morning? I am not home on weekdays."),
    ("shipping_address_issue", "Wrong address", "I entered the wrong apartment number, it should be 4B. Can you fix it?"),
    ("customer_service_reply", "Missing part", "The package is missing the mounting screws mentioned in the listing."),
    ("customer_service_reply", "Sizing", "Does the medium size run small? I usually wear a US 8."),
)
REPLY_TEXT = (
    "Thanks for reaching out. We have looked into this and will update you within 24 hours.",
    "Thank you for your message. Yes, that is possible; we have updated your order accordingly.",
    "Sorry for the trouble. We are sending the missing items today at no cost to you.",
    "Good question: it works with 100-240V, so only a plug adapter is needed.",
    "We have passed this on to our warehouse team and they will take care of it.",
)
EXTRAS = {
    "order_id": ("Order ID: {oid}", "Your order number is {oid}."),
    "amazon_url": ("You can review it here: https://www.amazon.com/review/create-review?asin={asin}",
                   "Track your package: https://www.amazon.com/gp/your-account/order-details?orderID={oid}",
                   "See the product page: https://www.amazon.com/dp/{asin}"),
    "other_url": ("Visit https://www.{host}/support for setup videos.",
                  "Register your warranty at http://{host}/warranty",
                  "More tips: https://{short}/{code}"),
    "email": ("Email us any time at support@{host}.", "Questions? Write to help@{host}"),
    "phone": ("Call us at +1 555-01{d2}-{d4}.", "Our hotline: +44 20 7946 0{d3}", "Tel. 0{d3} 555 {d4}"),
    "emoji": ("😊", "👍", "🎉", "⭐⭐⭐⭐⭐", "🙏"),
    "coupon": ("As a thank-you, use code THANKS15 for 15% off your next order.",
               "Leave a review and we will send you a free gift!",
               "Enjoy a discount of 10% on your next purchase with coupon SAVE10.",
               "We will refund the shipping cost once you post your review."),
    "five_stars": ("If you are happy, please leave us 5 stars!", "A five-star review would mean the world to us.",
                   "Only happy with your purchase? Then please rate us 5 stars."),
    "divert": ("If anything is wrong, please contact us first before leaving a review.",),
    "remove_review": ("Would you consider updating or removing your recent review?",),
}
ATTACHMENTS = {
    "invoice": ({"name": "invoice-{short_oid}.pdf", "kind": "invoice"},),
    "product_instructions": ({"name": "user-manual.pdf", "kind": "product_instructions"},
                             {"name": "quick-start-guide.pdf", "kind": "product_instructions"}),
    "warranty": ({"name": "warranty-card.pdf", "kind": "warranty"},),
    "image": ({"name": "design-proof.png", "kind": "image"}, {"name": "logo.png", "kind": "image"}),
    "other": ({"name": "catalogue-2019.pdf", "kind": "other"}, {"name": "coupon.jpg", "kind": "other"}),
}


def _extra_chances(modern: bool, review: bool) -> tuple[tuple[str, float], ...]:
    """How often each content extra appears; sellers were sloppier before the 2020 guidelines."""
    loose = 0.4 if modern else 1.0
    chances = (("order_id", 0.35), ("amazon_url", 0.10), ("other_url", 0.08 * loose),
               ("email", 0.07 * loose), ("phone", 0.05 * loose), ("emoji", 0.10 * loose),
               ("coupon", (0.10 if review else 0.04) * loose),
               ("five_stars", (0.12 if review else 0.0) * loose),
               ("divert", (0.06 if review else 0.0) * loose),
               ("remove_review", 0.01 if review else 0.0))
    return tuple((extra, chance) for extra, chance in chances if chance > 0)


EXTRA_CHANCES = {(m, r): _extra_chances(m, r) for m in (False, True) for r in (False, True)}
EXTRA_FIELDS = {template: tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)
                for pool in EXTRAS.values() for template in pool}
SIGNOFFS = tuple(f"\n\nBest regards,\nThe {host.split('.')[0]} team" for host in BRAND_HOSTS)
REQUEST_A_REVIEW_SUBJECT = "Amazon review request: please share your experience"
REQUEST_A_REVIEW_BODY = ("The seller has requested that you share your experience with your recent order "
                         "by reviewing the product and the seller on Amazon.")
ORDER_PREFIXES = ("111", "112", "113", "114", "202", "203", "204", "205", "206", "249", "250",
                  "302", "303", "304", "305", "402", "403", "404", "405", "406", "407", "408", "503")


class Buyer:
    __slots__ = ("buyer_id", "marketplace", "clock", "name", "language",
                 "opted_out", "planned_opted_out", "event_pending")

    def __init__(self, buyer_id, marketplace, clock, name, language):
        self.buyer_id = buyer_id
        self.marketplace = marketplace
        self.clock = clock
        self.name = name
        self.language = language
        self.opted_out = False          # state as of the record being emitted
        self.planned_opted_out = False  # state after all events already scheduled
        self.event_pending = False


class Order:
    __slots__ = ("order_id", "buyer", "placed_at", "delivered_at", "anchor_mode",
                 "product", "plan", "step", "questions", "placed_text", "delivered_text")

    def __init__(self, order_id, buyer, placed_at, delivered_at, anchor_mode, product):
        self.order_id = order_id
        self.buyer = buyer
        self.placed_at = placed_at
        self.delivered_at = delivered_at
        self.anchor_mode = anchor_mode  # how the export fills the anchor fields
        self.product = product
        self.plan: list[tuple[int, str, object]] = []
        self.step = 0
        self.questions: list[tuple[str, str, str]] = []  # (message_id, subject, text)
        if anchor_mode in ("both", "placed_only"):
            self.placed_text = buyer.clock.format(placed_at)
            self.delivered_text = buyer.clock.format(delivered_at)


ORDER_SHAPES = 16_384  # distinct order lives per era
TEXTS_PER_POOL = 512  # distinct rendered texts per (category, era, language)
_TEXT_FILL = {"oid": "{oid}", "product": "{product}", "name": "{name}"}

# Heap entry kinds
_ORDER_STEP = 0
_EVENT = 1


class Calendar:
    """Relative order volume over time: piecewise constant per calendar month."""

    def __init__(self, low: int, high: int):
        self.bounds = [low]
        self.rates: list[float] = []
        self.cumulative = [0.0]
        cursor = datetime.fromtimestamp(low, timezone.utc).date().replace(day=1)
        while self.bounds[-1] < high:
            following = date(cursor.year + (cursor.month == 12), cursor.month % 12 + 1, 1)
            upper = min(_epoch(following), high)
            if upper > self.bounds[-1]:
                rate = YEAR_WEIGHT.get(cursor.year, 0.5) * MONTH_WEIGHT.get(cursor.month, 1.0)
                self.rates.append(rate)
                self.cumulative.append(self.cumulative[-1] + rate * (upper - self.bounds[-1]))
                self.bounds.append(upper)
            cursor = following
        self.total = self.cumulative[-1]

    def time_at(self, fraction: float) -> int:
        """The instant below which `fraction` of the volume lies."""
        target = fraction * self.total
        k = min(bisect.bisect_right(self.cumulative, target) - 1, len(self.rates) - 1)
        return int(self.bounds[k] + (target - self.cumulative[k]) / self.rates[k])


class LinesProfile:
    """Expected log lines per order as a function of where in the volume it arrives.

    Measured by planning sample orders (with a throwaway RNG) in equal-volume
    bins; it captures the era (fewer confirmations after 2020) and the clipping
    at the window edges, which is what makes exact-N pacing land on the end date.
    """

    BINS = 400
    SAMPLES = 40
    # Near the window end the estimate decides how the last lines are spread:
    # an overestimate there leaves budget over, which then crowds the final day.
    EDGE_SAMPLES = 1000

    def __init__(self, calendar: Calendar, low: int, high: int, seed: int):
        probe = LogSimulator(1, seed, low, high, calendar.bounds[0], part=0, calibrating=True)
        self.cumulative = [0.0]  # expected lines per order, integrated over volume fraction
        for index in range(self.BINS):
            near_end = calendar.time_at((index + 1) / self.BINS) > high - WARM_UP
            samples = self.EDGE_SAMPLES if near_end else self.SAMPLES
            lines = 0
            for _ in range(samples):
                placed = calendar.time_at((index + probe.rng.random()) / self.BINS)
                buyer = probe._buyer()
                lines += len(probe._plan_order(placed, buyer).plan) + len(probe._plan_events(buyer, placed))
            self.cumulative.append(self.cumulative[-1] + max(lines / samples, 0.01) / self.BINS)

    def remaining(self, fraction: float) -> float:
        """Expected lines per order, integrated from `fraction` to the end."""
        position = min(fraction, 1.0) * self.BINS
        k = min(int(position), self.BINS - 1)
        at = self.cumulative[k] + (self.cumulative[k + 1] - self.cumulative[k]) * (position - k)
        return self.cumulative[-1] - at

    def split(self, parts: int) -> list[float]:
        """Volume fractions that cut the expected lines into `parts` equal shares."""
        cuts = []
        for part in range(1, parts):
            target = self.cumulative[-1] * part / parts
            k = bisect.bisect_right(self.cumulative, target) - 1
            share = (target - self.cumulative[k]) / (self.cumulative[k + 1] - self.cumulative[k])
            cuts.append((k + share) / self.BINS)
        return cuts


# A part's simulation starts this long before its window so that the orders
# already open at the window start are there (no dip at the seam).
WARM_UP = 62 * DAY


class LogSimulator:
    """Yields (record, is_event) in `sent_at` order: exactly `total_lines` of them,
    all inside [low, high). Orders arrive from `arrivals_from` on; `part`
    separates the identifier spaces of parts simulated in parallel."""

    def __init__(self, total_lines: int, seed: int, low: int, high: int, arrivals_from: int,
                 part: int = 0, calibrating: bool = False):
        self.rng = random.Random(seed)
        self.total_lines = total_lines
        self.low = low
        self.high = high
        first_year = datetime.fromtimestamp(arrivals_from, timezone.utc).year
        last_year = datetime.fromtimestamp(high, timezone.utc).year
        self.clocks = {m: _clock(z, first_year, last_year) for m, z in MARKETPLACE_ZONES.items()}
        self.asins = ["B0" + "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
                      for _ in range(300)]
        self.recent_buyers: list[Buyer] = []
        self.recent_slot = 0
        self.buyer_count = part * 10**14
        self.order_count = part * 10**12
        self.message_count = part * 10**9
        self.orders_admitted = 0
        self.buyers_created = 0
        self.heap: list = []
        self.heap_seq = 0
        self.committed = 0
        self.volume = 0.0  # fraction of the arrival calendar already passed
        # Independent per-message field choices, pre-drawn into a pool so a
        # message costs one draw instead of one per choice.
        self.field_patterns = [self._field_pattern() for _ in range(4096)]  # indexed by one draw
        # Order lives and message texts are drawn from pools made up front
        # (texts with {oid}/{name}/{product} left to fill): rendering them per
        # message was most of the generator's time.
        shape_rng = random.Random(seed * 7 + 3)
        self.order_shapes = {modern: [self._order_shape(shape_rng, modern) for _ in range(ORDER_SHAPES)]
                             for modern in (False, True)}
        self.text_rng = random.Random(seed * 7 + 5)
        self.text_pools: dict[tuple[str, bool, str], list[tuple]] = {}
        if not calibrating:
            self.calendar = Calendar(arrivals_from, high)
            self.profile = LinesProfile(self.calendar, low, high, seed ^ 0x5EED)

    def _field_pattern(self) -> tuple[bool, bool, bool, int, bool, bool, bool]:
        """(US marketplace written, initiated_by written, null reply_to written,
        opt-out flag: 0 value / 1 null / 2 absent, language written,
        buyer_language written, timestamp in UTC)."""
        r = self.rng.random
        roll = r()
        return (r() < 0.85, r() < 0.85, r() < 0.3, 0 if roll < 0.6 else 1 if roll < 0.85 else 2,
                r() < 0.4, r() < 0.3, r() < 0.03)

    # -- pacing -----------------------------------------------------------
    def _next_arrival(self) -> int | None:
        """Next order time: a Poisson process following the calendar, its rate
        re-fitted at every arrival so the line budget runs out at the window end."""
        remaining = self.total_lines - self.committed
        if remaining <= 0:
            return None
        orders_per_volume = remaining / max(self.profile.remaining(self.volume), 1e-9)
        step = self.rng.expovariate(1.0) / orders_per_volume
        if self.volume + step >= 1.0:
            # Budget left at the very end (chance fluctuation): creep towards
            # the end instead of passing it.
            step = (1.0 - self.volume) * 0.5 * self.rng.random()
        self.volume += step
        return min(self.calendar.time_at(self.volume), self.high - HOUR)

    # -- identities -------------------------------------------------------
    def _order_id(self) -> str:
        self.order_count += 1
        self.orders_admitted += 1
        # Multiplying by a number coprime to 10**14 permutes the counter, so the
        # digits look random yet never repeat.
        digits = f"{(self.order_count * 73_939_133_711 + 12_345_678_901) % 10**14:014d}"
        prefix = ORDER_PREFIXES[int(self.rng.random() * len(ORDER_PREFIXES))]
        return f"{prefix}-{digits[:7]}-{digits[7:]}"

    def _buyer(self) -> Buyer:
        rng = self.rng
        if self.recent_buyers and rng.random() < 0.4:
            return self.recent_buyers[int(rng.random() * len(self.recent_buyers))]
        self.buyer_count += 1
        self.buyers_created += 1
        # An odd multiplier permutes the counter modulo 16**13: distinct, random-looking ids.
        buyer_id = f"A{(self.buyer_count * 0x9E3779B97F4A7C15 + 97) % 16**13:013X}"
        roll = rng.random()
        marketplace = "US" if roll < 0.7 else "UK" if roll < 0.82 else "DE" if roll < 0.94 else "JP"
        native = {"US": "en", "UK": "en", "DE": "de", "JP": "ja"}[marketplace]
        language = native if rng.random() < 0.9 else ("es" if marketplace == "US" else "en")
        buyer = Buyer(buyer_id, marketplace, self.clocks[marketplace],
                      FIRST_NAMES[int(rng.random() * len(FIRST_NAMES))], language)
        # A bounded ring of recent buyers gives repeat customers without
        # remembering every buyer ever generated.
        if len(self.recent_buyers) < 20_000:
            self.recent_buyers.append(buyer)
        else:
            self.recent_buyers[self.recent_slot] = buyer
            self.recent_slot = (self.recent_slot + 1) % 20_000
        return buyer

    # -- order plans ------------------------------------------------------
    def _plan_order(self, placed: int, buyer: Buyer) -> Order:
        shapes = self.order_shapes[placed >= GUIDELINES_2020]
        product, anchor_mode, delivered_after, steps = shapes[int(self.rng.random() * ORDER_SHAPES)]
        order = Order(self._order_id(), buyer, placed, placed + delivered_after, anchor_mode, product)
        order.plan = plan = [(placed + offset, kind, detail) for offset, kind, detail in steps]
        if plan[0][0] < self.low or plan[-1][0] >= self.high:
            order.plan = plan = self._clip(plan)
        if not plan and self.low <= placed < self.high - 600:
            plan.append((placed + 600, "order_confirmation", None))
        return order

    def _order_shape(self, rng: random.Random, modern: bool) -> tuple:
        """One order's life relative to its placement: (product, anchor mode,
        delivery offset, [(offset, step kind, detail)]) in time order."""
        ship = int(_between(rng, 0.3, 3.0) * DAY)
        delivered = ship + int(_between(rng, 1.0, 6.0) * DAY)
        roll = rng.random()
        anchor_mode = "both" if roll < 0.78 else "placed_only" if roll < 0.88 else "null" if roll < 0.95 else "absent"
        product = _pick(rng, PRODUCTS)
        plan = []
        if rng.random() < (0.12 if modern else 0.55):
            plan.append((int(_between(rng, 60, 3 * HOUR)), "order_confirmation", None))
        if rng.random() < (0.10 if modern else 0.45):
            plan.append((ship + int(_between(rng, 0, 4 * HOUR)), "shipment_confirmation", None))
        if rng.random() < (0.05 if modern else 0.2):
            plan.append((delivered + int(_between(rng, HOUR, 30 * HOUR)), "delivery_confirmation", None))
        if rng.random() < 0.55:
            late = rng.random() < 0.08  # some sellers ask well after the 30-day window
            delay = _between(rng, 31, 50) if late else _between(rng, 4, 20)
            kind = "review_request" if rng.random() < 0.6 else "feedback_request"
            plan.append((delivered + int(delay * DAY), kind, None))
        if rng.random() < 0.14:
            threads = 2 if rng.random() < 0.2 else 1
            asked = int(_between(rng, HOUR, 8 * DAY))
            for _ in range(threads):
                topic = _pick(rng, BUYER_QUESTIONS)
                plan.append((asked, "buyer_question", topic))
                plan.append((asked + int(_between(rng, 0.3, 40) * HOUR), "seller_reply", topic))
                asked += int(_between(rng, 2, 6) * DAY)
        if rng.random() < 0.08:
            if product in BULKY_PRODUCTS or rng.random() < 0.2:
                category = "delivery_scheduling" if rng.random() < 0.7 else "home_service_appointment"
            else:
                category = _pick(rng, CRITICAL_CATEGORIES)
            plan.append((int(_between(rng, HOUR, 2 * DAY)), "critical", category))
        if rng.random() < 0.22:
            # The category depends on the buyer's marketplace: chosen when sent.
            plan.append((int(_between(rng, HOUR, 35 * DAY)), "other", None))
        if not plan:
            plan.append((delivered + int(_between(rng, 4, 20) * DAY), "review_request", None))
        plan.sort(key=_plan_time)
        return product, anchor_mode, delivered, tuple(plan[:5])  # an order carries 1-5 messages

    def _clip(self, plan: list) -> list:
        """Keeps the steps inside the window [low, high); a reply whose buyer
        question fell before the window goes too, so every reply_to resolves."""
        kept = []
        open_question = False
        for step in plan:
            if not self.low <= step[0] < self.high:
                continue
            if step[1] == "buyer_question":
                open_question = True
            elif step[1] == "seller_reply":
                if not open_question:
                    continue
                open_question = False
            kept.append(step)
        return kept

    def _other_category(self, buyer: Buyer) -> str:
        """Purpose of an order's miscellaneous proactive message (OTHER_CATEGORIES)."""
        roll = self.rng.random()
        if buyer.marketplace == "DE" and roll < 0.4:
            return "invoice"  # invoices are routinely mailed in DE
        for category, upper in (("invoice", 0.15), ("proactive_customer_service", 0.35),
                                ("out_of_stock_notice", 0.45), ("marketing", 0.57), ("cross_sell", 0.67),
                                ("thank_you_only", 0.77), ("fulfillment_issue", 0.9)):
            if roll < upper:
                return category
        return "return_question"

    def _plan_events(self, buyer: Buyer, placed: int) -> list[tuple[int, str]]:
        rng = self.rng
        if buyer.event_pending:
            return []
        if not buyer.planned_opted_out and rng.random() < 0.07:
            at = placed + int(_between(rng, 0, 15) * DAY)
            kind = "buyer_opt_out"
        elif buyer.planned_opted_out and rng.random() < 0.08:
            at = placed + int(_between(rng, 0, 30) * DAY)
            kind = "buyer_opt_in"
        else:
            return []
        if at < ROLLOUT_2017 or not self.low <= at < self.high:
            return []  # the platform-wide opt-out did not exist before the rollout
        return [(at, kind)]

    def _push(self, when: int, kind: int, payload) -> None:
        self.heap_seq += 1
        heapq.heappush(self.heap, (when, self.heap_seq, kind, payload))

    def _admit_order(self, placed: int) -> None:
        buyer = self._buyer()
        order = self._plan_order(placed, buyer)
        events = self._plan_events(buyer, placed)
        budget = self.total_lines - self.committed
        if len(order.plan) + len(events) > budget:  # the very last order: trim to fit exactly
            events = events[: max(budget - len(order.plan), 0)]
            del order.plan[budget - len(events):]
        self.committed += len(order.plan) + len(events)
        for at, kind in events:
            buyer.event_pending = True
            buyer.planned_opted_out = kind == "buyer_opt_out"
            self._push(at, _EVENT, (buyer, kind))
        if order.plan:
            self._push(order.plan[0][0], _ORDER_STEP, order)

    # -- the stream -------------------------------------------------------
    def records(self):
        heap = self.heap
        next_order = self._next_arrival()
        while True:
            if next_order is not None and (not heap or next_order <= heap[0][0]):
                self._admit_order(next_order)
                next_order = self._next_arrival()
                continue
            if not heap:
                return
            when, _, kind, payload = heapq.heappop(heap)
            if kind == _EVENT:
                buyer, event_type = payload
                buyer.opted_out = event_type == "buyer_opt_out"
                buyer.event_pending = False
                yield {"type": event_type, "buyer_id": buyer.buyer_id, "at": self._stamp(when, buyer)}, True
                continue
            order = payload
            sent, step_kind, detail = order.plan[order.step]
            yield self._message(order, sent, step_kind, detail), False
            order.step += 1
            if order.step < len(order.plan):
                self._push(order.plan[order.step][0], _ORDER_STEP, order)

    def _stamp(self, epoch: int, buyer: Buyer) -> str:
        # A few exporters write UTC ("Z"); both forms carry an offset.
        if self.rng.random() < 0.03:
            return LocalClock.format_utc(epoch)
        return buyer.clock.format(epoch)

    # -- records ----------------------------------------------------------
    def _message(self, order: Order, sent: int, step_kind: str, detail) -> dict:
        rng = self.rng
        buyer = order.buyer
        self.message_count += 1
        message_id = f"msg-{self.message_count:010d}"
        channel = "email"
        initiated_by = "seller"
        reply_to = None
        attachments = None
        language = "en"

        if step_kind == "buyer_question":
            category, subject, text = detail
            order.questions.append((message_id, subject, text))
            initiated_by = "buyer"
            body = text
            channel = "email" if rng.random() < 0.8 else "seller_central"
        elif step_kind == "seller_reply":
            category, subject, body, reply_to = self._reply(order, detail)
        else:
            if step_kind == "critical":
                category = detail
            elif step_kind == "other":
                category = self._other_category(buyer)
            else:
                category = step_kind
            subject, body, channel, language, attachments = self._proactive(order, sent, category)

        us_marketplace, with_initiator, with_null_reply, opt_out_form, with_language, with_buyer_language, \
            utc = self.field_patterns[int(rng.random() * 4096)]
        record = {"message_id": message_id, "order_id": order.order_id, "buyer_id": buyer.buyer_id,
                  "sent_at": LocalClock.format_utc(sent) if utc else buyer.clock.format(sent)}
        if us_marketplace or buyer.marketplace != "US":
            record["marketplace"] = buyer.marketplace
        if with_initiator or initiated_by == "buyer":
            record["initiated_by"] = initiated_by
        if with_null_reply or reply_to is not None:
            record["reply_to"] = reply_to
        record["channel"] = channel
        record["subject"] = subject
        record["body"] = body
        record["category"] = category
        if opt_out_form == 0:
            record["buyer_opted_out"] = buyer.opted_out
        elif opt_out_form == 1:
            record["buyer_opted_out"] = None
        self._anchor_fields(record, order, sent)
        if with_language:
            record["language"] = language
        if with_buyer_language:
            record["buyer_language"] = buyer.language
        if attachments is not None:
            record["attachments"] = attachments
        return record

    def _anchor_fields(self, record: dict, order: Order, sent: int) -> None:
        mode = order.anchor_mode
        if mode == "absent":
            return
        if mode == "null":
            record["delivered_at"] = None
            record["order_placed_at"] = None
            return
        # Delivery is only known once it has happened.
        if mode == "both" and sent >= order.delivered_at:
            record["delivered_at"] = order.delivered_text
        else:
            record["delivered_at"] = None
        record["order_placed_at"] = order.placed_text

    def _reply(self, order: Order, topic) -> tuple[str, str, str, str | None]:
        rng = self.rng
        question_id, question_subject, question_text = order.questions[-1] if order.questions else (None, "", "")
        answer = REPLY_TEXT[int(rng.random() * len(REPLY_TEXT))]
        roll = rng.random()
        if roll < 0.85:
            body = f"> {question_text}\n\n{answer}"
        elif roll < 0.93:
            body = answer  # answered without the buyer's text (D6 when opted out)
        else:
            body = f"Hi {order.buyer.name},\n\nYou wrote: \"{question_text}\"\n\n{answer}"
        # A few sellers answer in a fresh thread instead of replying.
        reply_to = question_id if rng.random() < 0.95 else None
        category = topic[0] if rng.random() < 0.25 else "customer_service_reply"
        if rng.random() < 0.08:
            body += " " + self._extra("emoji", order.order_id, rng)
        if rng.random() < 0.05:
            body += " " + self._extra("email", order.order_id, rng)
        return category, f"Re: {question_subject}", body, reply_to

    def _proactive(self, order: Order, sent: int, category: str):
        rng = self.rng
        buyer = order.buyer
        if category in ("review_request", "feedback_request") and sent >= REQUEST_A_REVIEW_LAUNCH \
                and rng.random() < 0.35:
            # Amazon's own template: fixed text, counts as the order's review request.
            return REQUEST_A_REVIEW_SUBJECT, REQUEST_A_REVIEW_BODY, "request_a_review", "en", None
        language = buyer.language if buyer.language in FOREIGN_TEXT and rng.random() < 0.6 else "en"
        key = (category, sent >= GUIDELINES_2020, language)
        pool = self.text_pools.get(key)
        if pool is None:
            pool = self.text_pools[key] = [self._render_text(*key) for _ in range(TEXTS_PER_POOL)]
        subject, body, channel, attachments = pool[int(rng.random() * TEXTS_PER_POOL)]
        fill = {"oid": order.order_id, "product": order.product, "name": buyer.name}
        if attachments == "invoice":
            attachments = [{"name": f"invoice-{order.order_id[-7:]}.pdf", "kind": "invoice"}]
        return subject.format_map(fill), body.format_map(fill), channel, language, attachments

    def _render_text(self, category: str, modern: bool, language: str) -> tuple:
        """(subject, body, channel, attachments) with {oid}, {name}, {product} unfilled."""
        rng = self.text_rng
        fill = _TEXT_FILL
        if language in FOREIGN_TEXT:
            core = _pick(rng, FOREIGN_TEXT[language])
        else:
            core = _pick(rng, CORE_TEXT[category])
            if category == "cross_sell":
                core = core.replace("{product2}", _pick(rng, PRODUCTS))
        parts = ["Hi {name},\n\n" if rng.random() < 0.7 else "Dear {name},\n", core]
        for extra, chance in EXTRA_CHANCES[modern, category in ("review_request", "feedback_request")]:
            if rng.random() < chance:
                parts.append(" " + self._extra(extra, "{oid}", rng))
        if rng.random() < 0.8:
            parts.append(_pick(rng, SIGNOFFS))
        body = "".join(parts)
        if rng.random() < 0.1:
            body = "<html><body><p>" + body.replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p></body></html>"
        step_kind = "critical" if category in CRITICAL_CATEGORIES else (
            "other" if category in OTHER_CATEGORIES else category)
        subject, channel = self._subject_and_channel(rng, step_kind, category, fill)

        roll = rng.random()
        attachments = None
        if category == "invoice":
            attachments = "invoice"  # named after the order: made when sent
        elif category == "proactive_customer_service" and roll < 0.5:
            attachments = [dict(_pick(rng, ATTACHMENTS["product_instructions"]))]
        elif category == "custom_design_verification" and roll < 0.8:
            attachments = [{"name": "design-proof.png", "kind": "image"}]
        elif roll < 0.02:
            attachments = [dict(_pick(rng, ATTACHMENTS["warranty"]))]
        elif roll < 0.04:
            attachments = [dict(_pick(rng, ATTACHMENTS["other"]))]
        elif roll < 0.05:
            attachments = []
        return subject, body, channel, attachments

    @staticmethod
    def _subject_and_channel(rng: random.Random, step_kind: str, category: str, fill: dict) -> tuple[str, str]:
        channel = "email" if rng.random() < 0.75 else "api" if rng.random() < 0.6 else "seller_central"
        critical = category in CRITICAL_CATEGORIES
        roll = rng.random()
        if critical:
            if roll < 0.35:
                return "Additional Information Required", "seller_central" if rng.random() < 0.85 else channel
            if roll < 0.6:
                tag = ("[Important]", "[IMPORTANT]", "[important]")[int(rng.random() * 3)]
                pool = SUBJECTS["critical"]
                return f"{tag} {pool[int(rng.random() * len(pool))].format(**fill)}", channel
            if roll < 0.68:
                return f"IMPORTANT: {fill['product']} delivery", channel  # no brackets: not honoured
        elif step_kind == "other" or category in ("review_request", "feedback_request"):
            # Misused sanctioned paths on non-critical messages (D4, D8).
            if roll < 0.03:
                return "Additional Information Required", "seller_central"
            if roll < 0.06:
                return f"[Important] {SUBJECTS['other'][0].format(**fill)}", channel
            if roll < 0.08:
                return f"IMPORTANT - {SUBJECTS['other'][1]}", channel
        pool = SUBJECTS.get(category) or SUBJECTS["critical" if critical else "other"]
        return pool[int(rng.random() * len(pool))].format(**fill), channel

    def _extra(self, kind: str, order_id: str, rng: random.Random) -> str:
        template = _pick(rng, EXTRAS[kind])
        fields = EXTRA_FIELDS[template]
        if not fields:
            return template
        values = {}
        for field in fields:  # draw only what the template uses
            if field == "oid":
                values[field] = order_id
            elif field == "asin":
                values[field] = _pick(rng, self.asins)
            elif field == "host":
                values[field] = _pick(rng, BRAND_HOSTS)
            elif field == "short":
                values[field] = _pick(rng, SHORT_HOSTS)
            elif field == "code":
                values[field] = f"{int(rng.random() * 36**5):x}"
            else:  # d2, d3, d4: that many random digits
                width = int(field[1])
                values[field] = f"{int(rng.random() * 10**width):0{width}d}"
        return template.format_map(values)


def _between(rng: random.Random, low: float, high: float) -> float:
    return low + (high - low) * rng.random()  # random.uniform without its call overhead


def _pick(rng: random.Random, pool):
    return pool[int(rng.random() * len(pool))]


def _plan_time(step) -> int:
    return step[0]


# --------------------------------------------------------------------------
# Malformation: a separate RNG, so a different --malformed rate leaves the
# underlying valid records unchanged.

MALFORMED_KINDS = ("invalid_json", "naive_timestamp", "unknown_category", "missing_field",
                   "wrong_type", "bad_marketplace")


class Breaker:
    def __init__(self, seed: int, fraction: float, json_output: bool):
        self.rng = random.Random(seed * 1_000_003 + 17)
        self.fraction = fraction
        self.json_output = json_output
        self.counts = {kind: 0 for kind in MALFORMED_KINDS}

    def maybe_break(self, record: dict, is_event: bool) -> tuple[dict | None, str | None, str | None]:
        """Returns (record, kind, raw_text); raw_text replaces the record for invalid JSON."""
        rng = self.rng
        if rng.random() >= self.fraction:
            return record, None, None
        kinds = (("invalid_json",) if self.json_output else ()) + (
            ("naive_timestamp", "missing_field", "wrong_type") if is_event else
            ("naive_timestamp", "unknown_category", "missing_field", "wrong_type", "bad_marketplace"))
        kind = kinds[int(rng.random() * len(kinds))]
        self.counts[kind] += 1
        record = dict(record)
        if kind == "invalid_json":
            return None, kind, self._broken_json(record)
        if kind == "naive_timestamp":
            field = "at" if is_event else ("sent_at" if rng.random() < 0.8 or not record.get("order_placed_at")
                                           else "order_placed_at")
            record[field] = _strip_offset(record[field])
        elif kind == "unknown_category":
            record["category"] = _pick(rng, ("promotion", "review", "shipping_update", "", "Review_Request",
                                             "misc", "follow_up"))
        elif kind == "missing_field":
            fields = ("buyer_id", "at") if is_event else ("message_id", "order_id", "buyer_id", "sent_at")
            del record[_pick(rng, fields)]
        elif kind == "wrong_type":
            self._wrong_type(record, is_event)
        elif kind == "bad_marketplace":
            record["marketplace"] = _pick(rng, ("XX", "usa", "Amazon.com", "EU", "us ", "FR-"))
        return record, kind, None

    def _wrong_type(self, record: dict, is_event: bool) -> None:
        rng = self.rng
        if is_event:
            record["at"] = _pick(rng, ("yesterday", "last week"))
            return
        roll = rng.random()
        if roll < 0.45:
            record["buyer_opted_out"] = _pick(rng, ("maybe", "yes", "unknown"))
        elif roll < 0.65:
            record["attachments"] = _pick(rng, ("invoice.pdf", {"name": "manual.pdf"}))
        elif roll < 0.85 or not self.json_output:
            record["sent_at"] = _pick(rng, ("last Tuesday", "28/03/2017 09:15", "1490700000"))
        else:
            # Only JSON can carry a non-string id; in CSV it would read as a string.
            record["message_id"] = int(rng.random() * 10**9)

    def _broken_json(self, record: dict) -> str:
        text = orjson.dumps(record).decode()
        roll = self.rng.random()
        if roll < 0.4:
            return text[: max(1, int(len(text) * _between(self.rng, 0.2, 0.95)))]  # truncated export
        if roll < 0.6:
            return text[:-1] + ",}"  # trailing comma
        if roll < 0.8:
            return text.replace('"', "'", 6)  # Python-style quotes
        return text.replace('":', '" ', 1)  # lost colon


def _strip_offset(stamp: str) -> str:
    if stamp.endswith("Z"):
        return stamp[:-1]
    return stamp[:-6]


# --------------------------------------------------------------------------
# Writers

class JsonlWriter:
    def __init__(self, path: Path, header: bool = True):
        self.handle = open(path, "wb")
        self.buffer: list[bytes] = []

    def write(self, record: dict | None, raw: str | None) -> None:
        self.buffer.append(orjson.dumps(record) if raw is None else raw.encode())
        if len(self.buffer) >= 8192:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.handle.write(b"\n".join(self.buffer) + b"\n")
            self.buffer.clear()

    def close(self) -> None:
        self.flush()
        self.handle.close()


def _cell(record: dict, column: str) -> str | None:
    """CSV semantics: absent and null are empty cells, lists are JSON text."""
    value = record.get(column)
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    return str(value)


class CsvWriter:
    def __init__(self, path: Path, header: bool = True):
        self.handle = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)
        if header:  # parts after the first are appended to the first
            self.writer.writerow(COLUMNS)

    def write(self, record: dict, raw: str | None) -> None:
        self.writer.writerow([_cell(record, c) or "" for c in COLUMNS])

    def close(self) -> None:
        self.handle.close()


class ParquetWriter:
    """Same columns and cell semantics as CSV (all strings, nullable), in row groups."""

    ROW_GROUP = 100_000

    def __init__(self, path: Path, header: bool = True):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([(c, pa.string()) for c in COLUMNS])
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.columns: dict[str, list] = {c: [] for c in COLUMNS}
        self.rows = 0

    def write(self, record: dict, raw: str | None) -> None:
        for column in COLUMNS:
            self.columns[column].append(_cell(record, column))
        self.rows += 1
        if self.rows >= self.ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = self.pa.Table.from_pydict(self.columns, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.ROW_GROUP)
            self.columns = {c: [] for c in COLUMNS}
            self.rows = 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "parquet": ParquetWriter}


LINES_PER_PART = 500_000


def default_parts(total_lines: int) -> int:
    """Large logs are simulated as consecutive time slices in parallel. The
    count depends on the size only, so the bytes never depend on the machine."""
    return 1 if total_lines < 2 * LINES_PER_PART else min(8, -(-total_lines // LINES_PER_PART))


def _part_seed(seed: int, index: int) -> int:
    return seed if index == 0 else (seed * 1_000_003 + index * 7_919) % 2**63


def _run_part(spec: dict) -> dict:
    """Simulates one time slice into `spec["path"]`; returns its counts."""
    seed = _part_seed(spec["seed"], spec["index"])
    simulator = LogSimulator(spec["lines"], seed, spec["low"], spec["high"], spec["arrivals_from"],
                             part=spec["index"])
    breaker = Breaker(seed, spec["malformed"], json_output=spec["format"] == "jsonl")
    writer = WRITERS[spec["format"]](spec["path"], header=spec["index"] == 0)
    counts = {"total_lines": 0, "valid_messages": 0, "valid_events": 0,
              "by_category": dict.fromkeys(CATEGORIES, 0), "by_year": {},
              "first_sent_at": None, "last_sent_at": None}
    by_category = counts["by_category"]
    by_year = counts["by_year"]
    valid_messages = valid_events = lines = 0
    last_sent = None
    try:
        for record, is_event in simulator.records():
            lines += 1
            broken, kind, raw = breaker.maybe_break(record, is_event)
            writer.write(broken, raw)
            if kind is not None:
                continue
            if is_event:
                valid_events += 1
                continue
            valid_messages += 1
            by_category[record["category"]] += 1
            last_sent = record["sent_at"]
            if counts["first_sent_at"] is None:
                counts["first_sent_at"] = last_sent
            year = last_sent[:4]
            by_year[year] = by_year.get(year, 0) + 1
    finally:
        writer.close()
    counts.update(total_lines=lines, valid_messages=valid_messages, valid_events=valid_events,
                  last_sent_at=last_sent, malformed=breaker.counts,
                  orders=simulator.orders_admitted, buyers=simulator.buyers_created)
    return counts


def _append_part(fmt: str, target: Path, part: Path) -> None:
    if fmt == "parquet":
        return  # merged separately: a Parquet file cannot be appended to
    # Not opened for appending: copy_file_range refuses O_APPEND targets.
    with open(target, "r+b") as sink, open(part, "rb") as source:
        start = sink.seek(0, os.SEEK_END)
        try:  # in-kernel copy where the OS offers it
            remaining = os.fstat(source.fileno()).st_size
            while remaining > 0:
                copied = os.copy_file_range(source.fileno(), sink.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
        except (AttributeError, OSError):
            source.seek(0)
            sink.seek(start)
            sink.truncate()  # drop a partial in-kernel copy, then copy in user space
            shutil.copyfileobj(source, sink, 16 * 2**20)
    part.unlink()


def _merge_parquet(target: Path, parts: list[Path]) -> None:
    import pyarrow.parquet as pq

    schema = pq.read_schema(parts[0])
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group))
            part.unlink()


def generate(total_lines: int, seed: int, out: Path, fmt: str = "jsonl", malformed: float = 0.0,
             start: date = date(2016, 1, 1), end: date = date(2025, 12, 31),
             parts: int | None = None, jobs: int | None = None) -> dict:
    """Writes the log and its truth sidecar; returns the truth counts.

    `parts` changes the output (it is part of the seed's meaning); `jobs` only
    says how many processes simulate the parts."""
    if total_lines < 1:
        raise ValueError("--messages must be at least 1")
    parts = parts or default_parts(total_lines)
    low, high = _epoch(start), _epoch(end) + DAY  # --end is inclusive
    calendar = Calendar(low, high)
    cuts = [low] + [calendar.time_at(f) for f in LinesProfile(calendar, low, high, seed).split(parts)] + [high]
    specs = []
    for index in range(parts):
        path = out if (index == 0 and fmt != "parquet") or parts == 1 else Path(f"{out}.part{index}")
        specs.append({
            "index": index, "seed": seed, "format": fmt, "malformed": malformed, "path": path,
            "lines": total_lines * (index + 1) // parts - total_lines * index // parts,
            "low": cuts[index], "high": cuts[index + 1],
            "arrivals_from": max(low, cuts[index] - WARM_UP) if index else low,
        })
    jobs = max(1, min(jobs or os.cpu_count() or 1, parts))
    if jobs == 1:
        results = [_run_part(spec) for spec in specs]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_run_part, specs, chunksize=1)
    if fmt == "parquet" and parts > 1:
        _merge_parquet(out, [spec["path"] for spec in specs])
    else:
        for spec in specs[1:]:
            _append_part(fmt, out, spec["path"])

    malformed_counts = dict.fromkeys(MALFORMED_KINDS, 0)
    by_category = dict.fromkeys(CATEGORIES, 0)
    by_year: dict[str, int] = {}
    for result in results:
        for kind, count in result["malformed"].items():
            malformed_counts[kind] += count
        for category, count in result["by_category"].items():
            by_category[category] += count
        for year, count in result["by_year"].items():
            by_year[year] = by_year.get(year, 0) + count
    sent = [r for r in results if r["first_sent_at"]]
    truth = {
        "generator": "bench/generate.py", "seed": seed, "format": fmt, "malformed_fraction": malformed,
        "start": start.isoformat(), "end": end.isoformat(), "parts": parts,
        "total_lines": sum(r["total_lines"] for r in results),
        "valid_messages": sum(r["valid_messages"] for r in results),
        "valid_events": sum(r["valid_events"] for r in results),
        "malformed_total": sum(malformed_counts.values()), "malformed": malformed_counts,
        "orders": sum(r["orders"] for r in results), "buyers": sum(r["buyers"] for r in results),
        "first_valid_sent_at": sent[0]["first_sent_at"] if sent else None,
        "last_valid_sent_at": sent[-1]["last_sent_at"] if sent else None,
        "valid_messages_by_category": by_category, "valid_messages_by_year": dict(sorted(by_year.items())),
    }
    Path(f"{out}.truth.json").write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, required=True, help="lines to write (messages + events)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", choices=sorted(WRITERS), default=None,
                        help="default: from the --out suffix, else jsonl")
    parser.add_argument("--malformed", type=float, default=0.0, help="fraction of broken lines, e.g. 0.05")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2016, 1, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2025, 12, 31))
    parser.add_argument("--parts", type=int, default=None,
                        help="time slices simulated independently (default: from --messages)")
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: CPU count); "
                        "does not change the output")
    args = parser.parse_args(argv)
    fmt = args.format or {".csv": "csv", ".parquet": "parquet"}.get(args.out.suffix, "jsonl")
    if not 0.0 <= args.malformed <= 1.0:
        parser.error("--malformed must be between 0 and 1")
    if args.end < args.start:
        parser.error("--end is before --start")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    truth = generate(args.messages, args.seed, args.out, fmt, args.malformed, args.start, args.end,
                     args.parts, args.jobs)
    print(f"wrote {truth['total_lines']} lines ({truth['valid_messages']} messages, {truth['valid_events']} "
          f"events, {truth['malformed_total']} malformed) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
