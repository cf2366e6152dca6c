"""Policy files: their schema, the safe loader, inheritance, alternatives and overlays.

Layout of a policies directory::

    sources.yaml          source keys (P1…, seed file names) → title, publisher, date, URL
    marketplaces.yaml     marketplace code → IANA time zone
    <family>/family.yaml  the family: title, category attributes, alternatives
    <family>/<any>.yaml   one dated version per file

Files are read with yaml.safe_load (never executed) and validated by pydantic;
every error names the file, the rule (when there is one) and the field.
"""
from __future__ import annotations

import copy
import functools
import operator
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .conditions import All, AnyOf, ConditionSpec, Const, Node, Not, Test, facts_used, simplify, to_nnf
from .detectors import DetectorSpec, PriorCountDetector
from .facts import BOOL, RESERVED_FACT_NAMES, STRUCTURAL_FACTS, spec_key
from .model import Category, Outcome

Confidence = Literal["H", "M", "L"]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
ALL_MARKETPLACES = "*"


class MsgpolicyError(Exception):
    """A failure the user can act on. The command prints `<kind>: <str(exc)>` on one line
    and exits 2; `detail` (e.g. a worker's traceback) is shown only under --debug."""

    kind = "error"
    detail: Optional[str] = None


class PolicyError(MsgpolicyError):
    """A policy file is unreadable or invalid. str() names file, rule and field."""

    kind = "policy error"

    def __init__(self, file: Path | str, message: str, rule: Optional[str] = None, field: Optional[str] = None):
        self.file, self.rule, self.field, self.message = str(file), rule, field, message
        where = [self.file]
        if rule:
            where.append(f"rule {rule}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where) + ": " + message)


# durable_rules refuses a fact of more than 252 properties (its error 302); every fact also
# carries the ruleset's sid and a marker, so a version's rules may read at most 250 facts.
MAX_FACTS_PER_VERSION = 250
# It also refuses a fact that matches more than 64 condition branches at once (its error 303):
# every alternative of an `any` that holds is one branch.
MAX_MATCHES_PER_VERSION = 64


def _most_matches(node) -> int:
    """An upper bound on the branches of a compiled condition (negation normal form) that one
    fact can match: an `any` adds its items', an `all` multiplies them, and an `in` test is one
    branch (a fact holds one value)."""
    if isinstance(node, All):
        return functools.reduce(operator.mul, (_most_matches(i) for i in node.items), 1)
    if isinstance(node, AnyOf):
        return sum(_most_matches(i) for i in node.items)
    return 1


# ---- schema ---------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    title: str = Field(min_length=1)
    when: ConditionSpec
    outcome: Outcome
    reason: str = Field(min_length=1)
    sources: list[str] = Field(min_length=1)
    confidence: Confidence
    enabled: bool = True
    # How a possible finding that hinges on an unknown fact is reported:
    # 'indeterminate' (see docs/concepts.md) or 'note' (an allowed-level note,
    # for checks the policy chooses not to hold against a missing field).
    on_unknown: Literal["indeterminate", "note"] = "indeterminate"
    # A reminder of a guideline no detector can check (an allowed note on every message it
    # applies to): text outputs name it on each message and give its reason once.
    unchecked: bool = False
    parameters: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""

    @field_validator("unchecked")
    @classmethod
    def _unchecked_is_a_note(cls, unchecked, info):
        if unchecked and info.data.get("outcome") not in (None, Outcome.allowed):
            raise ValueError("an unchecked rule is a reminder: its outcome must be allowed")
        return unchecked

    @field_validator("outcome")
    @classmethod
    def _not_no_policy(cls, outcome):
        if outcome is Outcome.no_policy:
            raise ValueError("no_policy is not a rule outcome: it means no version is in force")
        return outcome


class Version(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    title: str = Field(min_length=1)
    summary: str = ""
    inherits: Optional[str] = None
    effective_from: dt.date
    effective_to: Optional[dt.date] = None
    marketplaces: list[str] = Field(min_length=1)
    sources: list[str] = Field(min_length=1)
    confidence: Confidence
    parameters: dict[str, Any] = Field(default_factory=dict)
    categories: dict[Category, dict[str, Any]]
    detectors: dict[str, DetectorSpec] = Field(default_factory=dict)
    predicates: dict[str, ConditionSpec] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class VersionPatch(BaseModel):
    """Changes to one version; rules are merged field by field by id."""

    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = None
    summary: Optional[str] = None
    inherits: Optional[str] = None
    effective_from: Optional[dt.date] = None
    effective_to: Optional[dt.date] = None
    marketplaces: Optional[list[str]] = None
    sources: Optional[list[str]] = None
    confidence: Optional[Confidence] = None
    parameters: Optional[dict[str, Any]] = None
    categories: Optional[dict[str, dict[str, Any]]] = None
    detectors: Optional[dict[str, Any]] = None
    predicates: Optional[dict[str, Any]] = None
    rules: Optional[list[dict[str, Any]]] = None
    remove_rules: Optional[list[str]] = None


class FamilyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    versions: dict[str, VersionPatch] = Field(default_factory=dict)
    add_versions: list[dict[str, Any]] = Field(default_factory=list)
    remove_versions: list[str] = Field(default_factory=list)


class Alternative(_Strict):
    """A recorded disputed reading, selectable by name for a what-if run."""

    name: str = Field(pattern=ID_PATTERN)
    title: str
    description: str = ""
    sources: list[str] = Field(min_length=1)
    confidence: Confidence
    changes: FamilyPatch


class FamilyFile(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    title: str
    summary: str = ""
    description: str = ""
    sources: list[str] = Field(default_factory=list)
    category_attributes: list[str] = Field(min_length=1)
    alternatives: list[Alternative] = Field(default_factory=list)


class Source(_Strict):
    """A cited article. `date` is its publication date as precise as the article gives it
    (YYYY, YYYY-MM or YYYY-MM-DD), empty when it gives none; `publisher` is the site or
    organisation that published it, empty when unknown."""

    title: str = Field(min_length=1)
    publisher: str = ""
    date: str = Field(default="", pattern=r"^(\d{4}(-\d{2}(-\d{2})?)?)?$")
    url: Optional[str] = None
    note: str = ""

    @field_validator("date", mode="before")
    @classmethod
    def _unquoted_date(cls, value: Any) -> Any:
        return value.isoformat() if isinstance(value, dt.date) else value  # YAML reads 2017-03-30 as a date

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        if value:  # a partial date must still name a real month and day
            parts = [int(p) for p in value.split("-")] + [1, 1]
            dt.date(*parts[:3])
        return value


class Overlay(_Strict):
    """A draft: changes to shipped families in the same format as alternatives.

    ``sources`` may add source keys that the draft's rules cite; a key already
    in sources.yaml cannot be redefined."""

    title: str = ""
    description: str = ""
    sources: dict[str, Source] = Field(default_factory=dict)
    families: dict[str, FamilyPatch] = Field(min_length=1)


# ---- resolved objects -----------------------------------------------------


@dataclass(frozen=True)
class ResolvedRule:
    rule: Rule
    condition: Node  # after predicates, parameters and category sets are substituted

    @property
    def id(self) -> str:
        return self.rule.id


@dataclass
class ResolvedVersion:
    family: str
    version: Version
    file: str
    rules: list[ResolvedRule]
    effective_to: Optional[dt.date]
    content_hash: str = ""
    structural_facts_used: tuple[str, ...] = ()
    detectors_used: dict[str, tuple[str, Any]] = field(default_factory=dict)
    fact_domains: dict[str, Optional[tuple]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.version.id

    @property
    def effective_from(self) -> dt.date:
        return self.version.effective_from

    def applies_to(self, marketplace: str) -> bool:
        return ALL_MARKETPLACES in self.version.marketplaces or marketplace in self.version.marketplaces

    def contains(self, local_date: dt.date) -> bool:
        return self.effective_from <= local_date and (self.effective_to is None or local_date < self.effective_to)

    @functools.cached_property
    def reads_language(self) -> bool:
        """Whether a rule of this version reads the message's language (a language_match detector)."""
        from .detectors import LanguageMatchDetector

        return any(isinstance(spec, LanguageMatchDetector) for _, spec in self.detectors_used.values())

    @functools.cached_property
    def rule_index(self) -> dict[str, ResolvedRule]:
        return {r.id: r for r in self.rules}

    @property
    def enabled_rules(self) -> list[ResolvedRule]:
        return [r for r in self.rules if r.rule.enabled]

    @property
    def label(self) -> str:
        return f"{self.family}/{self.id}"


@dataclass
class Family:
    file: FamilyFile
    path: str
    versions: list[ResolvedVersion]  # sorted by effective_from

    @property
    def id(self) -> str:
        return self.file.id


@dataclass
class PolicySet:
    root: Path
    families: dict[str, Family]
    sources: dict[str, Source]
    marketplaces: dict[str, str]
    alternatives: tuple[str, ...] = ()
    overlay_names: tuple[str, ...] = ()
    _raw: Any = None
    # policies/classifier/ (issue 8): infers the category of records that lack one.
    classifier: Any = None

    def all_versions(self) -> list[ResolvedVersion]:
        return [v for f in self.families.values() for v in f.versions]

    def version(self, family: str, version: str) -> ResolvedVersion:
        for v in self.families[family].versions:
            if v.id == version:
                return v
        raise KeyError(f"{family}/{version}")

    def alternative_names(self) -> dict[str, str]:
        return {a.name: f.id for f in self.families.values() for a in f.file.alternatives}

    def with_changes(self, alternatives: Sequence[str] = (), overlays: Sequence[Path] = ()) -> "PolicySet":
        return _build(self._raw, tuple(self.alternatives) + tuple(alternatives), tuple(overlays))

    def prior_count_detectors(self) -> tuple[PriorCountDetector, ...]:
        seen: dict[str, PriorCountDetector] = {}
        for v in self.all_versions():
            for key, spec in v.detectors_used.values():
                if isinstance(spec, PriorCountDetector):
                    seen.setdefault(key, spec)
        return tuple(seen.values())

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for v in sorted(self.all_versions(), key=lambda v: v.label):
            h.update(v.content_hash.encode())
        return h.hexdigest()


# ---- loading --------------------------------------------------------------


# libyaml's parser when PyYAML has it (several times faster on the classifier's vocabulary,
# which every audit worker loads); the constructor stays PyYAML's safe one either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """safe_load that refuses duplicate keys instead of keeping the last one silently."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# Limits on one YAML file (policies, overlays, maps, case files): a hostile file must fail
# fast with a named error rather than exhaust memory or the stack. The shipped vocabulary,
# the largest file, is well under a megabyte and 10 levels deep.
YAML_MAX_BYTES = 16 << 20
YAML_MAX_DEPTH = 64
# Nodes the document would have with every alias expanded (an "alias bomb" is small on disk
# and shares its nodes, but anything that walks or copies it expands them).
YAML_MAX_NODES = 2_000_000


def _check_yaml_shape(doc: Any, path: Path) -> None:
    """Refuse a document nested deeper than YAML_MAX_DEPTH or larger than YAML_MAX_NODES
    once its aliases are expanded; shared nodes are sized once (memoised by identity)."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if depth > YAML_MAX_DEPTH:
            raise PolicyError(path, f"nested deeper than {YAML_MAX_DEPTH} levels")
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a self-referencing alias counts once instead of looping
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > YAML_MAX_NODES:
            raise PolicyError(path, f"more than {YAML_MAX_NODES:,} values once its aliases are expanded "
                                    "(an alias bomb?)")
        sizes[id(node)] = total
        return total

    size(doc, 0)


def read_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > YAML_MAX_BYTES:
            raise PolicyError(path, f"larger than {YAML_MAX_BYTES >> 20} MiB")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PolicyError(path, f"line {line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise PolicyError(path, f"cannot read: {exc.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(path, "not valid YAML: " + " ".join(str(exc).split())) from None
    except ValueError as exc:  # e.g. an impossible date such as 2020-12-40, which YAML reads as a date
        raise PolicyError(path, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise PolicyError(path, f"nested deeper than {YAML_MAX_DEPTH} levels") from None
    _check_yaml_shape(doc, path)
    return doc


def default_policies_dir() -> Path:
    """The policies shipped in the wheel, or the repository's when run from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "policies", here.parent / "policies"):
        if (candidate / "sources.yaml").is_file():
            return candidate
    raise PolicyError(here / "policies", "no shipped policies found; pass --policies DIR")


@dataclass
class _RawFamily:
    path: Path
    doc: dict
    versions: dict[str, tuple[Path, dict]]  # id → (file, raw document)


@dataclass
class _RawSet:
    root: Path
    sources: dict
    marketplaces: dict
    families: dict[str, _RawFamily]


def load_policies(
    root: Optional[Path | str] = None,
    alternatives: Sequence[str] = (),
    overlays: Sequence[Path | str] = (),
) -> PolicySet:
    root = Path(root) if root is not None else default_policies_dir()
    if not root.is_dir():
        raise PolicyError(root, "not a directory")
    raw = _read_raw(root)
    return _build(raw, tuple(alternatives), tuple(Path(o) for o in overlays))


_RAW_CACHE: dict[tuple, _RawSet] = {}


def _read_raw(root: Path) -> _RawSet:
    """The parsed files of a policies directory, re-read only when a file changed (size or mtime):
    a what-if loads the same directory once per side, and YAML parsing dominates loading."""
    stamp = []
    for f in sorted(root.glob("*.yaml")) + sorted(root.glob("*/*.yaml")):
        st = f.stat()
        stamp.append((str(f), st.st_mtime_ns, st.st_size))
    key = (str(root.resolve()), tuple(stamp))
    raw = _RAW_CACHE.get(key)
    if raw is None:
        raw = _read_raw_files(root)
        if len(_RAW_CACHE) > 16:
            _RAW_CACHE.clear()
        _RAW_CACHE[key] = raw
    return copy.deepcopy(raw)


def _read_raw_files(root: Path) -> _RawSet:
    sources_doc = read_yaml(root / "sources.yaml")
    markets_doc = read_yaml(root / "marketplaces.yaml")
    families: dict[str, _RawFamily] = {}
    for family_file in sorted(root.glob("*/family.yaml")):
        doc = read_yaml(family_file)
        if not isinstance(doc, dict) or "id" not in doc:
            raise PolicyError(family_file, "a family file is a mapping with an 'id'", field="id")
        versions: dict[str, tuple[Path, dict]] = {}
        for vfile in sorted(family_file.parent.glob("*.yaml")):
            if vfile.name == "family.yaml":
                continue
            vdoc = read_yaml(vfile)
            if not isinstance(vdoc, dict) or not isinstance(vdoc.get("id"), str):
                raise PolicyError(vfile, "a version file is a mapping with a string 'id'", field="id")
            if vdoc["id"] in versions:
                raise PolicyError(vfile, f"version id {vdoc['id']!r} already used by {versions[vdoc['id']][0]}", field="id")
            versions[vdoc["id"]] = (vfile, vdoc)
        if doc["id"] in families:
            raise PolicyError(family_file, f"family id {doc['id']!r} is used twice", field="id")
        families[doc["id"]] = _RawFamily(family_file, doc, versions)
    if not families:
        raise PolicyError(root, "no policy families found (expected <family>/family.yaml)")
    return _RawSet(root, sources_doc, markets_doc, families)


def _validate(model, data, file, rules_raw: Optional[list] = None, prefix: str = ""):
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        rule = None
        if rules_raw is not None and len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            entry = rules_raw[loc[1]] if loc[1] < len(rules_raw) else {}
            rule = str(entry.get("id", f"#{loc[1] + 1}")) if isinstance(entry, dict) else f"#{loc[1] + 1}"
            loc = loc[2:]
        where = ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        raise PolicyError(file, err["msg"], rule=rule, field=(prefix + where) or None) from None


def _build(raw: _RawSet, alternatives: tuple[str, ...], overlays: tuple[Path, ...]) -> PolicySet:
    sources = _validate(TypeAdapter(dict[str, Source]), raw.sources or {}, raw.root / "sources.yaml")
    markets = _validate(TypeAdapter(dict[str, str]), raw.marketplaces or {}, raw.root / "marketplaces.yaml")
    _check_time_zones(markets, raw.root / "marketplaces.yaml")

    families_raw = {fid: copy.deepcopy(f) for fid, f in raw.families.items()}
    family_files = {fid: _validate(FamilyFile, f.doc, f.path) for fid, f in families_raw.items()}

    known_alts = {a.name: (fid, a) for fid, ff in family_files.items() for a in ff.alternatives}
    for name in alternatives:
        if name not in known_alts:
            raise PolicyError(raw.root, f"unknown alternative {name!r}; known: {', '.join(sorted(known_alts)) or 'none'}")
        fid, alt = known_alts[name]
        _apply_patch(families_raw[fid], alt.changes, f"{family_files[fid].id} alternative {name}")
    # Which overlay last touched each family, so that an error found while
    # resolving a patched family names the draft that caused it.
    patched_by: dict[str, Path] = {}
    for path in overlays:
        doc = read_yaml(path)
        if not isinstance(doc, dict):
            raise PolicyError(path, "an overlay is a mapping with a 'families' key", field="families")
        overlay = _validate(Overlay, doc, path)
        for key in overlay.sources:
            if key in sources:
                raise PolicyError(path, f"source {key!r} is already defined in sources.yaml", field=f"sources.{key}")
        sources = {**sources, **overlay.sources}
        for fid, patch in overlay.families.items():
            if fid not in families_raw:
                known = ", ".join(sorted(families_raw))
                raise PolicyError(path, f"unknown family {fid!r}; known: {known}", field=f"families.{fid}")
            _apply_patch(families_raw[fid], patch, "overlay", source=path,
                         field_prefix=f"families.{fid}.")
            patched_by[fid] = path

    families = {}
    for fid, fam in families_raw.items():
        ffile = family_files[fid]
        for key in ffile.sources:
            _check_source(key, sources, fam.path, None)
        try:
            versions = [_resolve_version(fam, vid, ffile, sources, markets) for vid in fam.versions]
            _assign_intervals(versions, fam)
        except PolicyError as exc:
            if fid not in patched_by:
                raise
            # The shipped files are valid on their own: the overlay made this version invalid.
            raise PolicyError(patched_by[fid], f"{exc.message} (in {fid} as changed by this overlay; "
                              f"location {Path(exc.file).name})", rule=exc.rule, field=exc.field) from None
        families[fid] = Family(ffile, str(fam.path), versions)
    from .classifier.config import load_classifier_config  # here: the classifier package imports this module

    policy_set = PolicySet(raw.root, families, sources, markets, alternatives, tuple(str(o) for o in overlays), raw,
                           classifier=load_classifier_config(raw.root / "classifier"))
    return policy_set


def _check_time_zones(markets: dict[str, str], file: Path) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    for code, zone in markets.items():
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(file, f"unknown time zone {zone!r}", field=code) from None


def _check_source(key: str, sources: dict, file, rule: Optional[str], field_name: str = "sources") -> None:
    if key not in sources:
        raise PolicyError(file, f"unknown source {key!r} (add it to sources.yaml)", rule=rule, field=field_name)


# ---- patches (alternatives, overlays) -------------------------------------


def _merge_rules(base: list, changes: list, file, what: str) -> list:
    merged = [dict(r) for r in base]
    index = {r.get("id"): i for i, r in enumerate(merged)}
    for change in changes:
        if not isinstance(change, dict) or "id" not in change:
            raise PolicyError(file, f"{what}: every rule entry needs an 'id'", field="rules")
        if change["id"] in index:
            merged[index[change["id"]]].update(change)
        else:
            index[change["id"]] = len(merged)
            merged.append(dict(change))
    return merged


def _apply_patch(fam: _RawFamily, patch: FamilyPatch, what: str, source: Optional[Path] = None,
                 field_prefix: str = "") -> None:
    """Apply an alternative's or an overlay's changes; errors name `source` (default: the family file)."""
    where = source if source is not None else fam.path
    known = lambda: ", ".join(sorted(fam.versions))  # noqa: E731
    for vid in patch.remove_versions:
        if vid not in fam.versions:
            raise PolicyError(where, f"{what}: cannot remove unknown version {vid!r}; known: {known()}",
                              field=f"{field_prefix}remove_versions")
        del fam.versions[vid]
    for vid, vpatch in patch.versions.items():
        if vid not in fam.versions:
            raise PolicyError(where, f"{what}: unknown version {vid!r}; known: {known()}",
                              field=f"{field_prefix}versions.{vid}")
        file, doc = fam.versions[vid]
        fam.versions[vid] = (file, _patch_version(doc, vpatch, source or file, what,
                                                   f"{field_prefix}versions.{vid}."))
    for i, doc in enumerate(patch.add_versions):
        vid = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(vid, str) or vid in fam.versions:
            raise PolicyError(where, f"{what}: an added version needs a new string 'id' (got {vid!r})",
                              field=f"{field_prefix}add_versions.{i}")
        fam.versions[vid] = (source or Path(f"{fam.path.parent}/<{what}>"), copy.deepcopy(doc))


def _patch_version(doc: dict, patch: VersionPatch, file, what: str, field_prefix: str = "") -> dict:
    doc = copy.deepcopy(doc)
    for name, value in patch.model_dump(exclude_none=True).items():
        if name in ("parameters", "detectors", "predicates"):
            doc[name] = {**doc.get(name, {}), **value}
        elif name == "categories":
            cats = doc.setdefault("categories", {})
            for cat, attrs in value.items():
                cats[cat] = {**cats.get(cat, {}), **attrs}
        elif name == "rules":
            for i, change in enumerate(value):
                if not isinstance(change, dict) or not isinstance(change.get("id"), str):
                    raise PolicyError(file, f"{what}: every rule entry needs a string 'id'",
                                      field=f"{field_prefix}rules.{i}.id")
            doc["rules"] = _merge_rules(doc.get("rules", []), value, file, what)
        elif name == "remove_rules":
            doc["remove_rules"] = list(doc.get("remove_rules", [])) + value
        else:
            doc[name] = value
    return doc


# ---- inheritance and resolution -------------------------------------------


def _flatten(fam: _RawFamily, vid: str, chain: tuple[str, ...] = ()) -> dict:
    """The version document with everything it inherits merged in (child wins, rules by id)."""
    if vid in chain:
        raise PolicyError(fam.versions[vid][0], f"inheritance cycle: {' → '.join(chain + (vid,))}", field="inherits")
    file, doc = fam.versions[vid]
    parent_id = doc.get("inherits")
    if parent_id is None:
        merged = copy.deepcopy(doc)
        merged.setdefault("rules", [])
    else:
        if parent_id not in fam.versions:
            raise PolicyError(file, f"inherits unknown version {parent_id!r}", field="inherits")
        parent = _flatten(fam, parent_id, chain + (vid,))
        merged = copy.deepcopy(parent)
        for key in ("title", "summary", "effective_from", "effective_to", "sources", "confidence"):
            merged.pop(key, None)
        merged["inherits"] = parent_id
        for key, value in doc.items():
            if key in ("parameters", "detectors", "predicates"):
                merged[key] = {**parent.get(key, {}), **value}
            elif key == "categories":
                cats = copy.deepcopy(parent.get("categories", {}))
                for cat, attrs in (value or {}).items():
                    cats[cat] = {**cats.get(cat, {}), **(attrs or {})}
                merged["categories"] = cats
            elif key == "rules":
                merged["rules"] = _merge_rules(parent.get("rules", []), value or [], file, f"version {vid}")
            elif key == "remove_rules":
                continue
            else:
                merged[key] = copy.deepcopy(value)
    removed = doc.get("remove_rules") or []
    if removed:
        ids = {r.get("id") for r in merged["rules"]}
        for rid in removed:
            if rid not in ids:
                raise PolicyError(file, f"remove_rules names unknown rule {rid!r}", rule=str(rid), field="remove_rules")
        merged["rules"] = [r for r in merged["rules"] if r.get("id") not in removed]
    merged.pop("remove_rules", None)
    return merged


def _substitute_params(value: Any, params: dict, file, rule, field_name: str) -> Any:
    """Replace {param: NAME} anywhere in a detector spec by the parameter's value."""
    if isinstance(value, dict):
        if set(value) == {"param"}:
            name = value["param"]
            if name not in params:
                raise PolicyError(file, f"unknown parameter {name!r}", rule=rule, field=field_name)
            return params[name]
        return {k: _substitute_params(v, params, file, rule, f"{field_name}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_params(v, params, file, rule, f"{field_name}.{i}") for i, v in enumerate(value)]
    return value


def _resolve_version(fam: _RawFamily, vid: str, ffile: FamilyFile, sources: dict, markets: dict) -> ResolvedVersion:
    file = fam.versions[vid][0]
    flat = _flatten(fam, vid)
    params = flat.get("parameters") or {}
    if "detectors" in flat:
        flat["detectors"] = {
            name: _substitute_params(spec, params, file, None, f"detectors.{name}")
            for name, spec in (flat["detectors"] or {}).items()
        }
    version = _validate(Version, flat, file, flat.get("rules"))

    for key in version.sources:
        _check_source(key, sources, file, None)
    for code in version.marketplaces:
        if code != ALL_MARKETPLACES and code not in markets:
            raise PolicyError(file, f"unknown marketplace {code!r} (see marketplaces.yaml)", field="marketplaces")
    missing = [c.value for c in Category if c not in version.categories]
    if missing:
        raise PolicyError(file, f"every category must be classified; missing: {', '.join(missing)}", field="categories")
    for cat, attrs in version.categories.items():
        for attr in ffile.category_attributes:
            if attr not in attrs:
                raise PolicyError(file, f"category {cat.value} lacks attribute {attr!r}", field=f"categories.{cat.value}.{attr}")
        for attr in attrs:
            if attr not in ffile.category_attributes:
                raise PolicyError(file, f"attribute {attr!r} is not declared in family.yaml category_attributes",
                                  field=f"categories.{cat.value}.{attr}")

    domains: dict[str, Optional[tuple]] = dict(STRUCTURAL_FACTS)
    for name in version.detectors:
        if name in STRUCTURAL_FACTS or name in RESERVED_FACT_NAMES:
            raise PolicyError(file, f"detector name {name!r} is taken by a structural fact or the engine",
                              field=f"detectors.{name}")
        domains[name] = BOOL

    resolver = _ConditionResolver(version, domains, file)
    for name in version.predicates:
        resolver.predicate(name)  # validate every predicate, used or not
    rules = []
    seen_ids = set()
    for rule in version.rules:
        if rule.id in seen_ids:
            raise PolicyError(file, "rule id used twice in one version", rule=rule.id, field="id")
        seen_ids.add(rule.id)
        for key in rule.sources:
            _check_source(key, sources, file, rule.id)
        node = simplify(resolver.resolve(rule.when, rule, "when"))
        rules.append(ResolvedRule(rule, node))

    used: set[str] = set()
    for r in rules:
        if r.rule.enabled:
            used |= facts_used(r.condition)
    matches = sum(_most_matches(to_nnf(r.condition)) for r in rules if r.rule.enabled)
    if matches > MAX_MATCHES_PER_VERSION:
        raise PolicyError(file, f"the enabled rules can match one message in {matches} ways; durable_rules "
                                f"handles at most {MAX_MATCHES_PER_VERSION} (split the version's rules, or "
                                "write `in` instead of alternatives of the same fact)", field="rules")
    if len(used) > MAX_FACTS_PER_VERSION:
        raise PolicyError(file, f"the enabled rules read {len(used)} facts; durable_rules evaluates at most "
                                f"{MAX_FACTS_PER_VERSION} in one version (split the version's rules or "
                                f"combine detectors)", field="rules")
    resolved = ResolvedVersion(
        family=ffile.id,
        version=version,
        file=str(file),
        rules=rules,
        effective_to=version.effective_to,
        structural_facts_used=tuple(sorted(f for f in used if f in STRUCTURAL_FACTS)),
        detectors_used={n: (spec_key(version.detectors[n]), version.detectors[n]) for n in sorted(used) if n in version.detectors},
        fact_domains={n: domains[n] for n in sorted(used)},
    )
    return resolved


class _ConditionResolver:
    def __init__(self, version: Version, domains: dict, file):
        self.version, self.domains, self.file = version, domains, file
        self._predicates: dict[str, Node] = {}
        self._stack: list[str] = []

    def predicate(self, name: str, rule=None, where: str = "") -> Node:
        if name in self._predicates:
            return self._predicates[name]
        if name not in self.version.predicates:
            raise PolicyError(self.file, f"unknown predicate {name!r}", rule=rule.id if rule else None, field=where or None)
        if name in self._stack:
            raise PolicyError(self.file, f"predicate cycle: {' → '.join(self._stack + [name])}", field=f"predicates.{name}")
        self._stack.append(name)
        node = self.resolve(self.version.predicates[name], None, f"predicates.{name}")
        self._stack.pop()
        self._predicates[name] = node
        return node

    def _param(self, name: str, rule, where: str) -> Any:
        if rule is not None and name in rule.parameters:
            return rule.parameters[name]
        if name in self.version.parameters:
            return self.version.parameters[name]
        raise PolicyError(self.file, f"unknown parameter {name!r}", rule=rule.id if rule else None, field=where)

    def resolve(self, spec: ConditionSpec, rule, where: str) -> Node:
        rid = rule.id if rule else None
        if spec.all_ is not None:
            return All(tuple(self.resolve(s, rule, f"{where}.all.{i}") for i, s in enumerate(spec.all_)))
        if spec.any_ is not None:
            return AnyOf(tuple(self.resolve(s, rule, f"{where}.any.{i}") for i, s in enumerate(spec.any_)))
        if spec.not_ is not None:
            return Not(self.resolve(spec.not_, rule, f"{where}.not"))
        if spec.ref is not None:
            return self.predicate(spec.ref, rule, f"{where}.ref")
        if spec.always is not None:
            return Const(bool(spec.always))
        if spec.param is not None:
            value = self._param(spec.param, rule, f"{where}.param")
            if not isinstance(value, bool):
                raise PolicyError(self.file, f"parameter {spec.param!r} used as a condition must be true or false",
                                  rule=rid, field=f"{where}.param")
            return Const(value)
        return self._test(spec, rule, where)

    def _test(self, spec: ConditionSpec, rule, where: str) -> Test:
        rid = rule.id if rule else None
        name = spec.fact
        if name not in self.domains:
            raise PolicyError(self.file, f"unknown fact {name!r}; known: {', '.join(sorted(self.domains))}",
                              rule=rid, field=f"{where}.fact")
        op, value = spec.operator()
        field_name = f"{where}.{op}"
        if hasattr(value, "param") and value.param is not None:
            value = self._param(value.param, rule, field_name)
        elif hasattr(value, "categories_where") and value.categories_where is not None:
            if name != "category":
                raise PolicyError(self.file, "categories_where only applies to the category fact", rule=rid, field=field_name)
            wanted = value.categories_where
            value = [c.value for c, attrs in self.version.categories.items()
                     if all(attrs.get(k) == v for k, v in wanted.items())]
        domain = self.domains[name]
        if op in ("in", "not_in"):
            if not isinstance(value, list):
                raise PolicyError(self.file, f"'{op}' takes a list", rule=rid, field=field_name)
            for item in value:
                self._check_value(item, domain, rid, field_name)
            return Test(name, op, tuple(value))
        if isinstance(value, list):
            raise PolicyError(self.file, f"'{op}' takes a single value, not a list", rule=rid, field=field_name)
        if op in ("gt", "ge", "lt", "le"):
            if not isinstance(value, int) or isinstance(value, bool) or domain is not None and not all(
                isinstance(d, int) and not isinstance(d, bool) for d in domain
            ):
                raise PolicyError(self.file, f"'{op}' compares whole numbers only", rule=rid, field=field_name)
        self._check_value(value, domain, rid, field_name)
        return Test(name, op, value)

    def _check_value(self, value, domain, rid, field_name):
        if value is None:
            raise PolicyError(self.file, "a value is required", rule=rid, field=field_name)
        if domain is not None and not any(value == d and type(value) is type(d) for d in domain):
            shown = ", ".join(map(str, domain))
            raise PolicyError(self.file, f"{value!r} is not a possible value (one of: {shown})", rule=rid, field=field_name)


def _assign_intervals(versions: list[ResolvedVersion], fam: _RawFamily) -> None:
    versions.sort(key=lambda v: (v.effective_from, v.id))
    for i, v in enumerate(versions):
        nxt = versions[i + 1].effective_from if i + 1 < len(versions) else None
        end = v.version.effective_to or nxt
        if v.version.effective_to and nxt and v.version.effective_to > nxt:
            # An explicit end may leave a gap but never overlaps a later version in a shared marketplace.
            for later in versions[i + 1:]:
                if later.effective_from < v.version.effective_to and _share_marketplace(v, later):
                    raise PolicyError(v.file, f"interval overlaps version {later.id!r} from {later.effective_from}",
                                      field="effective_to")
            end = v.version.effective_to
        if end is not None and end <= v.effective_from:
            raise PolicyError(v.file, f"effective_to {end} is not after effective_from {v.effective_from}", field="effective_to")
        v.effective_to = end
        v.content_hash = _hash_version(v)


def _share_marketplace(a: ResolvedVersion, b: ResolvedVersion) -> bool:
    ma, mb = set(a.version.marketplaces), set(b.version.marketplaces)
    return ALL_MARKETPLACES in ma or ALL_MARKETPLACES in mb or bool(ma & mb)


# Rule fields added after versions were first hashed: at their default they are left out of
# the hash, so that a policy file which does not use them keeps the hash it always had.
_RULE_FIELDS_ADDED = {"unchecked": False}


def _hash_version(v: ResolvedVersion) -> str:
    version = v.version.model_dump(mode="json")
    for rule in version.get("rules") or ():
        for name, default in _RULE_FIELDS_ADDED.items():
            if rule.get(name) == default:
                del rule[name]
    payload = {
        "family": v.family,
        "version": version,
        "effective_to": v.effective_to.isoformat() if v.effective_to else None,
        "conditions": {r.id: repr(r.condition) for r in v.rules},
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
