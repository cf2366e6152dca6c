"""`msgpolicy diff --exhaustive`: where two sides differ over the whole finite fact space.

The facts rules read are finite (ARCHITECTURE, "one design decision"), so two
sides can be compared on every possible message, not only on a log:

1. **Contexts.** Every version boundary of either side cuts each
   marketplace's calendar into intervals; in each interval a side has a fixed
   set of versions in force (a side with `on=` has the same set everywhere).
   Intervals (and marketplaces, unless a rule reads `marketplace`) with the
   same pair of version sets form one context. A context whose two sets are
   identical cannot differ and is not explored.
2. **Dimensions.** In a context, every fact read by a version of either side
   belongs to one dimension with finitely many values, each a *way to write a
   record*: category, channel, sender, opt-out (true/false/unknown), reply
   (none / quoting / not quoting / thread not in the log), days since each
   window anchor bucketed at every window length in play, language pair,
   optional record fields, attachments, earlier messages for prior counts, and
   one present/absent switch per content detector. Values that every rule
   test treats alike are merged into classes (e.g. the categories no rule
   tells apart).
3. **Regions.** The space is split recursively, one dimension at a time, only
   where some rule that could still change the answer is undecided on the
   current cube; a cube where the answer is settled is a leaf (for the
   outcome: a rule definitely firing at the worst level still possible settles
   it). Each leaf is judged once by the engine (`Judge.verdict_from_facts`,
   durable_rules, the decision cache), never by this module. Three splits are
   made: by outcome pair, by presence of each rule whose condition differs
   between the sides, and (within a budget) by the whole change.
   Leaves with the same answer that differ in one dimension are merged.
4. **Witnesses.** For every region a record (with the history it needs:
   the buyer message it answers, earlier review requests) is written from the
   detectors' own phrases and patterns, its facts are recomputed by the real
   detectors, and it is judged under both sides like `msgpolicy check` would;
   a region whose witness does not reproduce the difference is flagged
   `unrealised` (e.g. "[Important]" in brackets without the word important).
"""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .conditions import All, AnyOf, Const, Node, Not, Test
from .detectors import (AttachmentsDetector, FieldDetector, LanguageMatchDetector, OnlyPatternsDetector,
                        PatternDetector, PhrasesDetector, PriorCountDetector, UrlDetector, WindowDetector,
                        run_detector)
from .evaluate import Judge, judge_records
from .facts import STRUCTURAL_FACTS, MessageFacts
from .model import AttachmentKind, Category, Channel, InitiatedBy, Message, Outcome
from .policyfile import PolicySet, ResolvedVersion
from .reference import holds
from .timeline import in_force, in_force_on, local_noon
from .witness import Fragment, fragments

FactKey = tuple  # ("s", structural name) | ("d", detector spec key)
COMBINED_BUDGET = 1000  # leaves of the whole-change split; beyond it only the outcome and rule tables are given
WITNESS_ID = "W"


def fact_key(version: ResolvedVersion, name: str) -> FactKey:
    """Structural facts by name; detectors by what they compute (two versions' detectors that
    differ only in their description are one fact, not two independent ones)."""
    if name in STRUCTURAL_FACTS:
        return ("s", name)
    return ("d", _semantic_key(version.detectors_used[name][1]))


_SEMANTIC: dict[int, tuple[Any, str]] = {}


def _semantic_key(spec) -> str:
    hit = _SEMANTIC.get(id(spec))
    if hit is None or hit[0] is not spec:  # the entry keeps spec alive, so its id stays valid
        hit = _SEMANTIC[id(spec)] = (spec, spec.model_dump_json(exclude={"description"}))
    return hit[1]


# ---- contexts -------------------------------------------------------------------------


@dataclass
class Context:
    index: int
    versions_a: list[ResolvedVersion]
    versions_b: list[ResolvedVersion]
    members: list[tuple[str, Optional[dt.date], Optional[dt.date]]]  # (marketplace, from, to)

    @property
    def marketplace(self) -> str:
        return self.members[0][0]

    @property
    def date(self) -> dt.date:
        """A send date inside the first member interval (its first day)."""
        _, lo, hi = self.members[0]
        if lo is not None:
            return lo
        return (hi - dt.timedelta(days=1)) if hi is not None else dt.date(2000, 1, 1)

    def describe(self) -> dict:
        by_interval: dict = defaultdict(list)
        for m, lo, hi in self.members:
            by_interval[(lo, hi)].append(m)
        return {
            "id": self.index,
            "baseline": [v.label for v in self.versions_a],
            "variant": [v.label for v in self.versions_b],
            "sent": [{"from": lo.isoformat() if lo else None, "to": hi.isoformat() if hi else None,
                      "marketplaces": ms} for (lo, hi), ms in by_interval.items()],
        }


def _versions_at(policies: PolicySet, on, day: dt.date, marketplace: str) -> list[ResolvedVersion]:
    if on is None:
        return in_force_on(policies, day, marketplace)
    if isinstance(on, dt.datetime):
        return in_force(policies, on, marketplace)
    return in_force_on(policies, on, marketplace)


