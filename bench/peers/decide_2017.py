"""The brief's 2017 opt-out decision (§2.3, rows D1-D9) in three peer rule
engines and in plain Python, for a like-for-like speed comparison.

Every decider takes a list of flat fact dicts

    {"opted_out": bool, "category": str, "channel": str,
     "subject_air": bool,         # subject is "Additional Information Required"
     "subject_important": bool,   # subject carries an honoured "[Important]" tag
     "is_quoted_reply": bool}     # reply on the buyer's thread quoting the buyer

and returns one outcome per fact: "allowed", "blocked" or "violation".

The table, read with the contract's "most severe finding wins":
  D1  not opted out                                   -> allowed
  D4  opted out, non-critical, AIR via seller_central -> violation (misuse)
  D8  opted out, non-critical, [Important] by mail    -> violation (misuse)
  D5  opted out, quoted reply on the buyer's thread   -> allowed
  D3  opted out, critical, AIR via seller_central     -> allowed
  D7  opted out, critical, [Important] by mail        -> allowed
  D2/D6/D9 anything else when opted out               -> blocked
The AIR path is Seller Central's Contact Buyer page, so an AIR subject sent by
other channels is an ordinary subject; the "[Important]" tag is the path for
mail sent outside Seller Central (channel email or api), as in D7 and as the
engine's shipped 2017 policy reads it. Misuse outranks the reply path because
a violation is more severe than a delivery.
"""

from __future__ import annotations

import json
from functools import lru_cache

CRITICAL_CATEGORIES = (
    "product_customization", "delivery_scheduling", "shipping_address_issue",
    "custom_design_verification", "home_service_appointment", "order_info_request",
)
NON_CRITICAL_CATEGORIES = (
    "fulfillment_issue", "return_question", "invoice", "review_request", "feedback_request",
    "order_confirmation", "shipment_confirmation", "delivery_confirmation", "proactive_customer_service",
    "out_of_stock_notice", "marketing", "cross_sell", "thank_you_only", "customer_service_reply",
)
CATEGORIES = CRITICAL_CATEGORIES + NON_CRITICAL_CATEGORIES
CHANNELS = ("email", "seller_central", "request_a_review", "api")
OUTCOMES = ("allowed", "blocked", "violation")


# --------------------------------------------------------------------------
# Plain Python: the reference every peer must agree with.

_CRITICAL = frozenset(CRITICAL_CATEGORIES)
MAIL_CHANNELS = ("email", "api")  # outside Seller Central: where "[Important]" is a path


def decide_reference_one(fact: dict) -> str:
    if not fact["opted_out"]:
        return "allowed"  # D1
    critical = fact["category"] in _CRITICAL
    channel = fact["channel"]
    sanctioned_subject = (fact["subject_air"] and channel == "seller_central") or (
        fact["subject_important"] and channel in MAIL_CHANNELS)
    if sanctioned_subject and not critical:
        return "violation"  # D4, D8
    if fact["is_quoted_reply"] or sanctioned_subject:
        return "allowed"  # D5, D3, D7
    return "blocked"  # D2, D6, D9


def decide_reference(facts: list[dict]) -> list[str]:
    return [decide_reference_one(fact) for fact in facts]


# --------------------------------------------------------------------------
# Cedar: the category is the resource, its membership in the "critical"
# group is entity data, the message's path is request context. Cedar answers
# only Allow/Deny, so the outcome is read from the decision and from which
# policies determined it: a Deny is the opt-out block, an Allow that rests on
# a misuse policy (D4, D8) is a violation.

CEDAR_POLICIES = """
@id("D1")
permit (principal, action == Action::"deliver", resource)
when { !context.opted_out };

@id("D3")
permit (principal, action == Action::"deliver", resource in CategoryGroup::"critical")
when { context.subject_air && context.channel == "seller_central" };

@id("D4")
permit (principal, action == Action::"deliver", resource)
when { context.opted_out && context.subject_air && context.channel == "seller_central" }
unless { resource in CategoryGroup::"critical" };

@id("D5")
permit (principal, action == Action::"deliver", resource)
when { context.is_quoted_reply };

@id("D7")
permit (principal, action == Action::"deliver", resource in CategoryGroup::"critical")
when { context.subject_important && (context.channel == "email" || context.channel == "api") };

@id("D8")
permit (principal, action == Action::"deliver", resource)
when { context.opted_out && context.subject_important &&
       (context.channel == "email" || context.channel == "api") }
unless { resource in CategoryGroup::"critical" };
"""
CEDAR_MISUSE = frozenset({"D4", "D8"})


