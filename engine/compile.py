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

Rulesets live for the process unless compiled under a `Lease`: `msgpolicy
test` judges each policy variant under one, so a variant's rulesets are
deleted from the C engine and the host once no lease holds them (each costs
about 2.4 MiB that nothing else gives back). A ruleset also asked for outside
any lease is kept, so what other callers use is never released under them.
"""
from __future__ import annotations

import contextlib
import contextvars
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
import durable_rules_engine  # noqa: E402
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
        self.released = False
        self._asserted = False  # whether the sid has state (delete_state crashes on a sid without)
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
        if self.released:
            # its C handle is freed: using it would crash the process
            raise EngineError(f"ruleset {self.name} was released; ask compiled() for it again")
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
            self._asserted = True
            retract_fact(self.name, fact)
        return frozenset(self._fired)

    def _release(self) -> None:
        """Delete the ruleset from durable_rules (its C state) and from the host's tables."""
        if self.released:
            return
        self.released = True
        host = get_host()
        found = host._ruleset_directory.pop(self.name, None)
        if found is not None:
            host._ruleset_list.remove(found)
            if self._asserted:
                # delete_ruleset leaves the sid's state (about 0.45 MiB) allocated otherwise
                durable_rules_engine.delete_state(found._handle, self._sid)
            durable_rules_engine.delete_ruleset(found._handle)


_SIDS = itertools.count()  # one sid per ruleset, unique in the process
_compiled: dict = {}  # content hash, or (content hash, only) → CompiledVersion
_lock = threading.RLock()
_pinned: set[str] = set()      # content hashes asked for outside any lease: kept for the process
_holders: dict[str, int] = {}  # content hash → how many open leases hold it
_current: contextvars.ContextVar = contextvars.ContextVar("msgpolicy_compile_lease", default=None)


def _hash_of(key) -> str:
    return key if isinstance(key, str) else key[0]


def compiled(version: ResolvedVersion, only: Optional[tuple[str, ...]] = None) -> CompiledVersion:
    """The ruleset for a version (or for the rules `only` names), compiled once per
    content hash per process (or until the leases that hold it close)."""
    key = version.content_hash if only is None else (version.content_hash, only)
    lease = _current.get()
    found = _compiled.get(key)
    if found is None or lease is not None or version.content_hash not in _pinned:
        with _lock:
            if lease is None:
                _pinned.add(version.content_hash)
            else:
                lease._hold(version.content_hash)
            found = _compiled.get(key)
            if found is None:
                found = _compiled[key] = CompiledVersion(version, only)
    return found


class Lease:
    """Holds the rulesets compiled while it is current (`with Lease():`, per thread or task),
    plus any versions given to `hold`; closing it releases those no other lease holds and no
    caller outside a lease asked for. Another thread's calls are never under this lease."""

    def __init__(self):
        self._hashes: set[str] = set()
        self._closed = False
        self._token = None

    def _hold(self, content_hash: str) -> None:
        if self._closed:
            raise EngineError("this lease is closed")
        if content_hash not in self._hashes:
            self._hashes.add(content_hash)
            _holders[content_hash] = _holders.get(content_hash, 0) + 1

    def hold(self, versions) -> "Lease":
        """Keep these versions' rulesets (when compiled) until this lease closes."""
        return self.hold_hashes(v.content_hash for v in versions)

    def hold_hashes(self, hashes) -> "Lease":
        with _lock:
            for content_hash in hashes:
                self._hold(content_hash)
        return self

    def close(self) -> None:
        with _lock:
            if self._closed:
                return
            self._closed = True
            for content_hash in self._hashes:
                left = _holders[content_hash] - 1
                if left:
                    _holders[content_hash] = left
                    continue
                del _holders[content_hash]
                if content_hash in _pinned:
                    continue
                for key in [k for k in _compiled if _hash_of(k) == content_hash]:
                    _compiled.pop(key)._release()
            self._hashes.clear()

    @contextlib.contextmanager
    def current(self):
        """Make this lease current for a block without closing it afterwards."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def __enter__(self) -> "Lease":
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)
        self.close()


def live_rulesets() -> dict:
    """What the process holds now: compile-cache keys and durable host ruleset names (for tests)."""
    host = get_host()
    return {"compiled": set(_compiled), "host": set(host._ruleset_directory)}
