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
from .model import BuyerEvent, Category, Finding, Message, Outcome, PolicyRef, Verdict
from .policyfile import PolicySet, ResolvedRule, ResolvedVersion
from .reference import ReferenceVersion
from .timeline import in_force, local_noon

Evaluator = Literal["durable", "reference"]
When = Union[None, dt.date, dt.datetime]


def forget_oldest_half(cache: dict) -> None:
    """Bound a memo: dicts keep insertion order, so the front holds the oldest entries."""
    for key in list(itertools.islice(cache, len(cache) // 2)):
        del cache[key]


@dataclass(frozen=True)
class _Hit:
    key: tuple  # (family, version id, rule id): identity across completions
    version: ResolvedVersion = field(compare=False, hash=False)
    rule: ResolvedRule = field(compare=False, hash=False)


def _show(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Inference:
    """What the engine inferred for a record that lacked it (issue 8)."""

    classification: object = None                   # engine.classifier.Classification, or None
    language: Optional[tuple[Optional[str], float]] = None   # (code or None, confidence), or None
    label: str = ""                                  # classifier settings + vocabulary ids
    sources: tuple[str, ...] = ()

    @property
    def uncertain_candidates(self) -> tuple[str, ...]:
        c = self.classification
        return () if c is None or c.confident else tuple(name for name, _ in c.candidates)


CLASSIFIER_POLICY = "classifier"


class Judge:
    """Judges messages in time order, keeping the history later messages need.

    One Judge per log: history is per log. The decision cache maps
    (version content hash, fact vector) to the rules that fire, so durable_rules
    sees each distinct vector once; `cache=False` sends every vector to it.
    """

    FIRED_CACHE_MAX = 100_000  # distinct vectors; a long audit must not grow without bound

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
            if len(self._cache) >= self.FIRED_CACHE_MAX:
                forget_oldest_half(self._cache)
            hit = self._cache[key] = self._engine(version).fired(values)
        return hit

    def instant_for(self, message: Message, at: When) -> dt.datetime:
        if at is None:
            return message.sent_at
        if isinstance(at, dt.datetime):
            return at
        return local_noon(self.policies, at, message.marketplace)

    def infer(self, message: Message, versions=None) -> tuple[Message, Optional[Inference]]:
        """The record with what the text tells filled in: a confidently inferred
        category, a detected language. A given value always wins; `buyer_language`
        is never guessed. The classifier and language models load on first need.

        `versions`: those in force; the language is detected only when one of
        them has a detector that reads it (detection costs milliseconds)."""
        need_category = message.category is None
        need_language = message.language is None and (message.buyer_language is not None or need_category)
        if need_language and versions is not None:
            need_language = any(v.reads_language for v in versions)
        if not (need_category or need_language):
            return message, None
        from .classifier import classifier_for

        classifier = classifier_for(self.policies)
        update: dict = {}
        classification = language = None
        if need_category:
            classification = classifier.classify_message(message)
            if classification.confident:
                update["category"] = Category(classification.category)
        if need_language:
            language = classifier.detect_language(message)
            if language[0] is not None:
                update["language"] = language[0]
        effective = message.model_copy(update=update) if update else message
        return effective, Inference(classification, language, classifier.config.label, classifier.config.sources)

    def judge(self, message: Message, at: When = None, record: bool = True) -> Verdict:
        """The verdict for one message given the history so far; then remember it."""
        instant = self.instant_for(message, at)
        versions = in_force(self.policies, instant, message.marketplace)
        effective, inference = self.infer(message, versions)
        try:
            return self._judge(effective, instant, inference, versions)
        finally:
            if record:
                self.history.record(effective, inference.uncertain_candidates if inference else ())

    def _judge(self, message: Message, instant: dt.datetime, inference: Optional[Inference] = None,
               versions=None) -> Verdict:
        if versions is None:
            versions = in_force(self.policies, instant, message.marketplace)
        if not versions:
            return Verdict(message_id=message.message_id, evaluated_at=instant,
                           outcome=Outcome.no_policy, policies=[], findings=[])
        return self.decide(message, instant, versions, self.facts(message, versions), inference)

    def facts(self, message: Message, versions) -> list[tuple[ResolvedVersion, "MessageFacts"]]:
        """Each version's facts for the message (detector results shared across versions)."""
        base = structural_facts(message, self.history)
        views = TextViews(message)
        detector_cache: dict = {}
        return [(v, facts_for(message, self.history, v, base, views, detector_cache)) for v in versions]

    def decide(self, message: Message, instant: dt.datetime, versions, per_version,
               inference: Optional[Inference] = None) -> Verdict:
        """The verdict from the versions in force and their facts (the history is not read)."""
        return self.verdict_from_facts(message.message_id, instant, per_version, inference)

    def verdict_from_facts(self, message_id: str, instant: dt.datetime,
                           per_version: list[tuple[ResolvedVersion, MessageFacts]],
                           inference: Optional[Inference] = None) -> Verdict:
        """The verdict for given fact vectors of the versions in force (no record needed).

        The what-if exhaustive mode judges points of the finite fact space
        through this, so it shares completions and combination with `judge`."""
        candidates = inference.uncertain_candidates if inference is not None else ()
        verdict, per_candidate = self.decide_rules(message_id, instant, per_version, candidates)
        if inference is None or not per_version:
            return verdict
        notes = self._inference_findings(inference, per_candidate)
        return verdict.model_copy(update={"findings": notes + verdict.findings})

    def decide_rules(self, message_id: str, instant: dt.datetime,
                     per_version: list[tuple[ResolvedVersion, MessageFacts]],
                     candidates: tuple[str, ...] = ()) -> tuple[Verdict, dict[str, Outcome]]:
        """The verdict from the policies' rules alone, and the outcome each candidate
        category gives. It depends on the inference only through `candidates`, the
        uncertain category's plausible values; the notes saying what was inferred
        are added by `verdict_from_facts` (the audit renders them per message)."""
        refs = [PolicyRef(policy=v.family, version=v.id) for v, _ in per_version]
        if not per_version:
            return Verdict(message_id=message_id, evaluated_at=instant,
                           outcome=Outcome.no_policy, policies=[], findings=[]), {}
        # An uncertain category is unknown among the classifier's candidates only.
        restricted = {"category": candidates} if candidates else {}
        unknown: dict[str, tuple] = {}
        for version, facts in per_version:
            for name, value in facts.values.items():
                if value is None:
                    domain = restricted.get(name) or version.fact_domains[name]
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

        return self._combine(message_id, instant, refs, per_version, unknown, completions, candidates)

    def _combine(self, message_id, instant, refs, per_version, unknown, completions,
                 candidates=()) -> tuple[Verdict, dict[str, Outcome]]:
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
        per_candidate = {}
        for name in candidates:
            given = {outcome_of(h) for a, h in completions if a.get("category") == name}
            per_candidate[name] = given.pop() if len(given) == 1 else Outcome.indeterminate
        return Verdict(message_id=message_id, evaluated_at=instant, outcome=outcome,
                       policies=refs, findings=findings), per_candidate

    @staticmethod
    def _inference_findings(inference: Inference, per_candidate: dict[str, Outcome]) -> list[Finding]:
        """Notes saying what was inferred and how; an uncertain category that
        decides the outcome lists each candidate with the outcome it gives
        (`per_candidate`, from `decide_rules`)."""
        def note(rule, level, reason, evidence):
            return Finding(rule=rule, policy=CLASSIFIER_POLICY, version=inference.label, outcome=level,
                           reason=reason, sources=list(inference.sources), evidence=evidence)

        out = []
        c = inference.classification
        if c is not None:
            phrases = c.describe_evidence()
            if c.confident:
                out.append(note("INFER-CATEGORY", Outcome.allowed,
                                f"category inferred as {c.category} (confidence {c.confidence:.2f}; evidence: {phrases})",
                                {"category": c.category, "confidence": f"{c.confidence:.2f}", "evidence": phrases}))
            else:
                listing = "; ".join(f"{name} ({p:.2f}) → {per_candidate[name].value}" for name, p in c.candidates)
                differ = len(set(per_candidate.values())) > 1
                if differ:
                    reason = (f"category not given and not confidently inferred (best {c.best} at "
                              f"{c.confidence:.2f}); the candidates give different outcomes: {listing}")
                else:
                    only = next(iter(per_candidate.values())).value if per_candidate else "no outcome"
                    reason = (f"category not given and not confidently inferred (best {c.best} at "
                              f"{c.confidence:.2f}); every candidate gives {only}: {listing}")
                out.append(note("INFER-CATEGORY", Outcome.indeterminate if differ else Outcome.allowed, reason,
                                {"candidates": listing, "evidence": phrases}))
        if inference.language is not None:
            code, confidence = inference.language
            if code is not None:
                out.append(note("INFER-LANGUAGE", Outcome.allowed,
                                f"language detected as {code} (confidence {confidence:.2f})",
                                {"language": code, "confidence": f"{confidence:.2f}"}))
            else:
                out.append(note("INFER-LANGUAGE", Outcome.allowed,
                                f"language not given and not detected with confidence (best {confidence:.2f})",
                                {"confidence": f"{confidence:.2f}"}))
        return out

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
