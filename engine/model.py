"""Records users hand the engine and verdicts it hands back (CONTRACT §1-§3)."""
from __future__ import annotations

import datetime as dt
from enum import Enum
from functools import total_ordering
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


# The instants a record may hold. Outside them the engine's date arithmetic (local dates in
# any marketplace, windows of up to a century) could overflow; no real message is near them.
EARLIEST_INSTANT = dt.datetime(1800, 1, 1, tzinfo=dt.timezone.utc)
LATEST_INSTANT = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)


def check_instant(value: dt.datetime) -> dt.datetime:
    """The instant itself, or ValueError when it lies outside [EARLIEST_INSTANT, LATEST_INSTANT)."""
    try:
        utc = value.astimezone(dt.timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_INSTANT <= utc < LATEST_INSTANT:
        raise ValueError(f"instant out of range (from {EARLIEST_INSTANT.year} up to {LATEST_INSTANT.year}, UTC)")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(check_instant)]

# The longest subject or body judged (characters); a longer one is a reject, so the cost of
# matching a policy's patterns stays bounded.
MAX_TEXT_CHARS = 1_000_000


class Category(str, Enum):
    product_customization = "product_customization"
    delivery_scheduling = "delivery_scheduling"
    shipping_address_issue = "shipping_address_issue"
    order_info_request = "order_info_request"
    fulfillment_issue = "fulfillment_issue"
    return_question = "return_question"
    invoice = "invoice"
    custom_design_verification = "custom_design_verification"
    home_service_appointment = "home_service_appointment"
    review_request = "review_request"
    feedback_request = "feedback_request"
    order_confirmation = "order_confirmation"
    shipment_confirmation = "shipment_confirmation"
    delivery_confirmation = "delivery_confirmation"
    proactive_customer_service = "proactive_customer_service"
    out_of_stock_notice = "out_of_stock_notice"
    marketing = "marketing"
    cross_sell = "cross_sell"
    thank_you_only = "thank_you_only"
    customer_service_reply = "customer_service_reply"


class Channel(str, Enum):
    email = "email"
    seller_central = "seller_central"
    request_a_review = "request_a_review"
    api = "api"


class InitiatedBy(str, Enum):
    seller = "seller"
    buyer = "buyer"


class AttachmentKind(str, Enum):
    invoice = "invoice"
    product_instructions = "product_instructions"
    warranty = "warranty"
    image = "image"
    other = "other"


@total_ordering
class Outcome(str, Enum):
    """Ordered by severity: a message's outcome is the most severe of its findings."""

    no_policy = "no_policy"
    allowed = "allowed"
    blocked = "blocked"
    indeterminate = "indeterminate"
    violation = "violation"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __lt__(self, other):  # type: ignore[override]
        if not isinstance(other, Outcome):
            return NotImplemented
        return self.severity < other.severity

    @property
    def is_clean(self) -> bool:
        """Clean outcomes give exit status 0 (CONTRACT §5)."""
        return self in (Outcome.allowed, Outcome.no_policy)


_SEVERITY = {o: i for i, o in enumerate(Outcome)}


class Attachment(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: AttachmentKind


class Message(BaseModel):
    """One seller or buyer message. Unknown extra fields are kept and ignored by the rules."""

    model_config = ConfigDict(extra="allow")

    message_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    buyer_id: str = Field(min_length=1)
    sent_at: Instant
    marketplace: str = "US"
    initiated_by: InitiatedBy = InitiatedBy.seller
    reply_to: Optional[str] = None
    channel: Channel = Channel.email
    subject: str = Field("", max_length=MAX_TEXT_CHARS)
    body: str = Field("", max_length=MAX_TEXT_CHARS)
    # Optional since issue 8: when absent the engine infers it from the text
    # (engine.classifier) and a given category always wins.
    category: Optional[Category] = None
    buyer_opted_out: Optional[bool] = None
    delivered_at: Optional[Instant] = None
    order_placed_at: Optional[Instant] = None
    language: Optional[str] = None
    buyer_language: Optional[str] = None
    attachments: list[Attachment] = Field(default_factory=list)
    # Extension (compatible): marks a Handmade/custom order, read only by the
    # low-confidence D10 alternative of the 2017 family.
    handmade: Optional[bool] = None


class BuyerEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["buyer_opt_out", "buyer_opt_in"]
    buyer_id: str = Field(min_length=1)
    at: Instant


class PolicyRef(BaseModel):
    policy: str
    version: str


class Finding(BaseModel):
    rule: str
    policy: str
    version: str
    outcome: Outcome
    reason: str
    sources: list[str]
    # Extension: the quoted spans (URL, phrase, subject tag) that made the rule fire.
    evidence: dict[str, str] = Field(default_factory=dict)


class Verdict(BaseModel):
    message_id: str
    evaluated_at: dt.datetime
    outcome: Outcome
    policies: list[PolicyRef]
    findings: list[Finding]


def finding_json(f: Finding) -> dict:
    """A finding as `check --format json` prints it (evidence only when there is some)."""
    data = {"rule": f.rule, "policy": f.policy, "version": f.version, "outcome": f.outcome.value,
            "reason": f.reason, "sources": f.sources}
    if f.evidence:
        data["evidence"] = f.evidence
    return data


def verdict_json(v: Verdict) -> dict:
    """A verdict as `check --format json` prints it; the audit's result lines are the same."""
    return {
        "message_id": v.message_id,
        "evaluated_at": v.evaluated_at.isoformat(),
        "outcome": v.outcome.value,
        "policies": [{"policy": p.policy, "version": p.version} for p in v.policies],
        "findings": [finding_json(f) for f in v.findings],
    }


def message_json_schema() -> dict:
    return Message.model_json_schema()
