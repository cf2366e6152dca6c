"""Replay the decision log: judge each logged decision again with the policies loaded now.

A decision carries its record, the history it saw, `on` and `alt`, so it is
judged again without the store; a decision that would now differ is
reported with both verdicts. This is how a policy change is tried on real traffic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import orjson

from ..model import verdict_json
from ..policyfile import PolicySet
from .service import Service
from .store import Decision, Store


@dataclass
class ReplayResult:
    replayed: int = 0
    changed: list[dict] = field(default_factory=list)
    hash_changed: int = 0    # decisions made by a policy version whose content has changed since


def decisions_from_file(path: Path) -> Iterator[Decision]:
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield Decision.from_json(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} line {number}: not a decision ({exc})") from None


def decisions_from_store(store: Store, order_id: Optional[str] = None, since: Optional[str] = None,
                         page: int = 1000) -> Iterator[Decision]:
    after = 0
    while True:
        with store.transaction() as tx:
            rows = tx.decisions(order_id, since, page, after)
        for _, decision in rows:
            yield decision
        if len(rows) < page:
            return
        after = rows[-1][0]


def replay(policies: PolicySet, decisions: Iterable[Decision]) -> ReplayResult:
    service = Service(policies, store=None)  # type: ignore[arg-type]  # rejudging reads no store
    result = ReplayResult()
    for decision in decisions:
        result.replayed += 1
        now = verdict_json(service.rejudge(decision))
        current = {}
        for ref in now["policies"]:
            current[f"{ref['policy']}/{ref['version']}"] = service.policy_set(decision.alt).version(
                ref["policy"], ref["version"]).content_hash
        if any(decision.policy_hashes.get(k) not in (None, h) for k, h in current.items()):
            result.hash_changed += 1
        if _comparable(now) != _comparable(decision.verdict):
            result.changed.append({"request_id": decision.request_id, "index": decision.index,
                                   "message_id": decision.message_id, "decided_at": decision.decided_at,
                                   "then": decision.verdict, "now": now})
    return result


def _comparable(verdict: dict) -> dict:
    return {"outcome": verdict["outcome"], "evaluated_at": verdict["evaluated_at"],
            "policies": verdict["policies"],
            "findings": sorted((orjson.dumps(f, option=orjson.OPT_SORT_KEYS) for f in verdict["findings"]))}


def export(decisions: Iterable[Decision], path: Path) -> int:
    n = 0
    with open(path, "wb") as fh:
        for d in decisions:
            fh.write(orjson.dumps(d.as_json()) + b"\n")
            n += 1
    return n