def contexts(pa: PolicySet, pb: PolicySet, on_a, on_b) -> tuple[list[Context], int]:
    """(contexts where the sides' version sets differ, number of identical ones)."""
    groups: dict[tuple, Context] = {}
    identical = set()
    for market in sorted(pa.marketplaces):
        cuts: set[dt.date] = set()
        for pol, on in ((pa, on_a), (pb, on_b)):
            if on is not None:
                continue  # a fixed instant: the send date does not choose versions
            for v in pol.all_versions():
                if v.applies_to(market):
                    cuts.add(v.effective_from)
                    if v.effective_to is not None:
                        cuts.add(v.effective_to)
        ds = sorted(cuts)
        bounds = [None, *ds, None]
        for lo, hi in zip(bounds, bounds[1:]):
            day = lo if lo is not None else (hi - dt.timedelta(days=1) if hi is not None else dt.date(2000, 1, 1))
            va, vb = _versions_at(pa, on_a, day, market), _versions_at(pb, on_b, day, market)
            reads_market = any("marketplace" in v.fact_domains for v in va + vb)
            key = (tuple(v.content_hash for v in va), tuple(v.content_hash for v in vb),
                   market if reads_market else None)
            if key[0] == key[1]:
                identical.add(key)
                continue
            ctx = groups.get(key)
            if ctx is None:
                ctx = groups[key] = Context(len(groups), va, vb, [])
            ctx.members.append((market, lo, hi))
    return list(groups.values()), len(identical)


# ---- dimensions -------------------------------------------------------------------------


@dataclass
class Dim:
    name: str
    labels: list[str]
    facts: list[dict]  # per value: fact key → value (None = unknown)
    recipes: list[Any]  # per value: what the witness builder does
    classes: list[list[int]] = field(default_factory=list)  # value indices, merged by rule tests

    def describe(self, classes) -> str:
        values = [self.labels[i] for c in sorted(classes) for i in self.classes[c]]
        others = [l for l in self.labels if l not in values]
        if len(others) < len(values) and len(values) > 2:
            return "none of " + " | ".join(others)
        return " | ".join(values)


def _probe_message(**fields) -> Message:
    base = {"message_id": "probe", "order_id": "000-0000000-0000000", "buyer_id": "probe",
            "sent_at": dt.datetime(2021, 6, 1, 12, tzinfo=dt.timezone.utc), "category": "invoice"}
    base.update(fields)
    return Message.model_validate(base)


def _bool_dim(name: str, key: FactKey, recipe_true, recipe_false=None) -> Dim:
    return Dim(name, ["absent", "present"], [{key: False}, {key: True}], [recipe_false, recipe_true])


def _window_dim(specs: dict[FactKey, WindowDetector]) -> Dim:
    anchors = sorted({a for s in specs.values() for a in s.anchors})
    limits = sorted({s.max_days for s in specs.values()})
    reps = [max(limits[0] - 1, 0)] + [t + 1 for t in limits]  # one day inside each bucket
    options = [None] + reps
    labels, facts, recipes = [], [], []
    sent = dt.datetime(2021, 6, 1, 12, tzinfo=dt.timezone.utc)
    for combo in itertools.product(options, repeat=len(anchors)):
        ages = dict(zip(anchors, combo))
        if ages.get("delivered_at") is not None and ages.get("order_placed_at") is not None \
                and ages["order_placed_at"] < ages["delivered_at"]:
            continue  # an order is placed before it is delivered
        fields = {a: sent - dt.timedelta(days=d) for a, d in ages.items() if d is not None}
        probe = _probe_message(sent_at=sent, **fields)
        facts.append({k: run_detector(s, probe, None, None)[0] for k, s in specs.items()})
        labels.append(", ".join(f"{a} {'absent' if d is None else f'{d} days before'}" for a, d in ages.items()))
        recipes.append(("window", ages))
    return Dim("window", labels, facts, recipes)


_LANGUAGE = [("same language", ("en", "en")), ("other language", ("en", "de")), ("language unknown", None)]


