"""Decisions by join: durable_rules decides each distinct projection once; every message
joins back to its decision.

Three levels of sharing, each exact:

1. **Rule groups.** A version's rules are grouped by the facts their conditions read, and
   each group is its own durable_rules ruleset. A rule fires on its own condition alone
   (facts, not events: no rule consumes what another sees), so the rules a version fires
   for a fact vector are the union of what each group fires for the vector's projection
   on the group's facts. Projections are few (a group reads two to five facts), so
   durable_rules is asked a few hundred times per audit, not once per vector.
2. **Profiles.** Per version, every distinct vector of the version's facts becomes its
   profile: the unknown facts, and for each completion of them the rules that fire.
   Vectors with the same profile decide alike.
3. **Verdicts.** Per set of versions in force, each distinct (uncertain candidates,
   profile per version) is decided once by `Judge.decide_rules` — the same completions
   and combination as `check` — and rendered into a plan (engine.audit._Plan).

The answers of durable_rules are kept on disk per version content hash
(`DecisionStore`), so a second audit under the same policies asks it nothing anew.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import orjson
import polars as pl

from ..audit import AuditJudge, _Plan
from ..compile import compiled
from ..conditions import facts_used
from ..facts import MessageFacts

STORE_FORMAT = 1
# A plan drops the verdict's header, so the instant it is decided at is immaterial.
_ANY_INSTANT = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)

# Structural facts (engine.facts.structural_facts) → the message frame's column.
_STRUCTURAL = {
    "category": "category", "channel": "channel", "initiated_by": "initiated_by", "marketplace": "marketplace",
    "opted_out": "opted_out", "has_reply_to": "has_reply_to", "quotes_buyer_message": "quotes",
}


class DecisionStore:
    """durable_rules' answers per (version content hash, rule group, projection), kept as one
    JSON file per version under the cache directory. A version's content hash covers its
    rules and parameters, so an entry never goes stale; a file that cannot be read is
    ignored (and rewritten)."""

    def __init__(self, directory: Optional[Path]):
        self.directory = directory / "decisions" if directory is not None else None
        self._tables: dict[str, dict] = {}
        self._dirty: set[str] = set()

    def table(self, content_hash: str) -> dict:
        found = self._tables.get(content_hash)
        if found is None:
            found = {}
            if self.directory is not None:
                try:
                    data = orjson.loads((self.directory / f"{content_hash}.json").read_bytes())
                    if data.get("format") == STORE_FORMAT:
                        found = {k: frozenset(v) for k, v in data["fired"].items()}
                except (OSError, ValueError, AttributeError, KeyError, TypeError):
                    found = {}
            self._tables[content_hash] = found
        return found

    def added(self, content_hash: str) -> None:
        self._dirty.add(content_hash)

    def save(self) -> None:
        if self.directory is None or not self._dirty:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for content_hash in sorted(self._dirty):
                body = orjson.dumps({"format": STORE_FORMAT, "fired": {
                    k: sorted(v) for k, v in self._tables[content_hash].items()}})
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                os.replace(tmp, self.directory / f"{content_hash}.json")  # atomic: never a torn file
        except OSError:
            pass  # a read-only or full cache directory only costs the next run its speed
        self._dirty.clear()


class GroupedVersion:
    """One version's rules as rulesets of rules that read the same facts."""

    def __init__(self, version, store: DecisionStore):
        groups: dict[tuple[str, ...], list[str]] = {}
        for rule in version.enabled_rules:
            groups.setdefault(tuple(sorted(facts_used(rule.condition))), []).append(rule.id)
        self.version = version
        self.groups = [(names, tuple(ids)) for names, ids in groups.items()]
        self._store = store
        self._answers = store.table(version.content_hash)

    def fired(self, values: dict) -> frozenset[str]:
        """The rules that fire for complete fact values (as CompiledVersion.fired)."""
        out: set[str] = set()
        for index, (names, ids) in enumerate(self.groups):
            projection = [values[n] for n in names]
            key = f"{index}|" + orjson.dumps(projection).decode()
            hit = self._answers.get(key)
            if hit is None:
                hit = self._answers[key] = compiled(self.version, ids).fired(dict(zip(names, projection)))
                self._store.added(self.version.content_hash)
            out |= hit
        return frozenset(out)


