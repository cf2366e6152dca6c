"""`msgpolicy test CASES.yaml`: users' policy tests (record → expected outcome and rules), like `opa test`.

A cases file::

    defaults:                  # optional, applies to every case
      on: 2020-11-10           # judge as if sent then (a date or an RFC 3339 instant)
      variant: alt:NAME        # a side, as in `msgpolicy diff --variant` (on= is not allowed here)
    cases:
      - name: review request with an emoji
        history: [ ...earlier records of the same log... ]   # optional
        record: { ...the message under test... }
        on: 2020-11-04         # optional, overrides defaults.on
        variant: [alt:guidelines-from-2020-11-06, overlay:draft.yaml]  # optional
        expect:
          outcome: violation
          rules: [CG2020-STYLE-EMOJI]     # exactly these rules have findings (ids or policy/id)
          # or rules_include / rules_exclude for a partial check

Overlay paths are relative to the cases file. The file is validated (pydantic)
before anything runs; every error names the file, the case and the field.
`select` (the CLI's `--run REGEX`) judges only the cases whose name it matches;
`coverage` names the rules that no case exercised; `junit_xml` writes the
results in the JUnit XML form CI systems read.
"""
from __future__ import annotations

import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .compile import Lease
from .evaluate import judge_records
from .io import InputError, to_record
from .model import Message, Outcome
from .policyfile import PolicyError, PolicySet, read_yaml
from .whatif import _SPLIT, Side, SideError, parse_side, parse_when


class CasesError(Exception):
    """The cases file is unreadable or invalid; str() names file, case and field."""

    def __init__(self, file, message: str, case: Optional[str] = None, field: Optional[str] = None):
        self.file, self.case, self.field, self.message = str(file), case, field, message
        where = [self.file] + ([f"case {case}"] if case else []) + ([f"field '{field}'"] if field else [])
        super().__init__(": ".join(where) + ": " + message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SideSpec = Union[str, list[str]]


def _check_on(value):
    # a plain Python ValueError raised inside pydantic would escape as itself, not as a validation error
    if value is None or isinstance(value, (dt.date, dt.datetime)):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            raise ValueError("a timestamp needs a UTC offset")
        return value
    try:
        return parse_when(str(value))
    except SideError as exc:
        raise ValueError(str(exc)) from None


class Expect(_Strict):
    outcome: Optional[Outcome] = None
    rules: Optional[list[str]] = None
    rules_include: list[str] = Field(default_factory=list)
    rules_exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self):
        if self.outcome is None and self.rules is None and not self.rules_include and not self.rules_exclude:
            raise ValueError("expect needs at least one of outcome, rules, rules_include, rules_exclude")
        return self


class Case(_Strict):
    name: Optional[str] = None
    record: dict[str, Any]
    history: list[dict[str, Any]] = Field(default_factory=list)
    on: Optional[Any] = None
    variant: Optional[SideSpec] = None
    expect: Expect

    _check = field_validator("on")(classmethod(lambda cls, v: _check_on(v)))


class Defaults(_Strict):
    on: Optional[Any] = None
    variant: Optional[SideSpec] = None

    _check = field_validator("on")(classmethod(lambda cls, v: _check_on(v)))