def build_dims(ctx: Context, keys: dict[FactKey, Any], names: dict[FactKey, str]) -> list[Dim]:
    """The dimensions for the fact keys read in a context (key → detector spec, or None if structural)."""
    dims: list[Dim] = []
    structural = {k[1] for k in keys if k[0] == "s"}
    for name, enum in (("category", Category), ("channel", Channel), ("initiated_by", InitiatedBy)):
        if name in structural:
            values = [e.value for e in enum]
            dims.append(Dim(name, values, [{("s", name): v} for v in values], [(name, v) for v in values]))
    if "opted_out" in structural:
        dims.append(Dim("opted_out", ["false", "true", "unknown"],
                        [{("s", "opted_out"): v} for v in (False, True, None)],
                        [("opt", v) for v in (False, True, None)]))
    if structural & {"has_reply_to", "quotes_buyer_message"}:
        kinds = [("no reply_to", False, False), ("reply quoting the buyer", True, True),
                 ("reply not quoting the buyer", True, False), ("reply to a message not in the log", True, None)]
        dims.append(Dim("reply", [k[0] for k in kinds],
                        [{("s", "has_reply_to"): h, ("s", "quotes_buyer_message"): q} for _, h, q in kinds],
                        [("reply", k[0]) for k in kinds]))
    windows = {k: s for k, s in keys.items() if isinstance(s, WindowDetector)}
    if windows:
        dims.append(_window_dim(windows))
    for key, spec in sorted(keys.items(), key=lambda kv: str(kv[0])):
        if spec is None or isinstance(spec, WindowDetector):
            continue
        label = names[key]
        if isinstance(spec, LanguageMatchDetector):
            facts = []
            for _, pair in _LANGUAGE:
                probe = _probe_message(**({"language": pair[0], "buyer_language": pair[1]} if pair else {}))
                facts.append({key: run_detector(spec, probe, None, None)[0]})
            dims.append(Dim(label, [l for l, _ in _LANGUAGE], facts, [("language", p) for _, p in _LANGUAGE]))
        elif isinstance(spec, FieldDetector):
            dims.append(Dim(label, ["false", "true", "absent"], [{key: v} for v in (False, True, None)],
                            [("field", spec.field, v) for v in (False, True, None)]))
        elif isinstance(spec, AttachmentsDetector):
            other = [k for k in AttachmentKind if k not in spec.allowed_kinds]
            labels, facts, recipes = ["no attachment"], [{key: False}], [("attach", None)]
            if other:
                labels.append(f"a {other[0].value} attachment")
                facts.append({key: True})
                recipes.append(("attach", other[0].value))
            dims.append(Dim(label, labels, facts, recipes))
        elif isinstance(spec, PriorCountDetector):
            dims.append(Dim(label, ["none earlier", f"{spec.at_least} earlier"], [{key: False}, {key: True}],
                            [None, ("prior", spec)]))
        elif isinstance(spec, (PatternDetector, PhrasesDetector, UrlDetector, OnlyPatternsDetector)):
            dims.append(_bool_dim(label, key, ("text", key, spec)))
        else:  # a detector kind this module does not know: keep both values, witnesses will say unrealised
            dims.append(_bool_dim(label, key, ("unknown", key)))
    return dims


# ---- rules as trees over dimension classes ---------------------------------------------------


@dataclass(frozen=True)
class _Lit:
    """A rule test over one dimension: the classes where it holds and where it fails
    (classes with the fact unknown are in neither: the completion decides)."""

    dim: int
    true: frozenset
    false: frozenset


TRUE, FALSE = ("const", True), ("const", False)


def _is_const(node) -> bool:
    return type(node) is tuple and node[0] == "const"


@functools.lru_cache(maxsize=1 << 18)
def _restrict(node, dim: int, classes: frozenset):
    """The node with dimension `dim` narrowed to `classes`, constants folded."""
    if type(node) is _Lit:
        if node.dim != dim:
            return node
        if classes <= node.true:
            return TRUE
        if classes <= node.false:
            return FALSE
        return node
    op = node[0]
    if op == "const":
        return node
    if op == "not":
        inner = _restrict(node[1], dim, classes)
        if _is_const(inner):
            return FALSE if inner[1] else TRUE
        return ("not", inner)
    items = []
    for item in node[1]:
        r = _restrict(item, dim, classes)
        if _is_const(r):
            if r[1] is (op == "or"):
                return r
            continue
        items.append(r)
    if not items:
        return TRUE if op == "and" else FALSE
    if len(items) == 1:
        return items[0]
    return (op, tuple(items))


@functools.lru_cache(maxsize=1 << 18)
def _dims(node) -> frozenset:
    if type(node) is _Lit:
        return frozenset((node.dim,))
    if node[0] == "const":
        return frozenset()
    if node[0] == "not":
        return _dims(node[1])
    return frozenset().union(*(_dims(i) for i in node[1]))


@dataclass
class CRule:
    family: str
    rule: str
    outcome: Outcome
    on_unknown: str
    tree: Any

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.rule)


