"""What-if: the same messages judged under a baseline and a variant, and what changes (issue 5).

A *side* is the shipped policies plus any recorded alternatives (`alt:NAME`),
draft overlays (`overlay:PATH`) and an evaluation instant (`on=DATE`). This
module never judges a message itself:

* `diff_logs` runs the streaming audit (`engine.audit.audit`) once per side
  into result files, which are in input order, and joins them line by line;
* `sensitivity` does the same for the shipped baseline against every recorded
  alternative;
* the exhaustive mode lives in `engine.exhaustive` and judges points of the
  finite fact space through `Judge.verdict_from_facts`.

A message *changes* when its outcome differs or its set of findings, keyed by
(policy, rule, finding outcome), differs. The finding's version and reason
text are not compared: moving from one version to the next with the same
rule firing is no change.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import orjson

from .audit import DEFAULT_HISTORY_DAYS, AuditConfig, AuditResult, audit, choose_engine
from .evaluate import When
from .io import atomic_output
from .policyfile import PolicySet, load_policies

# ---- sides -------------------------------------------------------------------------


class SideError(ValueError):
    """A --baseline/--variant specification is malformed."""


def parse_when(value: str) -> When:
    """A date (judged at local noon in each message's marketplace) or an RFC 3339 instant with offset."""
    if not isinstance(value, str):
        raise SideError(f"{value!r} is neither a date (YYYY-MM-DD) nor an RFC 3339 timestamp")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        pass
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SideError(f"{value!r} is neither a date (YYYY-MM-DD) nor an RFC 3339 timestamp") from None
    if instant.tzinfo is None:
        raise SideError(f"{value!r} has no UTC offset; give one or a date alone")
    return instant


@dataclass(frozen=True)
class Side:
    """One side of a comparison: shipped policies + alternatives + overlays, judged as sent or `on` an instant."""

    on: When = None
    alternatives: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        parts = []
        if self.on is not None:
            parts.append(f"on={self.on.isoformat()}")
        parts += [f"alt:{a}" for a in self.alternatives]
        parts += [f"overlay:{o}" for o in self.overlays]
        return ",".join(parts) or "shipped"

    def load(self, root: Optional[Union[str, Path]] = None) -> PolicySet:
        return load_policies(root, alternatives=self.alternatives, overlays=self.overlays)

    def as_dict(self) -> dict:
        return {"label": self.label, "on": self.on.isoformat() if self.on is not None else None,
                "alternatives": list(self.alternatives), "overlays": list(self.overlays)}


# An item starts at the beginning or after a comma followed by a key, so that
# an overlay path may itself hold commas.
_SPLIT = re.compile(r",(?=\s*(?:on|alt|overlay)[:=])")
_ITEM = re.compile(r"^(on|alt|overlay)[:=](.*)$", re.S)


def parse_side(specs: Sequence[str], option: str = "--variant") -> Side:
    """Combine the items of one or more `--baseline`/`--variant` values into a Side.

    Items: `on=DATE|TIMESTAMP`, `alt:NAME`, `overlay:PATH` (`:` or `=` after the
    key), separated by commas or given in repeated options; `shipped` alone
    means no change (the default baseline)."""
    on: When = None
    alts: list[str] = []
    overlays: list[str] = []
    for spec in specs:
        for item in _SPLIT.split(spec):
            item = item.strip()
            if item in ("", "shipped"):
                continue
            m = _ITEM.match(item)
            if not m or not m.group(2).strip():
                raise SideError(f"{option}: {item!r} is not one of on=DATE, alt:NAME, overlay:PATH, shipped")
            key, value = m.group(1), m.group(2).strip()
            if key == "on":
                if on is not None:
                    raise SideError(f"{option}: on= given twice")
                try:
                    on = parse_when(value)
                except SideError as exc:
                    raise SideError(f"{option}: on={value}: {exc}") from None
            elif key == "alt":
                if value not in alts:
                    alts.append(value)
            else:
                if not Path(value).is_file():
                    raise SideError(f"{option}: overlay:{value}: no such file")
                overlays.append(value)
    return Side(on, tuple(alts), tuple(overlays))


# ---- comparing two result lines -----------------------------------------------------


def _finding_keys(result: dict) -> dict[tuple[str, str], str]:
    """(policy, rule) → finding outcome."""
    return {(f["policy"], f["rule"]): f["outcome"] for f in result["findings"]}


def compare(a: dict, b: dict) -> Optional[dict]:
    """The change between two result lines (audit / `check --format json`) of one message, or None."""
    fa, fb = _finding_keys(a), _finding_keys(b)
    if a["outcome"] == b["outcome"] and fa == fb:
        return None
    appeared = [f"{p}/{r}" for (p, r) in sorted(fb.keys() - fa.keys())]
    disappeared = [f"{p}/{r}" for (p, r) in sorted(fa.keys() - fb.keys())]
    level = [{"rule": f"{p}/{r}", "from": fa[(p, r)], "to": fb[(p, r)]}
             for (p, r) in sorted(fa.keys() & fb.keys()) if fa[(p, r)] != fb[(p, r)]]
    return {"message_id": a["message_id"], "from": a["outcome"], "to": b["outcome"],
            "appeared": appeared, "disappeared": disappeared, "level_changed": level,
            "evaluated_at": [a["evaluated_at"], b["evaluated_at"]],
            "versions": [[f"{p['policy']}/{p['version']}" for p in a["policies"]],
                         [f"{p['policy']}/{p['version']}" for p in b["policies"]]]}


@dataclass
class DiffSummary:
    """Counts over every judged message; `transitions` holds unchanged messages too (from == to)."""

    judged: int = 0
    changed: int = 0
    transitions: Counter = field(default_factory=Counter)  # (from, to) → messages
    changed_by_transition: Counter = field(default_factory=Counter)  # (from, to) → changed messages
    appeared: Counter = field(default_factory=Counter)  # rule → messages where it appeared
    disappeared: Counter = field(default_factory=Counter)
    level_changed: Counter = field(default_factory=Counter)  # (rule, from, to) → messages

    def add(self, a: dict, change: Optional[dict]) -> None:
        self.judged += 1
        if change is None:
            self.transitions[(a["outcome"], a["outcome"])] += 1
            return
        key = (change["from"], change["to"])
        self.transitions[key] += 1
        self.changed += 1
        self.changed_by_transition[key] += 1
        self.appeared.update(change["appeared"])
        self.disappeared.update(change["disappeared"])
        self.level_changed.update((x["rule"], x["from"], x["to"]) for x in change["level_changed"])


@dataclass
class LogDiff:
    baseline: Side
    variant: Side
    summary: DiffSummary
    changes: list  # the changed messages, in input order (all of them unless `keep` was given)
    provenance: dict
    rejects: list = field(default_factory=list)
    seconds: float = 0.0


class JoinError(RuntimeError):
    """The two result streams do not hold the same messages in the same order."""


def join_results(path_a: Path, path_b: Path) -> Iterator[tuple[dict, dict]]:
    """Pairs of result lines of the same message; both files are in input order."""
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        for n, (la, lb) in enumerate(zip(fa, fb), start=1):
            a, b = orjson.loads(la), orjson.loads(lb)
            if a["message_id"] != b["message_id"]:
                raise JoinError(f"result line {n}: message {a['message_id']!r} under the baseline but "
                                f"{b['message_id']!r} under the variant")
            yield a, b
        rest_a, rest_b = fa.read(1), fb.read(1)
        if rest_a or rest_b:
            raise JoinError("the baseline and the variant judged a different number of messages")


def _audit_into(policies: PolicySet, paths, on: When, jobs: int, history_days: int, results: Path,
                rejects: Path, mapping=None) -> AuditResult:
    return _audits_into([(policies, on, results, rejects)], paths, jobs, history_days, mapping)[0]


def _audits_into(sides: list, paths, jobs: int, history_days: int, mapping=None) -> list[AuditResult]:
    """One audit per (policies, on, results, rejects) side. When the batch engine runs them,
    the log is read and its history built once for all sides (engine.batch.pipeline);
    otherwise each side is its own audit."""
    configs = [(policies, AuditConfig(paths=list(paths), at=on, jobs=jobs, history_days=history_days,
                                      results=results, rejects=rejects, mapping=mapping))
               for policies, on, results, rejects in sides]
    if len(configs) > 1 and choose_engine(configs[0][1]) == "batch":
        from .batch.pipeline import audit_batch_sides, same_reading

        for _, cfg in configs:
            cfg.engine = "batch"
        if same_reading(configs):
            return audit_batch_sides(configs)
    return [audit(policies, cfg) for policies, cfg in configs]


def diff_logs(paths: Sequence[Union[str, Path]], baseline: Side, variant: Side,
              policies_root: Optional[Union[str, Path]] = None, jobs: int = 1,
              history_days: int = DEFAULT_HISTORY_DAYS, keep: Optional[int] = None,
              changes_path: Optional[Path] = None, mapping=None) -> LogDiff:
    """Judge the logs under both sides with the audit and join the results line by line.

    `keep` bounds how many changed messages are held in memory for the report
    (None: all); `changes_path`, if given, receives every change as JSON Lines."""
    start = time.perf_counter()
    pol_a, pol_b = baseline.load(policies_root), variant.load(policies_root)
    tmp = Path(tempfile.mkdtemp(prefix="msgpolicy-diff-"))
    try:
        res_a, res_b = tmp / "baseline.jsonl", tmp / "variant.jsonl"
        audit_a, audit_b = _audits_into([(pol_a, baseline.on, res_a, tmp / "rej_a.jsonl"),
                                         (pol_b, variant.on, res_b, tmp / "rej_b.jsonl")],
                                        paths, jobs, history_days, mapping)
        rejects = [orjson.loads(line) for line in (tmp / "rej_a.jsonl").read_bytes().splitlines()]
        summary = DiffSummary()
        changes: list = []
        with contextlib.ExitStack() as stack:
            # Renamed into place only when complete: an interrupted diff leaves an earlier file as it was.
            out = stack.enter_context(atomic_output(changes_path)) if changes_path is not None else None
            for a, b in join_results(res_a, res_b):
                change = compare(a, b)
                summary.add(a, change)
                if change is not None:
                    if keep is None or len(changes) < keep:
                        changes.append(change)
                    if out is not None:
                        out.write(orjson.dumps(change) + b"\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    provenance = {
        "engine": audit_a.provenance["engine"], "engine_version": audit_a.provenance["engine_version"],
        "inputs": audit_a.provenance["inputs"],
        "baseline": {**baseline.as_dict(), "policy_set_hash": pol_a.content_hash,
                     "policies": audit_a.provenance["policies"]},
        "variant": {**variant.as_dict(), "policy_set_hash": pol_b.content_hash,
                    "policies": audit_b.provenance["policies"]},
        "counts": {"read": audit_a.summary.read, "judged": audit_a.summary.judged,
                   "rejected": audit_a.summary.rejected, "buyer_events": audit_a.summary.events},
        "jobs": jobs, "history_days": history_days,
    }
    return LogDiff(baseline, variant, summary, changes, provenance, rejects, time.perf_counter() - start)


# ---- sensitivity: the shipped reading against every recorded alternative ----------------


@dataclass
class Sensitivity:
    alternatives: list[str]
    flagged: int  # messages whose verdict changes under at least one alternative
    by_alternative: Counter  # alternative → changed messages
    transitions: Counter  # (alternative, from, to) → messages
    messages: list  # {"message_id", "outcome", "alternatives": [{"name", "outcome", "appeared", ...}]}
    judged: int = 0
    seconds: float = 0.0


def sensitivity(paths: Sequence[Union[str, Path]], policies_root: Optional[Union[str, Path]] = None,
                on: When = None, jobs: int = 1, history_days: int = DEFAULT_HISTORY_DAYS,
                baseline_results: Optional[Path] = None, keep: Optional[int] = None,
                alternatives: Optional[Sequence[str]] = None, base_alternatives: Sequence[str] = (),
                mapping=None) -> Sensitivity:
    """Flag the messages whose verdict depends on a disputed point: the logs are audited under
    the baseline (shipped policies, plus `base_alternatives`) and under each recorded
    alternative in turn, and the results are joined. `baseline_results`, when the caller
    already has the baseline's result lines (JSON Lines), saves one audit."""
    start = time.perf_counter()
    base = load_policies(policies_root, alternatives=base_alternatives)
    names = list(alternatives) if alternatives is not None else sorted(
        n for n in base.alternative_names() if n not in base_alternatives)
    tmp = Path(tempfile.mkdtemp(prefix="msgpolicy-sens-"))
    try:
        sides = []
        if baseline_results is None:
            baseline_results = tmp / "baseline.jsonl"
            sides.append((base, on, baseline_results, tmp / "rej.jsonl"))
        alt_results = []
        for name in names:
            pol = load_policies(policies_root, alternatives=tuple(base_alternatives) + (name,))
            path = tmp / f"alt-{len(alt_results)}.jsonl"
            sides.append((pol, on, path, tmp / f"rej-{len(alt_results)}.jsonl"))
            alt_results.append(path)
        # Every side over one read of the log (when the batch engine runs them).
        _audits_into(sides, paths, jobs, history_days, mapping)
        by_alt: Counter = Counter()
        transitions: Counter = Counter()
        messages: list = []
        flagged = judged = 0
        handles = [open(p, "rb") for p in alt_results]
        try:
            with open(baseline_results, "rb") as fb:
                for n, line in enumerate(fb, start=1):
                    a = orjson.loads(line)
                    judged += 1
                    hits = []
                    for name, fh in zip(names, handles):
                        b = orjson.loads(fh.readline())
                        if b["message_id"] != a["message_id"]:
                            raise JoinError(f"result line {n}: {a['message_id']!r} vs {b['message_id']!r} "
                                            f"under alternative {name}")
                        change = compare(a, b)
                        if change is not None:
                            by_alt[name] += 1
                            transitions[(name, change["from"], change["to"])] += 1
                            hits.append({"name": name, "outcome": change["to"], "appeared": change["appeared"],
                                         "disappeared": change["disappeared"]})
                    if hits:
                        flagged += 1
                        if keep is None or len(messages) < keep:
                            messages.append({"message_id": a["message_id"], "outcome": a["outcome"],
                                             "alternatives": hits})
        finally:
            for fh in handles:
                fh.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Sensitivity(names, flagged, by_alt, transitions, messages, judged, time.perf_counter() - start)
