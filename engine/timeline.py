"""Which versions are in force at an instant, on the marketplace's own calendar.

A version's dates are local midnights in the marketplace's time zone and its
interval is half-open, so an instant is inside [from, to) exactly when its
local calendar date is on or after `from` and before `to`.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from .policyfile import ALL_MARKETPLACES, PolicySet, ResolvedVersion


@lru_cache(maxsize=None)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def marketplace_zone(policies: PolicySet, marketplace: str) -> ZoneInfo:
    try:
        return zone(policies.marketplaces[marketplace])
    except KeyError:
        raise KeyError(
            f"unknown marketplace {marketplace!r}; known: {', '.join(sorted(policies.marketplaces))}"
        ) from None


def local_date(policies: PolicySet, instant: dt.datetime, marketplace: str) -> dt.date:
    return instant.astimezone(marketplace_zone(policies, marketplace)).date()


def local_midnight(policies: PolicySet, day: dt.date, marketplace: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=marketplace_zone(policies, marketplace))


def local_noon(policies: PolicySet, day: dt.date, marketplace: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=marketplace_zone(policies, marketplace))


def in_force_on(policies: PolicySet, day: dt.date, marketplace: str) -> list[ResolvedVersion]:
    """At most one version per family: the one whose interval holds the local date."""
    found = []
    for family in policies.families.values():
        for version in family.versions:
            if version.applies_to(marketplace) and version.contains(day):
                found.append(version)
                break
    return found


def in_force(policies: PolicySet, instant: dt.datetime, marketplace: str) -> list[ResolvedVersion]:
    return in_force_on(policies, local_date(policies, instant, marketplace), marketplace)


def marketplaces_of(policies: PolicySet, version: ResolvedVersion) -> list[str]:
    if ALL_MARKETPLACES in version.version.marketplaces:
        return sorted(policies.marketplaces)
    return list(version.version.marketplaces)


def timeline_rows(policies: PolicySet) -> list[dict]:
    rows = []
    for family in policies.families.values():
        for v in family.versions:
            rows.append({
                "policy": family.id,
                "version": v.id,
                "title": v.version.title,
                "effective_from": v.effective_from.isoformat(),
                "effective_to": v.effective_to.isoformat() if v.effective_to else None,
                "marketplaces": v.version.marketplaces,
                "confidence": v.version.confidence,
                "sources": v.version.sources,
                "rules_enabled": len(v.enabled_rules),
                "content_hash": v.content_hash,
            })
    return rows