class Space:
    """The dimensions of one context and both sides' rules over them."""

    def __init__(self, ctx: Context, pa: PolicySet, pb: PolicySet, side_a, side_b):
        self.ctx = ctx
        self.sides = ((pa, side_a, ctx.versions_a), (pb, side_b, ctx.versions_b))
        keys: dict[FactKey, Any] = {}
        names: dict[FactKey, str] = {}
        for v in ctx.versions_a + ctx.versions_b:
            for name in v.fact_domains:
                k = fact_key(v, name)
                if name == "marketplace":
                    continue  # fixed per context (contexts are split by marketplace when it is read)
                if k[0] == "d":
                    keys[k] = v.detectors_used[name][1]
                    names.setdefault(k, name)
                else:
                    keys[k] = None
        # Two detectors of one name that compute different things get distinct dimension names.
        seen: dict[str, int] = defaultdict(int)
        for k in sorted(names, key=str):
            seen[names[k]] += 1
            if seen[names[k]] > 1:
                names[k] = f"{names[k]}#{seen[names[k]]}"
        self.dims = build_dims(ctx, keys, names)
        self.coupled: list[dict[int, frozenset]] = []
        self.dim_of: dict[FactKey, int] = {k: i for i, d in enumerate(self.dims) for k in d.facts[0]}
        self._classify()
        self.rules = [self._compile_side(vs) for vs in (ctx.versions_a, ctx.versions_b)]

    # value classes: values every rule test treats alike
    def _tests(self) -> dict[int, list[tuple[str, Test, FactKey]]]:
        out: dict[int, list] = defaultdict(list)

        def walk(node, v):
            if isinstance(node, Test):
                if node.fact != "marketplace":
                    k = fact_key(v, node.fact)
                    out[self.dim_of[k]].append((node, k))
            elif isinstance(node, (All, AnyOf)):
                for i in node.items:
                    walk(i, v)
            elif isinstance(node, Not):
                walk(node.item, v)
        for v in self.ctx.versions_a + self.ctx.versions_b:
            for r in v.enabled_rules:
                walk(r.condition, v)
        return out

    def _classify(self) -> None:
        tests = self._tests()
        for i, d in enumerate(self.dims):
            groups: dict[tuple, list[int]] = {}
            for j, facts in enumerate(d.facts):
                sig = []
                for t, k in tests.get(i, []):
                    value = facts.get(k)
                    sig.append(None if value is None else holds(t, {t.fact: value}))
                # None-ness matters even where no test reads the fact (completions).
                sig.append(tuple(facts.get(k) is None for k in sorted(facts, key=str)))
                groups.setdefault(tuple(sig), []).append(j)
            d.classes = list(groups.values())
        self.class_of = [{j: c for c, js in enumerate(d.classes) for j in js} for d in self.dims]

    def _compile_side(self, versions: list[ResolvedVersion]) -> list[CRule]:
        # A fact name unknown in one version is completed in every version of the side that
        # reads the same name (Judge._judge); when two versions read one name through
        # different detectors, their dimensions are coupled.
        by_name: dict[str, set[int]] = defaultdict(set)
        for v in versions:
            for name in v.fact_domains:
                if name != "marketplace":
                    by_name[name].add(self.dim_of[fact_key(v, name)])
        coupled: dict[int, frozenset] = {}
        for dims in by_name.values():
            if len(dims) > 1:
                for d in dims:
                    coupled[d] = coupled.get(d, frozenset()) | frozenset(dims)
        self.coupled.append(coupled)
        market = self.ctx.marketplace
        rules = []
        for v in versions:
            for r in v.enabled_rules:
                tree = self._tree(r.condition, v, set(), market)
                for d in range(len(self.dims)):
                    tree = _restrict(tree, d, frozenset(range(len(self.dims[d].classes))))
                rules.append(CRule(v.family, r.id, r.rule.outcome, r.rule.on_unknown, tree))
        return rules

    def expand(self, side: int, dims) -> set:
        coupled = self.coupled[side]
        out = set(dims)
        for d in dims:
            out |= coupled.get(d, frozenset())
        return out

    def initial(self) -> tuple:
        return (self.full_cube(), tuple(r.tree for r in self.rules[0]), tuple(r.tree for r in self.rules[1]))

    def equivalent(self, res_a, res_b, keys=None) -> bool:
        """Both sides fire the same rules (same outcome, same handling of unknowns) on every point."""
        if self.coupled[0] or self.coupled[1]:
            return False
        a = {r.key: (r.outcome, r.on_unknown, x) for r, x in zip(self.rules[0], res_a)
             if keys is None or r.key in keys}
        b = {r.key: (r.outcome, r.on_unknown, x) for r, x in zip(self.rules[1], res_b)
             if keys is None or r.key in keys}
        if keys is not None:  # a rule absent from a side never fires there
            for k in keys:
                a.setdefault(k, (None, None, FALSE))
                b.setdefault(k, (None, None, FALSE))
            return all(a[k][2] == b[k][2] for k in keys)
        return a == b

    def _tree(self, node: Node, v: ResolvedVersion, names: set, market: str):
        if isinstance(node, Const):
            return ("const", node.value)
        if isinstance(node, Not):
            return ("not", self._tree(node.item, v, names, market))
        if isinstance(node, (All, AnyOf)):
            return ("and" if isinstance(node, All) else "or", tuple(self._tree(i, v, names, market) for i in node.items))
        if node.fact == "marketplace":
            return ("const", holds(node, {"marketplace": market}))
        names.add(node.fact)
        k = fact_key(v, node.fact)
        i = self.dim_of[k]
        d = self.dims[i]
        true, false = set(), set()
        for c, js in enumerate(d.classes):
            value = d.facts[js[0]].get(k)
            if value is None:
                continue  # unknown: either, depending on the completion
            (true if holds(node, {node.fact: value}) else false).add(c)
        return _Lit(i, frozenset(true), frozenset(false))

    # -- sizes ---------------------------------------------------------------------------
    def full_cube(self) -> tuple:
        return tuple(frozenset(range(len(d.classes))) for d in self.dims)

    def size(self, cube) -> int:
        n = 1
        for d, s in zip(self.dims, cube):
            n *= sum(len(d.classes[c]) for c in s)
        return n

    @property
    def raw_size(self) -> int:
        n = 1
        for d in self.dims:
            n *= len(d.labels)
        return n

    @property
    def class_size(self) -> int:
        n = 1
        for d in self.dims:
            n *= len(d.classes)
        return n

    def describe(self, cube) -> dict:
        return {d.name: d.describe(s) for d, s in zip(self.dims, cube) if len(s) < len(d.classes)}

    # -- judging one point ---------------------------------------------------------------
    def point(self, cube) -> tuple[int, ...]:
        """A representative: the first class (values are ordered quietest first) of each dimension."""
        return tuple(min(s) for s in cube)

    def instant(self, side: int) -> dt.datetime:
        _, spec, _ = self.sides[side]
        on = spec.on
        if isinstance(on, dt.datetime):
            return on
        pol = self.sides[side][0]
        return local_noon(pol, on if on is not None else self.ctx.date, self.ctx.marketplace)

    def verdicts(self, point, judges) -> tuple:
        out = []
        for side, (_, _, versions) in enumerate(self.sides):
            values_by_key: dict[FactKey, Any] = {}
            for i, c in enumerate(point):
                values_by_key.update(self.dims[i].facts[self.dims[i].classes[c][0]])
            per_version = []
            for v in versions:
                vals = {}
                for name in v.fact_domains:
                    vals[name] = self.ctx.marketplace if name == "marketplace" else values_by_key[fact_key(v, name)]
                per_version.append((v, MessageFacts(vals, {})))
            out.append(judges[side].verdict_from_facts(WITNESS_ID, self.instant(side), per_version))
        return tuple(out)