class CasesFile(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    name: str
    passed: bool
    expected: dict
    got: dict
    problems: list[str] = field(default_factory=list)
    side: str = "shipped"
    seconds: float = 0.0
    # (policy, version, rule) of every finding: what the case exercised, for rule coverage
    exercised: frozenset = frozenset()


@dataclass
class CasesRun:
    """The judged cases of one file, what the cases could exercise, and how many --run left out."""
    results: list[CaseResult]
    rules: frozenset          # (policy, version, rule) of every enabled rule of the policy sets used
    deselected: list[str] = field(default_factory=list)  # names of the cases --run left out


def _case_name(doc, i: int) -> str:
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if isinstance(cases, list) and i < len(cases) and isinstance(cases[i], dict) and isinstance(cases[i].get("name"), str):
        return cases[i]["name"]
    return f"#{i + 1}"


def load_cases(path: Union[str, Path]) -> CasesFile:
    path = Path(path)
    try:
        doc = read_yaml(path)
    except PolicyError as exc:
        raise CasesError(path, exc.message) from None
    if not isinstance(doc, dict):
        raise CasesError(path, "a cases file is a mapping with a 'cases' list", field="cases")
    # YAML 1.1 reads an unquoted key `on` as the boolean true: take it back as "on".
    for mapping in [doc.get("defaults")] + list(doc.get("cases") or []):
        if isinstance(mapping, dict) and True in mapping and "on" not in mapping:
            mapping["on"] = mapping.pop(True)
    try:
        return CasesFile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        case = None
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            case = _case_name(doc, loc[1])
            loc = loc[2:]
        where = ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        raise CasesError(path, msg, case=case, field=where or None) from None


def _side(spec: Optional[SideSpec], base: Path, file, case: str, field_name: str) -> Side:
    if spec is None:
        return Side()
    resolved = []
    for item in ([spec] if isinstance(spec, str) else list(spec)):
        for part in (p.strip() for p in _SPLIT.split(item)):
            if part.startswith(("on:", "on=")):
                raise CasesError(file, "give the date as the case's 'on' field, not in the variant",
                                 case=case, field=field_name)
            if part.startswith(("overlay:", "overlay=")) and not Path(part[8:]).is_absolute():
                part = "overlay:" + str(base / part[8:])  # relative to the cases file
            resolved.append(part)
    try:
        return parse_side(resolved, option=field_name)
    except SideError as exc:
        raise CasesError(file, str(exc), case=case, field=field_name) from None


def _rule_matches(wanted: str, found: set[tuple[str, str]]) -> bool:
    if "/" in wanted:
        return tuple(wanted.split("/", 1)) in found
    return any(r == wanted for _, r in found)


def run_cases(path: Union[str, Path], policies_root=None, select: Optional[re.Pattern] = None) -> list[CaseResult]:
    """Validate the whole file, then judge every case; raises CasesError/PolicyError on bad input."""
    return run_file(path, policies_root, select).results


def run_file(path: Union[str, Path], policies_root=None, select: Optional[re.Pattern] = None) -> CasesRun:
    """Validate the whole file, then judge the cases whose name `select` matches (all without it)."""
    path = Path(path)
    cases = load_cases(path)
    base = path.parent
    kept: dict[tuple, PolicySet] = {}
    # variant → (its versions' content hashes, its enabled rules, its marketplaces)
    summary: dict[tuple, tuple[frozenset, frozenset, frozenset]] = {}
    prepared = []
    deselected = []
    for i, case in enumerate(cases.cases):
        name = case.name or f"#{i + 1}"
        if select is not None and not select.search(name):
            deselected.append(name)
            continue  # like `opa test --run`: neither loaded nor judged
        spec = case.variant if case.variant is not None else cases.defaults.variant
        side = _side(spec, base, path, name, "variant")
        key = (side.alternatives, side.overlays)
        if key not in summary:
            policies = _load(side, policies_root, path, name)
            versions = policies.all_versions()
            summary[key] = (frozenset(v.content_hash for v in versions),
                            frozenset((v.family, v.id, r.id) for v in versions for r in v.enabled_rules),
                            frozenset(policies.marketplaces))
            if len(kept) < _KEEP_LOADED:
                kept[key] = policies
            del policies
        records = []
        for where, data in [(f"history.{j}", h) for j, h in enumerate(case.history)] + [("record", case.record)]:
            data = dict(data)
            if where == "record":
                data.setdefault("message_id", name)
            rec = to_record(data, str(path), None)
            if isinstance(rec, InputError):
                sub = f".{rec.field}" if rec.field else ""
                raise CasesError(path, rec.reason, case=name, field=where + sub)
            if isinstance(rec, Message) and rec.marketplace not in summary[key][2]:
                raise CasesError(path, f"unknown marketplace {rec.marketplace!r}", case=name, field=f"{where}.marketplace")
            records.append(rec)
        target = records[-1]
        if not isinstance(target, Message):
            raise CasesError(path, "the record under test must be a message", case=name, field="record")
        ids = [r.message_id for r in records if isinstance(r, Message)]
        if len(ids) != len(set(ids)):
            raise CasesError(path, "message_id used twice in this case", case=name, field="history")
        on = case.on if case.on is not None else cases.defaults.on
        prepared.append((name, side, key, records, target.message_id, on, case.expect))
    rules = frozenset().union(*(rules for _, rules, _ in summary.values()))
    # Each variant's rulesets are released after its last case (a ruleset costs megabytes the
    # process never gets back otherwise); versions several variants share stay for the run.
    sets_having: dict[str, int] = {}
    for hashes, _, _ in summary.values():
        for content_hash in hashes:
            sets_having[content_hash] = sets_having.get(content_hash, 0) + 1
    run_lease = Lease()
    run_lease.hold_hashes(h for h, n in sets_having.items() if n > 1)
    last_case = {p[2]: i for i, p in enumerate(prepared)}
    active: dict[tuple, tuple[PolicySet, Lease]] = {}
    results = []
    try:
        for i, (name, side, key, records, mid, on, expect) in enumerate(prepared):
            if key not in active:
                policies = kept.pop(key, None) or _load(side, policies_root, path, name)
                active[key] = (policies, Lease())
            policies, lease = active[key]
            start = time.perf_counter()
            with lease.current():
                verdict = next(v for v in judge_records(policies, records, at=on) if v.message_id == mid)
            seconds = time.perf_counter() - start
            if last_case[key] == i:
                del active[key], policies  # nothing later reads this variant
                lease.close()
            results.append(_result(name, side, expect, verdict, seconds))
    finally:
        for _, lease in active.values():
            lease.close()
        run_lease.close()
    return CasesRun(results, rules, deselected)


# Variants kept loaded from validation to judging; the others are loaded again when judged,
# as holding every loaded variant costs about 1.4 MiB each.
_KEEP_LOADED = 16


def _load(side: Side, policies_root, path: Path, name: str) -> PolicySet:
    try:
        return side.load(policies_root)
    except PolicyError as exc:
        raise CasesError(path, f"variant {side.label}: {exc}", case=name, field="variant") from None


def _result(name: str, side: Side, expect: Expect, verdict, seconds: float) -> CaseResult:
    found = {(f.policy, f.rule) for f in verdict.findings}
    problems = []
    if expect.outcome is not None and verdict.outcome != expect.outcome:
        problems.append(f"outcome {verdict.outcome.value}, expected {expect.outcome.value}")
    if expect.rules is not None:
        missing = [r for r in expect.rules if not _rule_matches(r, found)]
        extra = sorted(f"{p}/{r}" for p, r in found
                       if not any(w == r or w == f"{p}/{r}" for w in expect.rules))
        if missing:
            problems.append(f"missing rules {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected rules {', '.join(extra)}")
    for r in expect.rules_include:
        if not _rule_matches(r, found):
            problems.append(f"missing rule {r}")
    for r in expect.rules_exclude:
        if _rule_matches(r, found):
            problems.append(f"rule {r} should not fire")
    return CaseResult(
        name=name, passed=not problems, side=side.label,
        expected=expect.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
        got={"outcome": verdict.outcome.value, "rules": sorted(f"{p}/{r}" for p, r in found),
             "evaluated_at": verdict.evaluated_at.isoformat()},
        problems=problems, seconds=seconds,
        exercised=frozenset((f.policy, f.version, f.rule) for f in verdict.findings))


def coverage(runs: Iterable[CasesRun]) -> dict:
    """Which rules of the policy versions the cases ran under no case exercised (a finding of that
    rule, whatever its outcome), grouped by version: a rule no case fires is a rule no test pins."""
    runs = list(runs)
    rules = frozenset().union(*(run.rules for run in runs))
    exercised = frozenset().union(*(r.exercised for run in runs for r in run.results)) & rules
    missing: dict[str, list[str]] = {}
    for policy, version, rule in sorted(rules - exercised):
        missing.setdefault(f"{policy}/{version}", []).append(rule)
    return {"rules": len(rules), "exercised": len(exercised), "not_exercised": missing}


def junit_xml(runs: Iterable[tuple[Path, CasesRun]]) -> str:
    """JUnit XML: one <testsuite> per cases file, one <testcase> per case, a <failure> in each
    failing case (its problems and what the engine gave), a <skipped> in each one --run left out."""
    runs = list(runs)
    root = ET.Element("testsuites", name="msgpolicy test")
    totals = {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0}
    for path, run in runs:
        failures = sum(not r.passed for r in run.results)
        seconds = sum(r.seconds for r in run.results)
        suite = ET.SubElement(root, "testsuite", name=str(path), tests=str(len(run.results) + len(run.deselected)),
                              failures=str(failures), errors="0", skipped=str(len(run.deselected)),
                              time=f"{seconds:.3f}")
        for r in run.results:
            name = r.name if r.side == "shipped" else f"{r.name} [{r.side}]"
            case = ET.SubElement(suite, "testcase", classname=str(path), name=name, time=f"{r.seconds:.3f}")
            if not r.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(r.problems), type="expectation")
                failure.text = "\n".join(r.problems + [f"got {r.got['outcome']} [{', '.join(r.got['rules']) or 'no findings'}]"])
        for name in run.deselected:
            case = ET.SubElement(suite, "testcase", classname=str(path), name=name, time="0")
            ET.SubElement(case, "skipped", message="not selected by --run")
        totals["tests"] += len(run.results) + len(run.deselected)
        totals["failures"] += failures
        totals["skipped"] += len(run.deselected)
        totals["time"] += seconds
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
