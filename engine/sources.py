"""What a finding's source keys (`P22`, `000_9b4961320dbaa2d2.txt`) stand for: `msgpolicy sources`.

Everything comes from the policy set: sources.yaml gives each key its title,
publisher, date, URL and note (a source without a publisher is credited to its
URL's host; one without a date has none shown); a key without a URL is an
article kept as a file (the key is its file name). Where a key is cited is read from the
families, versions and rules that name it.
"""
from __future__ import annotations

from typing import Iterable, Optional
from urllib.parse import urlparse

from .policyfile import PolicySet


def publisher(url: Optional[str]) -> Optional[str]:
    """The site that published a source: its URL's host, without `www.`."""
    if not url:
        return None
    host = urlparse(url).hostname or ""
    return host.removeprefix("www.") or None


def citations(policies: PolicySet) -> dict[str, dict[str, list[str]]]:
    """For each source key: the versions that cite it (family/version), each with the rule ids
    citing it there (empty when the version, its family or an alternative cites it as a whole)."""
    cited: dict[str, dict[str, list[str]]] = {}

    def cite(key: str, where: str, rule: Optional[str] = None) -> None:
        rules = cited.setdefault(key, {}).setdefault(where, [])
        if rule is not None and rule not in rules:
            rules.append(rule)

    for family in policies.families.values():
        for key in family.file.sources:
            cite(key, family.id)
        for alternative in family.file.alternatives:
            for key in alternative.sources:
                cite(key, f"{family.id} --alt {alternative.name}")
        for version in family.versions:
            where = f"{family.id}/{version.id}"
            for key in version.version.sources:
                cite(key, where)
            for rule in version.enabled_rules:
                for key in rule.rule.sources:
                    cite(key, where, rule.id)
    return cited


def source_rows(policies: PolicySet, keys: Iterable[str] = ()) -> list[dict]:
    """One row per source (those of `keys`, in that order, or all); KeyError names an unknown key."""
    keys = list(keys)
    unknown = [k for k in keys if k not in policies.sources]
    if unknown:
        raise KeyError(", ".join(unknown))
    cited = citations(policies)
    rows = []
    for key in keys or list(policies.sources):
        source = policies.sources[key]
        rows.append({
            "key": key,
            "title": source.title,
            "publisher": source.publisher or publisher(source.url),
            "date": source.date or None,
            "url": source.url,
            "file": None if source.url else key,
            "note": source.note or None,
            "cited_by": cited.get(key, {}),
        })
    return rows


def label(policies: PolicySet, key: str) -> str:
    """A key with what it stands for, on one line: `P2  blog.zonmaster.com — 2017`,
    `001_….txt  Amazon Email Opt-Out Option: … (seed) — Viral Launch, 2017-03-30`."""
    source = policies.sources.get(key)
    if source is None:
        return key
    title = source.title.removeprefix(f"{key}: ")  # P-key titles repeat their key
    extra = [p for p in (source.publisher,) if p and p not in title] + [source.date or "date unknown"]
    return f"{key}  {title} — {', '.join(extra)}"