class BatchJudge(AuditJudge):
    """AuditJudge whose versions are evaluated as rule groups through the decision store
    (the Judge's cache of whole fact vectors stays in front of them)."""

    def __init__(self, policies, store: DecisionStore, **kw):
        super().__init__(policies, **kw)
        self._store = store

    def _engine(self, version):
        if self.evaluator != "durable":
            return super()._engine(version)
        found = self._engines.get(version.content_hash)
        if found is None:
            found = self._engines[version.content_hash] = GroupedVersion(version, self._store)
        return found


def vector_columns(version, detector_columns) -> list[tuple[str, str]]:
    """(fact name, column) in the order of the version's fact vector (engine.facts.facts_for)."""
    out = [(name, _STRUCTURAL[name]) for name in version.structural_facts_used]
    out += [(name, detector_columns[key][0]) for name, (key, _) in version.detectors_used.items()]
    return out


def _profile(judge: BatchJudge, version, values: dict, candidates: tuple) -> tuple:
    """The unknown facts of one vector and, per completion, the rules that fire."""
    unknown = [n for n, v in values.items() if v is None]
    if not unknown:
        return ((), ((), judge._fired(version, values)))
    domains = []
    for name in unknown:
        domain = (candidates if name == "category" and candidates else None) or version.fact_domains[name]
        if domain is None:
            raise ValueError(f"fact {name!r} has no finite domain but is unknown")
        domains.append(domain)
    fired = []
    for combo in itertools.product(*domains):
        fired.append((combo, judge._fired(version, {**values, **dict(zip(unknown, combo))})))
    return (tuple(unknown), tuple(fired))


def decide(judge: BatchJudge, messages: pl.DataFrame, vsets: list, detector_columns: dict):
    """Adds `plan` (index into the returned plans; None in the list means no policy)."""
    messages = messages.with_columns(has_reply_to=pl.col("reply_to").is_not_null())
    plans: list = []
    plan_col = np.full(len(messages), -1, dtype=np.int64)
    for i, versions in enumerate(vsets):
        rows = messages.with_row_index("row").filter(pl.col("vset") == i)
        if rows.is_empty():
            continue
        if not versions:
            plan_col[rows["row"].to_numpy()] = len(plans)
            plans.append(None)  # no policy
            continue
        layout = [vector_columns(v, detector_columns) for v in versions]
        # Level 2: a profile id per version and row.
        profile_ids: dict = {}
        per_version_cols = []
        for vi, (version, cols) in enumerate(zip(versions, layout)):
            keys = list(dict.fromkeys([c for _, c in cols] + ["candidates"]))
            distinct = rows.select(keys).unique(maintain_order=True)
            ids = []
            for record in distinct.iter_rows(named=True):
                values = {n: record[c] for n, c in cols}
                candidates = tuple(record["candidates"].split("|")) if record["candidates"] else ()
                ids.append(profile_ids.setdefault((vi, _profile(judge, version, values, candidates)),
                                                  len(profile_ids)))
            column = f"profile{vi}"
            keyed = distinct.with_columns(pl.Series(column, ids, dtype=pl.Int64))
            rows = rows.join(keyed, on=keys, how="left", nulls_equal=True, maintain_order="left")
            per_version_cols.append(column)
        # Level 3: one verdict per distinct (candidates, profiles).
        joint_keys = ["candidates", *per_version_cols]
        reps = rows.group_by(joint_keys, maintain_order=True).agg(pl.col("row").first().alias("rep"))
        value_cols = list(dict.fromkeys(c for cols in layout for _, c in cols))
        rep_values = messages[reps["rep"].to_numpy()].select(value_cols).to_dicts()
        ids = []
        for record, candidates_text in zip(rep_values, reps["candidates"].to_list()):
            per_version = [(v, MessageFacts({name: record[col] for name, col in cols}, {}))
                           for v, cols in zip(versions, layout)]
            candidates = tuple(candidates_text.split("|")) if candidates_text else ()
            verdict, per_candidate = judge.decide_rules("", _ANY_INSTANT, per_version, candidates)
            ids.append(len(plans))
            plans.append(_Plan.of(verdict, list(versions), per_candidate, judge._pieces))
        keyed = reps.select(joint_keys).with_columns(plan=pl.Series(ids, dtype=pl.Int64))
        joined = rows.select("row", *joint_keys).join(keyed, on=joint_keys, how="left", nulls_equal=True)
        plan_col[joined["row"].to_numpy()] = joined["plan"].to_numpy()
    return messages.with_columns(plan=pl.Series("plan", plan_col)), plans