# ---- splitting ---------------------------------------------------------------------------------

SAME = "same"  # the two sides agree on every point of the cube
LEAF = "leaf"  # the answer is settled on the cube: judge one point


def _multi(space: Space, side: int, node, cube) -> list[int]:
    return [d for d in space.expand(side, _dims(node)) if len(cube[d]) > 1]


def _outcome_need(space: Space, cube, res) -> tuple[list[int], list]:
    """(dimensions still to split before both outcomes are settled on the cube, settled outcomes).

    A rule whose residual is TRUE fires in every completion of every point, so it
    is a definite finding; when no undecided rule is more severe than the worst
    definite one, every completion, hence the outcome, is that level."""
    need: list[int] = []
    settled = []
    for side, rules in enumerate(space.rules):
        if not space.sides[side][2]:
            settled.append(Outcome.no_policy)
            continue
        low = max((r.outcome for r, x in zip(rules, res[side]) if x == TRUE), default=Outcome.allowed)
        open_ = False
        for r, x in zip(rules, res[side]):
            if not _is_const(x) and r.outcome > low:
                open_ = True
                need += _multi(space, side, x, cube)
        settled.append(None if open_ else low)
    return need, settled


def need_outcome(space: Space):
    def need(cube, res):
        if space.equivalent(*res):
            return SAME
        dims, settled = _outcome_need(space, cube, res)
        if settled[0] is not None and settled[0] == settled[1]:
            return SAME  # both outcomes settled, and equal: no outcome change on this cube
        if dims:
            return dims
        return (LEAF, (settled[0].value, settled[1].value) if None not in settled else None)
    return need


def need_rule(space: Space, key):
    keys = {key}

    def need(cube, res):
        if space.equivalent(*res, keys=keys):
            return SAME
        out = []
        present = [False, False]
        for side, rules in enumerate(space.rules):
            for r, x in zip(rules, res[side]):
                if r.key == key:
                    if _is_const(x):
                        present[side] = x[1]
                    else:
                        present[side] = None
                        out += _multi(space, side, x, cube)
        if out:
            return out
        return (LEAF, (f"{key[0]}/{key[1]}", *present) if None not in present else None)
    return need


def need_all(space: Space):
    def need(cube, res):
        if space.equivalent(*res):
            return SAME
        out = _outcome_need(space, cube, res)[0]
        for side in (0, 1):
            for x in res[side]:
                if not _is_const(x):
                    out += _multi(space, side, x, cube)
        return out or (LEAF, None)
    return need


class BudgetExceeded(Exception):
    pass


def split(space: Space, need: Callable, budget: Optional[int] = None) -> list[tuple]:
    """(leaf cube, settled label or None) covering every point where the sides may differ.

    A label is settled when the conditions alone fix it on the whole cube (a rule
    firing everywhere or nowhere); otherwise the leaf is judged by the engine."""
    leaves = []
    stack = [space.initial()]
    while stack:
        cube, res_a, res_b = stack.pop()
        dims = need(cube, (res_a, res_b))
        if dims is SAME:
            continue
        if type(dims) is tuple:  # (LEAF, label settled by the rules' conditions, or None)
            leaves.append((cube, dims[1]))
            if budget is not None and len(leaves) > budget:
                raise BudgetExceeded()
            continue
        counts: dict[int, int] = defaultdict(int)
        for d in dims:
            counts[d] += 1
        d = min(counts, key=lambda i: (-counts[i], i))
        for part in _parts(cube[d], d, res_a + res_b):
            stack.append((cube[:d] + (part,) + cube[d + 1:],
                          tuple(_restrict(x, d, part) if d in _dims(x) else x for x in res_a),
                          tuple(_restrict(x, d, part) if d in _dims(x) else x for x in res_b)))
    return leaves


