"""Rule conditions → durable_rules rulesets, and the bounded way to evaluate them.

Follows durable-rules-notes §10 with one measured departure: background
threads off before the host exists; one ruleset per policy version content
hash (names are process-global and a redefinition silently keeps the old
rules); facts rather than events so every matching rule fires; a positive test
on a field only our facts carry; no `id`/`sid` fact names.

The departure: §10 deletes a fresh sid after every call. With several
rulesets in one process that crashed the C engine within a few dozen calls
(`free(): invalid pointer` / SIGSEGV inside delete_state; found by the
rule-order property test). Instead each ruleset owns exactly one sid and every
call asserts its fact and retracts it again, so live state is one sid and at
most one fact per ruleset (RSS flat over 200,000 calls), and fired rules are
collected by the action in the caller's thread (single-threaded per process).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import re
import threading
from typing import Optional

from durable import engine as _durable_engine

# Must happen before anything creates the host (durable-rules-notes §2, §8).
_durable_engine.Host._run = lambda self: None

from durable.engine import MessageNotHandledException, MessageObservedException  # noqa: E402
from durable.lang import assert_fact, get_host, m, retract_fact, ruleset, when_all  # noqa: E402

from .conditions import All, AnyOf, Const, Node, Test, to_nnf  # noqa: E402
from .policyfile import ResolvedVersion  # noqa: E402

MARKER_FIELD = "msgpolicy_fact"  # the positive test every rule carries; see RESERVED_FACT_NAMES


class EngineError(RuntimeError):
    """durable_rules misbehaved (an action raised, or state came back malformed)."""


def _expr(node: Node):
    if isinstance(node, Test):
        field = getattr(m, node.fact)
        if node.op == "in":
            return functools.reduce(operator.or_, [field == v for v in node.value])
        if node.op == "not_in":
            return functools.reduce(operator.and_, [field != v for v in node.value])
        return {
            "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
            "ge": operator.ge, "lt": operator.lt, "le": operator.le,
        }[node.op](field, node.value)
    if isinstance(node, All):
        return functools.reduce(operator.and_, [_expr(i) for i in node.items])
    if isinstance(node, AnyOf):
        return functools.reduce(operator.or_, [_expr(i) for i in node.items])
    raise TypeError(f"cannot compile {node!r}")


class CompiledVersion:
    """One policy version as a registered durable_rules ruleset."""

    def __init__(self, version: ResolvedVersion, only: Optional[tuple[str, ...]] = None):
        """`only`: compile just these rule ids (the batch engine decides groups of rules
        that read the same facts on their own; a rule fires on its own condition alone)."""
        self.version = version
        slug = re.sub(r"[^A-Za-z0-9_]", "_", f"{version.family}_{version.id}")
        self.name = f"msgpolicy_{slug}_{version.content_hash[:16]}"
        if only is not None:
            self.name += "_" + hashlib.sha256("\n".join(only).encode()).hexdigest()[:12]
        self.rule_ids: list[str] = []
        self._sid = f"s{next(_SIDS)}"
        self._fired: list[str] = []
        with ruleset(self.name):
            marker = getattr(m, MARKER_FIELD) == True  # noqa: E712 - durable_rules DSL
            for resolved in version.enabled_rules:
                if only is not None and resolved.id not in only:
                    continue
                node = to_nnf(resolved.condition)
                if isinstance(node, Const):
                    if not node.value:
                        continue  # switched off by a parameter: never fires
                    condition = marker
                else:
                    condition = marker & _expr(node)
                when_all(condition)(self._action(resolved.id))
                self.rule_ids.append(resolved.id)
            if not self.rule_ids:
                # A ruleset must hold a rule; this one never fires.
                when_all(marker & (getattr(m, MARKER_FIELD) == False))(self._action(""))  # noqa: E712
        get_host()  # registers the definition now, in this thread

    def _action(self, rule_id: str):
        def fire(c):
            self._fired.append(rule_id)
        return fire

    def fired(self, facts: dict) -> frozenset[str]:
        """The ids of every rule whose condition holds for these (complete) facts."""
        fact = dict(facts)
        fact["sid"] = self._sid
        fact[MARKER_FIELD] = True
        self._fired = []
        try:
            assert_fact(self.name, fact)
        except MessageNotHandledException:
            return frozenset()
        except MessageObservedException as exc:  # the previous fact is always retracted
            raise EngineError(f"durable_rules reported a duplicate fact: {exc}") from exc
        else:
            retract_fact(self.name, fact)
        return frozenset(self._fired)


_SIDS = itertools.count()  # one sid per ruleset, unique in the process
_compiled: dict = {}
_lock = threading.Lock()


def compiled(version: ResolvedVersion, only: Optional[tuple[str, ...]] = None) -> CompiledVersion:
    """The ruleset for a version (or for the rules `only` names), compiled once per
    content hash per process."""
    key = version.content_hash if only is None else (version.content_hash, only)
    found = _compiled.get(key)
    if found is None:
        with _lock:
            found = _compiled.get(key)
            if found is None:
                found = _compiled[key] = CompiledVersion(version, only)
    return found
