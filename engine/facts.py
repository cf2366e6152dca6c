"""A message plus its history → the finite, hashable facts that rules read.

Structural facts come straight from the record and the contract's definitions
(opt-out state from events, what counts as a quoted reply); every other fact
is a detector declared in a policy file. Raw values (body, exact days) never
enter the vector: only booleans and enumerations do, so a decision cache keyed
by the vector is sound. Offending spans travel beside the vector.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Optional

from .detectors import PriorCountDetector, TextViews, _RegexSpec, body_text, run_detector
from .model import BuyerEvent, Category, Channel, InitiatedBy, Message

BOOL = (True, False)

# Names the durable_rules path uses for itself (durable-rules-notes §7, rule of thumb 6).
RESERVED_FACT_NAMES = frozenset({"id", "sid", "type", "msgpolicy_fact"})

# name → finite domain (None: an open domain that is never unknown)
STRUCTURAL_FACTS: dict[str, Optional[tuple]] = {
    "category": tuple(c.value for c in Category),
    "channel": tuple(c.value for c in Channel),
    "initiated_by": tuple(i.value for i in InitiatedBy),
    "marketplace": None,
    "opted_out": BOOL,
    "has_reply_to": BOOL,
    "quotes_buyer_message": BOOL,
}

STRUCTURAL_DESCRIPTIONS = {
    "category": "the message's purpose (CONTRACT §2): the record's own, else inferred from the text; unknown (among the classifier's candidates) when the inference is not confident",
    "channel": "how it was sent: email, seller_central, request_a_review or api",
    "initiated_by": "seller or buyer",
    "marketplace": "the marketplace code (US, UK, DE, JP, …)",
    "opted_out": "the buyer's opt-out state at send time: the record's own value, else the latest buyer event before sent_at; unknown otherwise",
    "has_reply_to": "the message names a buyer message it answers (reply_to)",
    "quotes_buyer_message": "the body contains the text of the buyer message named by reply_to, an earlier message of the same buyer; unknown when that message is not in the log",
}


_QUOTE_PREFIX = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_SPACE = re.compile(r"\s+")


def normalise_for_quote(text: str) -> str:
    """Collapse white space and drop leading '>' quote marks (CONTRACT §4, replies)."""
    return _SPACE.sub(" ", _QUOTE_PREFIX.sub("", body_text(text))).strip().casefold()


# id(spec) → (weak reference, key). Weak, so a released policy set's specs are freed (and their
# entries with them) rather than kept for the life of the process; the reference also tells
# a reused id from the spec that first had it.
_SPEC_KEYS: dict[int, tuple[weakref.ref, str]] = {}


def _forget_spec(ident: int, ref: weakref.ref) -> None:
    entry = _SPEC_KEYS.get(ident)
    if entry is not None and entry[0] is ref:
        del _SPEC_KEYS[ident]


def spec_key(spec) -> str:
    """Detector identity by content: equal specs in different versions share one result."""
    ident = id(spec)
    entry = _SPEC_KEYS.get(ident)
    if entry is None or entry[0]() is not spec:
        ref = weakref.ref(spec, lambda r, ident=ident: _forget_spec(ident, r))
        entry = _SPEC_KEYS[ident] = (ref, spec.model_dump_json())
    return entry[1]


@dataclass
class _BuyerMessage:
    buyer_id: str
    text: str


@dataclass
class History:
    """What earlier records of a log tell about later ones: same buyer, same order only."""

    prior_detectors: tuple[PriorCountDetector, ...] = ()
    opt_state: dict[str, bool] = field(default_factory=dict)
    buyer_messages: dict[str, _BuyerMessage] = field(default_factory=dict)
    # (detector index, scope key) → (count, first message id)
    counts: dict[tuple[int, str], tuple[int, str]] = field(default_factory=dict)
    # (detector index, scope key) → earlier messages that count only if their uncertain category does
    possible: dict[tuple[int, str], int] = field(default_factory=dict)

    def __post_init__(self):
        self._index = {spec_key(spec): i for i, spec in enumerate(self.prior_detectors)}

    def apply_event(self, event: BuyerEvent) -> None:
        self.opt_state[event.buyer_id] = event.type == "buyer_opt_out"

    def opted_out(self, message: Message) -> Optional[bool]:
        if message.buyer_opted_out is not None:
            return message.buyer_opted_out
        return self.opt_state.get(message.buyer_id)

    def quotes_buyer_message(self, message: Message) -> Optional[bool]:
        if message.reply_to is None:
            return False
        quoted = self.buyer_messages.get(message.reply_to)
        if quoted is None:
            return None  # the answered message is not in the log: we cannot tell
        if quoted.buyer_id != message.buyer_id:
            return False  # another buyer's thread is never this buyer's thread
        if not quoted.text:
            return True
        return quoted.text in normalise_for_quote(message.body)

    def prior_count(self, spec: PriorCountDetector, message: Message) -> tuple[int, str, int]:
        """(definite count, first message id, messages that count only if their uncertain category does)."""
        key = (self._index[spec_key(spec)], message.order_id if spec.scope == "order" else message.buyer_id)
        count, first = self.counts.get(key, (0, ""))
        return count, first, self.possible.get(key, 0)

    def record(self, message: Message, candidates: tuple[str, ...] = ()) -> None:
        """Remember what later messages may need to know about this one.

        `candidates`: the plausible categories of a message whose category is
        neither given nor confidently inferred."""
        if message.initiated_by is InitiatedBy.buyer:
            self.buyer_messages[message.message_id] = _BuyerMessage(
                message.buyer_id, normalise_for_quote(message.body)
            )
            return
        for i, spec in enumerate(self.prior_detectors):
            if spec.counts(message):
                key = (i, message.order_id if spec.scope == "order" else message.buyer_id)
                count, first = self.counts.get(key, (0, message.message_id))
                self.counts[key] = (count + 1, first)
            elif spec.might_count(message, candidates):
                key = (i, message.order_id if spec.scope == "order" else message.buyer_id)
                self.possible[key] = self.possible.get(key, 0) + 1


@dataclass(frozen=True)
class MessageFacts:
    """Facts for one version: the vector (None = unknown) and the spans beside it."""

    values: dict
    spans: dict


def structural_facts(message: Message, history: History) -> dict:
    return {
        "category": message.category.value if message.category is not None else None,
        "channel": message.channel.value,
        "initiated_by": message.initiated_by.value,
        "marketplace": message.marketplace,
        "opted_out": history.opted_out(message),
        "has_reply_to": message.reply_to is not None,
        "quotes_buyer_message": history.quotes_buyer_message(message),
    }


def facts_for(message: Message, history: History, version, base: dict, views: TextViews,
              detector_cache: dict) -> MessageFacts:
    """The facts one version's rules read. Detector results are shared across versions by spec."""
    values = {name: base[name] for name in version.structural_facts_used}
    spans: dict[str, str] = {}
    for name, (key, spec) in version.detectors_used.items():
        result = detector_cache.get(key)
        if result is None:
            # Most regex detectors are ruled out by the literal prefilter: one set test
            # here, instead of a call into run_detector (the same test, done later).
            # The gate first: a spec's first use registers its literals, which makes
            # earlier hits stale (literal_hits recomputes them then).
            gate = spec.literal_gate if isinstance(spec, _RegexSpec) else None  # getattr on a model is slow
            if gate is not None and gate.isdisjoint(views.literal_hits()):
                result = _NO_MATCH
            if result is None:
                result = run_detector(spec, message, views, history)
            detector_cache[key] = result
        values[name], span = result
        if span:
            spans[name] = span
    return MessageFacts(values, spans)


_NO_MATCH = (False, "")