def cedar_entities() -> list[dict]:
    critical = {"type": "CategoryGroup", "id": "critical"}
    entities = [{"uid": critical, "attrs": {}, "parents": []},
                {"uid": {"type": "Seller", "id": "seller"}, "attrs": {}, "parents": []}]
    for category in CATEGORIES:
        entities.append({"uid": {"type": "Category", "id": category}, "attrs": {},
                         "parents": [critical] if category in _CRITICAL else []})
    return entities


@lru_cache(maxsize=1)
def _cedar_handles():
    import cedarpy

    return cedarpy.PolicySet.from_str(CEDAR_POLICIES), cedarpy.Entities.from_json_str(json.dumps(cedar_entities()))


_CEDAR_SELLER = {"type": "Seller", "id": "seller"}
_CEDAR_DELIVER = {"type": "Action", "id": "deliver"}


def cedar_requests(facts: list[dict]) -> list[dict]:
    # Structured uids: measured faster in cedarpy than 'Type::"id"' strings, which it parses.
    return [{
        "principal": _CEDAR_SELLER,
        "action": _CEDAR_DELIVER,
        "resource": {"type": "Category", "id": fact["category"]},
        "context": {"opted_out": fact["opted_out"], "channel": fact["channel"],
                    "subject_air": fact["subject_air"], "subject_important": fact["subject_important"],
                    "is_quoted_reply": fact["is_quoted_reply"]},
    } for fact in facts]


def decide_cedar(facts: list[dict]) -> list[str]:
    import cedarpy

    policies, entities = _cedar_handles()
    results = cedarpy.is_authorized_batch(cedar_requests(facts), policies, entities)
    outcomes = []
    for result in results:
        if not result.allowed:
            outcomes.append("blocked")
            continue
        determining = set(result.diagnostics.id_annotations_by_reason.values())
        outcomes.append("violation" if determining & CEDAR_MISUSE else "allowed")
    return outcomes


# --------------------------------------------------------------------------
# zen-engine: a JDM graph (input -> decision table -> output). The table uses
# the "first" hit policy, so row order encodes precedence; an empty cell
# matches anything; a comma list in a cell matches any of its values.

def _quoted(values) -> str:
    return ", ".join(f'"{value}"' for value in values)


def zen_decision_table() -> dict:
    critical = _quoted(CRITICAL_CATEGORIES)
    mail = _quoted(MAIL_CHANNELS)
    # columns: opted_out, category, channel, subject_air, subject_important, is_quoted_reply
    rows = (
        ("D1", "false", "", "", "", "", "", "allowed"),
        ("D3", "true", critical, '"seller_central"', "true", "", "", "allowed"),
        ("D7", "true", critical, mail, "", "true", "", "allowed"),
        ("D4", "true", "", '"seller_central"', "true", "", "", "violation"),
        ("D8", "true", "", mail, "", "true", "", "violation"),
        ("D5", "true", "", "", "", "", "true", "allowed"),
        ("D2", "", "", "", "", "", "", "blocked"),  # also D6, D9
    )
    fields = ("opted_out", "category", "channel", "subject_air", "subject_important", "is_quoted_reply")
    inputs = [{"id": f"in_{field}", "name": field, "field": field} for field in fields]
    outputs = [{"id": "out_outcome", "name": "outcome", "field": "outcome"},
               {"id": "out_rule", "name": "rule", "field": "rule"}]
    rules = []
    for rule_id, *cells, outcome in rows:
        rule = {"_id": rule_id}
        rule.update({f"in_{field}": cell for field, cell in zip(fields, cells)})
        rule.update({"out_outcome": f'"{outcome}"', "out_rule": f'"{rule_id}"'})
        rules.append(rule)
    return {
        "nodes": [
            {"id": "request", "type": "inputNode", "name": "Request", "position": {"x": 0, "y": 0}},
            {"id": "optout2017", "type": "decisionTableNode", "name": "2017 opt-out gate",
             "position": {"x": 300, "y": 0},
             "content": {"hitPolicy": "first", "inputs": inputs, "outputs": outputs, "rules": rules}},
            {"id": "response", "type": "outputNode", "name": "Response", "position": {"x": 600, "y": 0}},
        ],
        "edges": [
            {"id": "request-table", "sourceId": "request", "targetId": "optout2017", "type": "edge"},
            {"id": "table-response", "sourceId": "optout2017", "targetId": "response", "type": "edge"},
        ],
    }


