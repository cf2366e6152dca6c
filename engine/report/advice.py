""""What to do" about a rule's findings, for the report: built from the rule and its version.

Nothing here is policy-specific: the advice follows from the finding's outcome, the
rule's own reason (policy data) and the facts its condition reads. For an
`indeterminate` finding those facts say what the records lacked; the engine's
structural facts and detector kinds say where such a fact comes from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..conditions import facts_used
from ..detectors import LanguageMatchDetector, PriorCountDetector, WindowDetector

# The structural facts a record can leave unknown, and what gives them.
STRUCTURAL_NEEDS = {
    "opted_out": "the buyer's opt-out state: export the buyer opt-out events (opt_out / opt_in) "
                 "or each message's buyer_opted_out field",
    "category": "the message's purpose: give each message's category (the classifier could not "
                "decide between candidates that are judged differently)",
    "quotes_buyer_message": "the buyer message a reply answers: include the message named by reply_to in the log",
}


def _detector_need(name: str, spec) -> Optional[str]:
    if isinstance(spec, WindowDetector):
        return f"when the window starts ({name}): give each message's {' or '.join(spec.anchors)}"
    if isinstance(spec, LanguageMatchDetector):
        return f"whether the language matches ({name}): give each message's language and buyer_language"
    if isinstance(spec, PriorCountDetector):
        return f"the earlier messages it counts ({name}): audit the whole history of each {spec.scope} in one log"
    return None  # a text detector is always decided by the message itself


def unknown_fact_needs(version, rule, categories_inferred: bool = True) -> list[str]:
    """What would decide each fact of the rule's condition that a record can leave unknown: the
    structural ones first (the opt-out state is the usual one), then the detectors'. The category
    is left out when no category was inferred (every record gave its own)."""
    facts = facts_used(rule.condition)
    needs = [need for fact, need in STRUCTURAL_NEEDS.items()
             if fact in facts and (fact != "category" or categories_inferred)]
    for fact in sorted(facts):
        if fact in version.detectors_used:
            need = _detector_need(fact, version.detectors_used[fact][1])
            if need:
                needs.append(need)
    return needs


@dataclass(frozen=True)
class Advice:
    text: str
    items: tuple[str, ...] = ()  # the alternatives the text introduces, one per line


def what_to_do(policies, policy: str, version_id: str, rule_id: str, outcome: str,
               categories_inferred: bool = True) -> Optional[Advice]:
    """What a report reader can do about this rule's findings, or None (a note, or a rule this
    policy set does not have)."""
    family = policies.families.get(policy) if policies is not None else None
    version = next((v for v in family.versions if v.id == version_id), None) if family else None
    rule = version.rule_index.get(rule_id) if version else None
    if rule is None:
        return None
    reason = rule.rule.reason.strip()
    if outcome == "indeterminate":
        needs = unknown_fact_needs(version, rule, categories_inferred)
        if not needs:
            return Advice("A fact this rule reads is missing from the records; `msgpolicy check` on one of "
                          "these messages names it.")
        return Advice("The records leave unknown a fact that decides this rule; supply "
                      + ("it:" if len(needs) == 1 else "whichever they lack:"), tuple(needs))
    if outcome == "blocked":
        return Advice(f"{reason} To reach the buyer, a message needs a path this rule lets through.")
    if outcome == "violation":
        return Advice(f"{reason} Change the messages or templates behind these, and check drafts before "
                      "sending (`msgpolicy check`, or `msgpolicy serve` in the sending tool).")
    return None