@functools.lru_cache(maxsize=1 << 18)
def _lits(node) -> tuple:
    if type(node) is _Lit:
        return (node,)
    if node[0] == "const":
        return ()
    if node[0] == "not":
        return _lits(node[1])
    return tuple(l for i in node[1] for l in _lits(i))


def _parts(classes: frozenset, d: int, residuals) -> list[frozenset]:
    """Split a dimension along the first undecided test on it (holds / fails / unknown),
    so that classes no test tells apart stay together; else one class per part."""
    for x in residuals:
        if d in _dims(x):
            for lit in _lits(x):
                if lit.dim == d:
                    parts = [p for p in (classes & lit.true, classes & lit.false,
                                         classes - lit.true - lit.false) if p]
                    if len(parts) > 1:
                        return sorted(parts, key=min, reverse=True)
    return [frozenset((c,)) for c in sorted(classes, reverse=True)]


def merge(cubes: list[tuple]) -> list[tuple]:
    """Union cubes that differ in one dimension only, until none do (same answer assumed)."""
    cubes = list(dict.fromkeys(cubes))
    changed = True
    while changed and len(cubes) > 1:
        changed = False
        for d in range(len(cubes[0])):
            groups: dict[tuple, list] = defaultdict(list)
            for c in cubes:
                groups[c[:d] + c[d + 1:]].append(c)
            out = []
            for rest, members in groups.items():
                if len(members) == 1:
                    out.append(members[0])
                    continue
                union = frozenset().union(*(m[d] for m in members))
                out.append(rest[:d] + (union,) + rest[d:])
                changed = True
            cubes = out
    return sorted(cubes, key=lambda c: tuple(sorted(s) for s in c))


# ---- witnesses -------------------------------------------------------------------------------