ZEN_KEY = "optout-2017.json"


@lru_cache(maxsize=1)
def _zen_engine():
    import zen

    engine = zen.ZenEngine({"loader": {"type": "static", "content": {ZEN_KEY: zen_decision_table()}}})
    return engine, engine.create_decision(json.dumps(zen_decision_table()))


def decide_zen(facts: list[dict]) -> list[str]:
    """One evaluate_batch call for the whole list (the engine's bulk entry point)."""
    engine, _ = _zen_engine()
    results = engine.evaluate_batch([{"key": ZEN_KEY, "context": fact} for fact in facts])
    outcomes = []
    for result in results:
        if not result.get("success", False):
            raise RuntimeError(f"zen-engine evaluation failed: {result.get('error')}")
        outcomes.append(result["data"]["result"]["outcome"])
    return outcomes


def decide_zen_each(facts: list[dict]) -> list[str]:
    """One ZenDecision.evaluate call per fact (the simplest use)."""
    _, decision = _zen_engine()
    return [decision.evaluate(fact)["result"]["outcome"] for fact in facts]


# --------------------------------------------------------------------------
# rule-engine: one rule expression per table row, tried in order (first match
# wins), each type-checked against the fact's declared fields.

RULE_ENGINE_ROWS = (
    ("D1", "not opted_out", "allowed"),
    ("D4", "subject_air and channel == 'seller_central' and category not in critical", "violation"),
    ("D8", "subject_important and channel in mail and category not in critical", "violation"),
    ("D5", "is_quoted_reply", "allowed"),
    ("D3", "subject_air and channel == 'seller_central' and category in critical", "allowed"),
    ("D7", "subject_important and channel in mail and category in critical", "allowed"),
    ("D2", "true", "blocked"),  # also D6, D9
)


@lru_cache(maxsize=1)
def _rule_engine_rows():
    import rule_engine

    types = rule_engine.DataType
    context = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict({
        "opted_out": types.BOOLEAN, "category": types.STRING, "channel": types.STRING,
        "subject_air": types.BOOLEAN, "subject_important": types.BOOLEAN, "is_quoted_reply": types.BOOLEAN,
    }))
    critical_list = "[" + ", ".join(f"'{c}'" for c in CRITICAL_CATEGORIES) + "]"
    mail_list = "[" + ", ".join(f"'{c}'" for c in MAIL_CHANNELS) + "]"
    # The lists are literals in each expression, so facts need no extra fields.
    return tuple((rule_id, rule_engine.Rule(expression.replace("critical", critical_list)
                                            .replace(" mail ", f" {mail_list} "), context=context),
                  outcome) for rule_id, expression, outcome in RULE_ENGINE_ROWS)


def decide_rule_engine(facts: list[dict]) -> list[str]:
    rows = _rule_engine_rows()
    outcomes = []
    for fact in facts:
        for _, rule, outcome in rows:
            if rule.matches(fact):
                outcomes.append(outcome)
                break
    return outcomes


# --------------------------------------------------------------------------

PEERS = {
    "plain-python": ("", decide_reference),
    "cedarpy": ("cedarpy", decide_cedar),
    "zen-engine (batch)": ("zen", decide_zen),
    "zen-engine (per fact)": ("zen", decide_zen_each),
    "rule-engine": ("rule_engine", decide_rule_engine),
}


def all_facts() -> list[dict]:
    """The full cross product of the decision's inputs (1,280 facts)."""
    return [{"opted_out": opted_out, "category": category, "channel": channel, "subject_air": air,
             "subject_important": important, "is_quoted_reply": quoted}
            for opted_out in (False, True) for category in CATEGORIES for channel in CHANNELS
            for air in (False, True) for important in (False, True) for quoted in (False, True)]
