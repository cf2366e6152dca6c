"""Facts through the versions in force → findings → one verdict per message.

Unknown facts are never guessed. Each unknown fact a rule reads is replaced by
every value of its finite domain in turn (a "completion"), every completion is
evaluated, and the message is `indeterminate` exactly when the completions'
outcomes differ (CONTRACT §3, §4). Rules that fire in every completion are
definite findings; rules that fire in only some are reported with the
condition under which they would apply.
"""
from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal, Optional, Union

from .compile import compiled
from .conditions import facts_used
from .detectors import TextViews
from .facts import History, MessageFacts, facts_for, structural_facts
from .model import BuyerEvent, Finding, Message, Outcome, PolicyRef, Verdict
from .policyfile import PolicySet, ResolvedRule, ResolvedVersion
from .reference import ReferenceVersion
from .timeline import in_force, local_noon

Evaluator = Literal["durable", "reference"]
When = Union[None, dt.date, dt.datetime]


@dataclass(frozen=True)
class _Hit:
    key: tuple  # (family, version id, rule id): identity across completions
    version: ResolvedVersion = field(compare=False, hash=False)
    rule: ResolvedRule = field(compare=False, hash=False)


def _show(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class Judge:
    """Judges messages in time order, keeping the history later messages need.

    One Judge per log: history is per log. The decision cache maps
    (version content hash, fact vector) to the rules that fire, so durable_rules
    sees each distinct vector once; `cache=False` sends every vector to it.
    """

    def __init__(self, policies: PolicySet, evaluator: Evaluator = "durable", cache: bool = True):
        self.policies = policies
        self.evaluator = evaluator
        self.history = History(policies.prior_count_detectors())
        self._engines: dict[str, object] = {}
        self._cache: Optional[dict] = {} if cache else None

    # -- history ---------------------------------------------------------------

    def observe(self, event: BuyerEvent) -> None:
        self.history.apply_event(event)

    # -- evaluation -------------------------------------------------------------

    def _engine(self, version: ResolvedVersion):
        engine = self._engines.get(version.content_hash)
        if engine is None:
            engine = compiled(version) if self.evaluator == "durable" else ReferenceVersion(version)
            self._engines[version.content_hash] = engine
        return engine

    def _fired(self, version: ResolvedVersion, values: dict) -> frozenset[str]:
        if self._cache is None:
            return self._engine(version).fired(values)
        key = (version.content_hash, tuple(values[name] for name in version.fact_domains))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._engine(version).fired(values)
        return hit

    def instant_for(self, message: Message, at: When) -> dt.datetime:
        if at is None:
            return message.sent_at
        if isinstance(at, dt.datetime):
            return at
        return local_noon(self.policies, at, message.marketplace)

    def judge(self, message: Message, at: When = None, record: bool = True) -> Verdict:
        """The verdict for one message given the history so far; then remember it."""
        try:
            return self._judge(message, self.instant_for(message, at))
        finally:
            if record:
                self.history.record(message)

    def _judge(self, message: Message, instant: dt.datetime) -> Verdict:
        versions = in_force(self.policies, instant, message.marketplace)
        if not versions:
            return Verdict(message_id=message.message_id, evaluated_at=instant,
                           outcome=Outcome.no_policy, policies=[], findings=[])

        base = structural_facts(message, self.history)
        views = TextViews(message)
        detector_cache: dict = {}
        per_version = [(v, facts_for(message, self.history, v, base, views, detector_cache)) for v in versions]
        return self.verdict_from_facts(message.message_id, instant, per_version)

    def verdict_from_facts(self, message_id: str, instant: dt.datetime,
                           per_version: list[tuple[ResolvedVersion, MessageFacts]]) -> Verdict:
        """The verdict for given fact vectors of the versions in force (no record needed).

        The what-if exhaustive mode judges points of the finite fact space
        through this, so it shares completions and combination with `judge`."""
        refs = [PolicyRef(policy=v.family, version=v.id) for v, _ in per_version]
        if not per_version:
            return Verdict(message_id=message_id, evaluated_at=instant,
                           outcome=Outcome.no_policy, policies=[], findings=[])
        unknown: dict[str, tuple] = {}
        for version, facts in per_version:
            for name, value in facts.values.items():
                if value is None:
                    domain = version.fact_domains[name]
                    if domain is None:
                        raise ValueError(f"fact {name!r} has no finite domain but is unknown")
                    unknown[name] = domain
        names = sorted(unknown)

        completions = []  # (assignment, hits)
        for combo in itertools.product(*(unknown[n] for n in names)):
            assignment = dict(zip(names, combo))
            hits = set()
            for version, facts in per_version:
                values = {**facts.values, **{n: assignment[n] for n in names if n in facts.values}}
                for rule_id in self._fired(version, values):
                    hits.add(_Hit((version.family, version.id, rule_id), version, version.rule_index[rule_id]))
            completions.append((assignment, hits))

        return self._combine(message_id, instant, refs, per_version, unknown, completions)

    def _combine(self, message_id, instant, refs, per_version, unknown, completions) -> Verdict:
        all_hits = set().union(*(h for _, h in completions))
        definite = set.intersection(*(h for _, h in completions)) if completions else set()
        possible = all_hits - definite
        note_only = {h for h in possible if h.rule.rule.on_unknown == "note"}

        def outcome_of(hits) -> Outcome:
            counted = [h.rule.rule.outcome for h in hits if h not in note_only]
            return max(counted, default=Outcome.allowed)

        outcomes = {outcome_of(h) for _, h in completions}
        outcome = outcomes.pop() if len(outcomes) == 1 else Outcome.indeterminate

        spans_by_version = {id(v): f.spans for v, f in per_version}
        findings = []
        for hit in sorted(all_hits, key=lambda h: h.key):
            rule = hit.rule.rule
            spans = spans_by_version[id(hit.version)]
            evidence = {n: spans[n] for n in sorted(facts_used(hit.rule.condition)) if n in spans}
            reason, level = rule.reason, rule.outcome
            if hit in possible:
                condition = self._condition_text(hit, completions, unknown)
                if hit in note_only:
                    level = Outcome.allowed
                    reason = f"not checked, {condition}: {rule.reason}"
                elif outcome is Outcome.indeterminate and rule.outcome > Outcome.allowed:
                    level = Outcome.indeterminate
                    reason = f"would be {rule.outcome.value} {condition}: {rule.reason}"
                else:
                    reason = f"applies only {condition}: {rule.reason}"
            findings.append(Finding(
                rule=rule.id, policy=hit.version.family, version=hit.version.id, outcome=level,
                reason=reason, sources=list(rule.sources), evidence=evidence,
            ))
        return Verdict(message_id=message_id, evaluated_at=instant, outcome=outcome,
                       policies=refs, findings=findings)

    @staticmethod
    def _condition_text(hit: _Hit, completions, unknown: dict) -> str:
        """'if opted_out = true (unknown in the record)' for the completions where the rule fired."""
        fired_in = [a for a, hits in completions if hit in hits]
        parts = []
        for name, domain in unknown.items():
            values = {a[name] for a in fired_in}
            if len(values) < len(domain):
                parts.append(f"{name} = {' or '.join(_show(v) for v in sorted(values, key=str))}")
        missing = ", ".join(sorted(unknown))
        return f"if {' and '.join(parts) or 'some unknown facts'} ({missing} unknown in the record)"


# ---- logs ---------------------------------------------------------------------


Record = Union[Message, BuyerEvent]


def time_order(records: Iterable[tuple[int, Record]]) -> list[tuple[int, Record]]:
    """History order: by time; at the same instant a message precedes an event,
    since only events strictly before sent_at count (CONTRACT §1)."""
    def key(item):
        index, record = item
        if isinstance(record, BuyerEvent):
            return (record.at, 1, index)
        return (record.sent_at, 0, index)
    return sorted(records, key=key)


def judge_records(
    policies: PolicySet,
    records: Iterable[Record],
    at: When = None,
    evaluator: Evaluator = "durable",
    cache: bool = True,
) -> list[Verdict]:
    """Judge every message of a log (earlier records are history); verdicts in input order."""
    judge = Judge(policies, evaluator=evaluator, cache=cache)
    indexed = list(enumerate(records))
    verdicts: dict[int, Verdict] = {}
    for index, record in time_order(indexed):
        if isinstance(record, BuyerEvent):
            judge.observe(record)
        else:
            verdicts[index] = judge.judge(record, at)
    return [verdicts[i] for i in sorted(verdicts)]


def iter_judge_sorted(judge: Judge, records: Iterable[Record], at: When = None) -> Iterator[Verdict]:
    """Streaming form for logs already in time order (the audit)."""
    for record in records:
        if isinstance(record, BuyerEvent):
            judge.observe(record)
        else:
            yield judge.judge(record, at)