class WitnessBuilder:
    """Writes records for a cube and checks them with the real detectors and judges."""

    def __init__(self, space: Space):
        self.space = space

    def records(self, values: list[int], texts: dict) -> list[dict]:
        space, ctx = self.space, self.space.ctx
        from .timeline import marketplace_zone
        zone = marketplace_zone(space.sides[0][0], ctx.marketplace)
        sent = dt.datetime.combine(ctx.date, dt.time(12), tzinfo=zone)
        rec: dict[str, Any] = {"message_id": WITNESS_ID, "order_id": "000-0000000-0000001",
                               "buyer_id": "WITNESS-BUYER", "sent_at": sent, "marketplace": ctx.marketplace,
                               "category": Category.invoice.value}
        subject, body, html, history = [], [], [], []
        for dim, j in zip(space.dims, values):
            recipe = dim.recipes[j]
            if recipe is None:
                continue
            kind = recipe[0]
            if kind in ("category", "channel", "initiated_by"):
                rec[kind] = recipe[1]
            elif kind == "opt":
                if recipe[1] is not None:
                    rec["buyer_opted_out"] = recipe[1]
            elif kind == "reply":
                label = recipe[1]
                if label == "reply to a message not in the log":
                    rec["reply_to"] = "W-NOT-IN-LOG"
                elif label != "no reply_to":
                    question = "qzx wvb"  # a buyer text no detector reads
                    history.append({"message_id": "W-Q", "order_id": rec["order_id"], "buyer_id": rec["buyer_id"],
                                    "sent_at": sent - dt.timedelta(hours=1), "marketplace": ctx.marketplace,
                                    "initiated_by": "buyer", "category": "customer_service_reply",
                                    "body": question})
                    rec["reply_to"] = "W-Q"
                    if label == "reply quoting the buyer":
                        body.append("> " + question)
            elif kind == "window":
                for anchor, days in recipe[1].items():
                    if days is not None:
                        rec[anchor] = sent - dt.timedelta(days=days)
            elif kind == "language":
                if recipe[1] is not None:
                    rec["language"], rec["buyer_language"] = recipe[1]
            elif kind == "field":
                if recipe[2] is not None:
                    rec[recipe[1]] = recipe[2]
            elif kind == "attach":
                if recipe[1] is not None:
                    rec["attachments"] = [{"name": f"file-{recipe[1]}", "kind": recipe[1]}]
            elif kind == "prior":
                spec = recipe[1]
                for n in range(spec.at_least):
                    prior = {"message_id": f"W-P{n}", "order_id": rec["order_id"], "buyer_id": rec["buyer_id"],
                             "sent_at": sent - dt.timedelta(hours=2 + n), "marketplace": ctx.marketplace,
                             "initiated_by": "seller", "body": ""}
                    if spec.categories:
                        prior["category"] = spec.categories[0].value
                    else:
                        prior["category"] = Category.invoice.value
                        prior["channel"] = spec.channels[0].value
                    history.append(prior)
            elif kind == "text":
                frag: Optional[Fragment] = texts.get(recipe[1])
                if frag is None:
                    continue  # not placed yet (the builder adds fragments one at a time)
                {"subject": subject, "body": body, "html": html}[frag.part].append(frag.text)
        rec["subject"] = " ".join(subject)
        if html:
            rec["body"] = "".join(f"<p>{t}</p>" for t in body) + "\n".join(html)
        else:
            rec["body"] = "\n".join(body)
        history.sort(key=lambda r: r["sent_at"])
        out = []
        for r in history + [rec]:
            r = dict(r)
            for k in ("sent_at", "delivered_at", "order_placed_at"):
                if k in r:
                    r[k] = r[k].isoformat()
            out.append(r)
        return out

    def _classes_of(self, records: list[dict]) -> Optional[list[int]]:
        """The class each dimension takes for the witness, computed by the real detectors."""
        from .facts import History, structural_facts
        from .detectors import TextViews
        space = self.space
        pol = space.sides[0][0]
        history = History(tuple(s for d in space.dims for r in d.recipes if r and r[0] == "prior" for s in [r[1]]))
        msgs = [Message.model_validate(r) for r in records]
        for m in msgs[:-1]:
            history.record(m)
        msg = msgs[-1]
        base = structural_facts(msg, history)
        views = TextViews(msg)
        values: dict[FactKey, Any] = {}
        for k in space.dim_of:
            if k[0] == "s":
                values[k] = base[k[1]]
        for v in space.ctx.versions_a + space.ctx.versions_b:
            for name, (_, spec) in v.detectors_used.items():
                k = fact_key(v, name)
                if k in space.dim_of and k not in values:
                    values[k] = run_detector(spec, msg, views, history)[0]
        out = []
        for i, d in enumerate(space.dims):
            got = None
            for j, facts in enumerate(d.facts):
                if all(values.get(k, facts[k]) == facts[k] and (values.get(k) is None) == (facts[k] is None)
                       for k in facts):
                    got = space.class_of[i][j]
                    break
            if got is None:
                return None
            out.append(got)
        del pol
        return out

    def build(self, cube) -> Optional[list[dict]]:
        """Records whose last message's facts fall in the cube, or None."""
        space = self.space
        values = [space.dims[i].classes[min(s)][0] for i, s in enumerate(cube)]
        wanted = {}  # text key → candidate fragments, for dims that must be present
        for i, (d, j) in enumerate(zip(space.dims, values)):
            r = d.recipes[j]
            if r is not None and r[0] == "text":
                cands = fragments(r[2])
                if not cands:
                    return None
                wanted[r[1]] = cands
        chosen: dict = {}
        order = sorted(wanted, key=str)

        def fits(recs, partial: bool) -> bool:
            got = self._classes_of(recs)
            if got is None:
                return False
            for i, (c, s) in enumerate(zip(got, cube)):
                if c in s:
                    continue
                r = space.dims[i].recipes[values[i]]
                if partial and r is not None and r[0] == "text" and r[1] not in chosen:
                    continue  # not placed yet
                return False
            return True

        for key in order:
            for cand in wanted[key]:
                chosen[key] = cand
                if fits(self.records(values, chosen), partial=True):
                    break
            else:
                return None
        recs = self.records(values, chosen)
        return recs if fits(recs, partial=False) else None


# ---- the whole comparison -----------------------------------------------------------------------


@dataclass
class Region:
    cube: tuple
    vectors: int
    where: dict
    witness: Optional[list[dict]] = None
    verified: bool = False
    observed: Optional[dict] = None


@dataclass
class Row:
    context: int
    kind: str  # "outcome" | "rule" | "change"
    label: dict
    vectors: int
    regions: list[Region]


@dataclass
class ExhaustiveDiff:
    baseline: Any
    variant: Any
    contexts: list[dict]
    identical_contexts: int
    space: dict
    outcomes: list[Row]
    rules: list[Row]
    changes: Optional[list[Row]]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.outcomes or self.rules)


def _present(verdict, key) -> bool:
    return any((f.policy, f.rule) == key for f in verdict.findings)


def _observe(verdicts) -> dict:
    return {side: {"outcome": v.outcome.value, "rules": sorted(f"{f.policy}/{f.rule}" for f in v.findings)}
            for side, v in zip(("baseline", "variant"), verdicts)}


def _judge_witness(space: Space, records: list[dict]):
    msgs = [Message.model_validate(r) for r in records]
    out = []
    for pol, spec, _ in space.sides:
        verdicts = judge_records(pol, msgs, at=spec.on)
        out.append(next(v for v in verdicts if v.message_id == WITNESS_ID))
    return tuple(out)


