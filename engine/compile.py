"""Rule conditions → durable_rules rulesets, and the bounded way to evaluate them.

Follows durable-rules-notes §10: background threads off before the host
exists; one ruleset per policy version content hash (names are process-global
and a redefinition silently keeps the old rules); facts rather than events so
every matching rule fires; a fresh sid per evaluation, deleted in `finally`,
so live state never approaches the 1,024-sid limit; a positive test on a field
only our facts carry; no `id`/`sid` fact names.
"""
from __future__ import annotations

import functools
import itertools
import operator
import re
import threading

from durable import engine as _durable_engine

# Must happen before anything creates the host (durable-rules-notes §2, §8).
_durable_engine.Host._run = lambda self: None

from durable.engine import MessageNotHandledException, MessageObservedException  # noqa: E402
from durable.lang import assert_fact, delete_state, get_host, m, ruleset, when_all  # noqa: E402

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

    def __init__(self, version: ResolvedVersion):
        self.version = version
        slug = re.sub(r"[^A-Za-z0-9_]", "_", f"{version.family}_{version.id}")
        self.name = f"msgpolicy_{slug}_{version.content_hash[:16]}"
        self.rule_ids: list[str] = []
        self._sids = itertools.count()
        with ruleset(self.name):
            marker = getattr(m, MARKER_FIELD) == True  # noqa: E712 - durable_rules DSL
            for resolved in version.enabled_rules:
                node = to_nnf(resolved.condition)
                if isinstance(node, Const):
                    if not node.value:
                        continue  # switched off by a parameter: never fires
                    condition = marker
                else:
                    condition = marker & _expr(node)
                when_all(condition)(self._action(resolved.id))
                self.rule_ids.append(resolved.id)
            # A sentinel that every fact matches: a fact no rule handled raises
            # MessageNotHandledException, after which delete_state was seen to
            # segfault (free(): invalid pointer) on the 2020 ruleset. It also
            # gives the ruleset a rule when every real one is switched off.
            when_all(marker)(self._action(""))
        get_host()  # registers the definition now, in this thread

    @staticmethod
    def _action(rule_id: str):
        def fire(c):
            try:
                c.s.fired = (c.s.fired or []) + [rule_id]
            except Exception as exc:  # actions' exceptions are swallowed by durable_rules
                c.s.action_error = repr(exc)
        return fire

    def fired(self, facts: dict) -> frozenset[str]:
        """The ids of every rule whose condition holds for these (complete) facts."""
        sid = f"e{next(self._sids)}"
        fact = dict(facts)
        fact["sid"] = sid
        fact[MARKER_FIELD] = True
        try:
            state = assert_fact(self.name, fact)
        except MessageNotHandledException:
            return frozenset()
        except MessageObservedException as exc:  # fresh sid per call: should be impossible
            raise EngineError(f"durable_rules reported a duplicate fact: {exc}") from exc
        finally:
            delete_state(self.name, sid)
        if not isinstance(state, dict):
            raise EngineError(f"durable_rules returned {state!r} instead of a state")
        if "exception" in state or "action_error" in state:
            raise EngineError(f"a rule action failed: {state.get('exception') or state.get('action_error')}")
        return frozenset(r for r in state.get("fired", ()) if r)  # "" is the sentinel


_compiled: dict[str, CompiledVersion] = {}
_lock = threading.Lock()


def compiled(version: ResolvedVersion) -> CompiledVersion:
    """The ruleset for a version, compiled once per content hash per process."""
    found = _compiled.get(version.content_hash)
    if found is None:
        with _lock:
            found = _compiled.get(version.content_hash)
            if found is None:
                found = _compiled[version.content_hash] = CompiledVersion(version)
    return found