def exhaustive_diff(side_a, side_b, policies_root=None, max_regions: int = 50,
                    combined_budget: int = COMBINED_BUDGET, verify_leaves: bool = False,
                    witnesses: bool = True) -> ExhaustiveDiff:
    """Compare two sides over the finite fact space (see the module docstring).

    `max_regions` bounds the regions listed (with a witness) per row; `verify_leaves`
    also judges every leaf whose answer the conditions already settle (tests)."""
    start = time.perf_counter()
    pa, pb = side_a.load(policies_root), side_b.load(policies_root)
    ctxs, identical = contexts(pa, pb, side_a.on, side_b.on)
    judges = (Judge(pa), Judge(pb))
    outcome_rows: list[Row] = []
    rule_rows: list[Row] = []
    change_rows: Optional[list[Row]] = []
    space_info = {"contexts": len(ctxs) + identical, "differing_contexts": len(ctxs), "vectors": 0,
                  "classes": 0, "leaves": 0, "regions": 0, "witnesses": 0, "unrealised": 0}
    ctx_info = []
    notes: list[str] = []
    for ctx in ctxs:
        space = Space(ctx, pa, pb, side_a, side_b)
        space_info["vectors"] += space.raw_size
        space_info["classes"] += space.class_size
        info = ctx.describe()
        info["dimensions"] = {d.name: len(d.labels) for d in space.dims}
        info["vectors"] = space.raw_size
        ctx_info.append(info)
        cache: dict = {}

        def verdicts(point):
            hit = cache.get(point)
            if hit is None:
                hit = cache[point] = space.verdicts(point, judges)
            return hit

        builder = WitnessBuilder(space)

        def rows_from(kind, leaves, label_of, check):
            groups: dict[tuple, list] = defaultdict(list)
            for cube, settled in leaves:
                expected = None if settled is None or settled[-2] == settled[-1] else settled
                if settled is not None and not verify_leaves:
                    label = expected
                else:
                    label = label_of(verdicts(space.point(cube)))
                    if settled is not None and label != expected:
                        raise AssertionError(f"the engine says {label} where the conditions settle "
                                             f"{expected} on {space.describe(cube)}")
                if label is not None:
                    groups[label].append(cube)
            space_info["leaves"] += len(leaves)
            out = []
            for label, cubes in sorted(groups.items(), key=lambda kv: str(kv[0])):
                merged = merge(cubes)
                regions = []
                for cube in merged:
                    regions.append(Region(cube, space.size(cube), space.describe(cube)))
                regions.sort(key=lambda r: -r.vectors)
                for region in (regions[:max_regions] if witnesses else ()):
                    recs = builder.build(region.cube)
                    space_info["witnesses"] += 1
                    if recs is not None:
                        observed = _judge_witness(space, recs)
                        region.witness, region.observed = recs, _observe(observed)
                        region.verified = check(label, observed)
                    if not region.verified:
                        space_info["unrealised"] += 1
                space_info["regions"] += len(regions)
                out.append(Row(ctx.index, kind, _label_dict(kind, label), sum(r.vectors for r in regions), regions))
            return out

        # outcome pairs
        leaves = split(space, need_outcome(space))

        def outcome_label(vs):
            a, b = vs[0].outcome.value, vs[1].outcome.value
            return None if a == b else (a, b)
        outcome_rows += rows_from("outcome", leaves, outcome_label,
                                  lambda label, vs: (vs[0].outcome.value, vs[1].outcome.value) == label)
        # rule presence, for rules whose condition differs between the sides
        keys = sorted({r.key for rules in space.rules for r in rules})
        for key in keys:
            leaves = split(space, need_rule(space, key))

            def rule_label(vs, key=key):
                pa_, pb_ = _present(vs[0], key), _present(vs[1], key)
                return None if pa_ == pb_ else (f"{key[0]}/{key[1]}", pa_, pb_)
            rule_rows += rows_from("rule", leaves, rule_label,
                                   lambda label, vs, key=key: (_present(vs[0], key), _present(vs[1], key)) == label[1:])
        # the whole change, when it fits the budget
        if change_rows is not None:
            try:
                leaves = split(space, need_all(space), budget=combined_budget)
            except BudgetExceeded:
                notes.append(f"context {ctx.index}: more than {combined_budget} distinct changes; "
                             "only the outcome and rule tables are given")
                change_rows = None
            else:
                def change_label(vs):
                    a, b = vs
                    ra = {(f.policy, f.rule) for f in a.findings}
                    rb = {(f.policy, f.rule) for f in b.findings}
                    if a.outcome == b.outcome and ra == rb:
                        return None
                    return (a.outcome.value, b.outcome.value,
                            tuple(sorted(f"{p}/{r}" for p, r in rb - ra)),
                            tuple(sorted(f"{p}/{r}" for p, r in ra - rb)))

                def change_check(label, vs):
                    return change_label(vs) == label
                change_rows += rows_from("change", leaves, change_label, change_check)
    differing = {row.context for row in outcome_rows + rule_rows}
    for info in ctx_info:
        info["differs"] = info["id"] in differing
    return ExhaustiveDiff(side_a, side_b, ctx_info, identical, space_info, outcome_rows, rule_rows, change_rows,
                          time.perf_counter() - start, notes)


def _label_dict(kind: str, label: tuple) -> dict:
    if kind == "outcome":
        return {"from": label[0], "to": label[1]}
    if kind == "rule":
        return {"rule": label[0], "from": "present" if label[1] else "absent",
                "to": "present" if label[2] else "absent"}
    return {"from": label[0], "to": label[1], "appeared": list(label[2]), "disappeared": list(label[3])}
