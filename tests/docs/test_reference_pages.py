"""The reference generator (docs/hooks/reference.py) works for any number of families and versions.

Runs the page builder on the shipped policies plus a synthetic second family (two category
attributes, a reclassification, a parameter change, an added and a switched-off rule, an
alternative start date), without mkdocs.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

from engine import load_policies
from engine.model import Category

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("msgpolicy_docs_reference", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def two_families(tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    shutil.copytree(ROOT / "policies", root, dirs_exist_ok=True)
    fam = root / "2099-synthetic"
    cats = {c.value: {"critical": False, "permitted": c is not Category.marketing} for c in Category}
    _write(fam / "family.yaml", {
        "id": "2099-synthetic", "title": "Synthetic family", "summary": "For the generator test.",
        "category_attributes": ["critical", "permitted"],
        "alternatives": [{"name": "synthetic-late", "title": "Starts a week later", "sources": ["P1"],
                          "confidence": "L", "changes": {"versions": {"first": {"effective_from": "2099-01-08"}}}}],
    })
    _write(fam / "a.yaml", {
        "id": "first", "title": "First", "effective_from": "2099-01-01", "marketplaces": ["*"],
        "sources": ["P1"], "confidence": "M", "parameters": {"strict": False}, "categories": cats,
        "predicates": {"not_permitted": {"fact": "category", "in": {"categories_where": {"permitted": False}}}},
        "rules": [
            {"id": "SY-1", "title": "Not permitted", "when": {"ref": "not_permitted"}, "outcome": "violation",
             "reason": "Not a permitted purpose.", "sources": ["P1"], "confidence": "M"},
            {"id": "SY-2", "title": "Strict mode", "when": {"all": [{"param": "strict"}, {"fact": "channel", "eq": "api"}]},
             "outcome": "violation", "reason": "API messages are refused in strict mode.", "sources": ["P2"],
             "confidence": "L"},
        ],
    })
    _write(fam / "b.yaml", {
        "id": "second", "title": "Second", "inherits": "first", "effective_from": "2099-06-01",
        "marketplaces": ["US", "UK"], "sources": ["P2"], "confidence": "H", "parameters": {"strict": True},
        "categories": {"cross_sell": {"permitted": False}, "invoice": {"critical": True}},
        "rules": [{"id": "SY-1", "enabled": False},
                  {"id": "SY-3", "title": "Thanks only", "when": {"fact": "category", "eq": "thank_you_only"},
                   "outcome": "allowed", "reason": "A note.", "sources": ["P1"], "confidence": "H"}],
    })
    return load_policies(root)


def test_pages_for_every_family_and_version(reference, two_families):
    pages = reference.build_pages(two_families)
    assert len(two_families.families) == len(load_policies(ROOT / "policies").families) + 1
    for family in two_families.families.values():
        assert f"reference/{family.id}/index.md" in pages
        assert f"reference/{family.id}/categories.md" in pages
        for v in family.versions:
            page = pages[reference.version_path(v)]
            for r in v.enabled_rules:
                assert f"### {r.id}: " in page, (v.label, r.id)
            assert reference.changes_path(v) in pages
    nav = reference.reference_nav(two_families)
    assert [list(item)[0] for item in nav][3:] == list(two_families.families)


def test_what_changed_and_categories(reference, two_families):
    pages = reference.build_pages(two_families)
    changes = pages["reference/2099-synthetic/second-changes.md"]
    added = changes.split("## Rules added")[1].split("##")[0]
    removed = changes.split("## Rules removed or switched off")[1].split("##")[0]
    assert "SY-3" in added and "SY-1" in removed
    assert "| `strict` | false | true |" in changes
    assert "| `cross_sell` | permitted | true | false |" in changes
    assert "| `invoice` | critical | false | true |" in changes
    assert "| marketplaces | all marketplaces | US, UK |" in changes
    first = pages["reference/2099-synthetic/first-changes.md"]
    assert "first version" in first and "SY-1" in first and "SY-2" in first
    categories = pages["reference/2099-synthetic/categories.md"]
    assert "## `critical`" in categories and "## `permitted`" in categories
    assert "| `cross_sell` | yes | **no** |" in categories


def test_timeline_draws_every_version_and_alternative(reference, two_families):
    svg = reference.timeline_svg(two_families)
    for v in two_families.all_versions():
        assert v.effective_from.isoformat() in svg
        assert f"{v.family}/{v.id}:" in svg  # the hover title of its bar
    assert "2099-01-08" in svg  # the alternative start date is on the axis
    assert "--alt synthetic-late" in svg and "--alt no-suspension-2017-03-31" in svg
    assert 'fill="url(#hatch)"' in svg  # the suspension is drawn differently
    page = reference.timeline_page(two_families)
    assert "`--alt synthetic-late`" in page and "runs [2099-01-08, 2099-06-01) instead of [2099-01-01, 2099-06-01)" in page


def test_rule_parameters_and_sources(reference, two_families):
    v = two_families.version("2099-synthetic", "second")
    page = reference.build_pages(two_families)[reference.version_path(v)]
    assert "`strict` = `true`" in page
    assert 'href="https://www.feedbackfive.com/blog/buyer-opt-out/"' in page  # P1 as a link


def test_every_source_is_linked_and_listed_with_its_publisher_and_date(reference, two_families):
    pages = reference.build_pages(two_families)
    listing = pages[reference.SOURCES_PAGE]
    for key, src in two_families.sources.items():
        assert f"## {key} {{ #{reference._source_anchor(key)} }}" in listing
        assert (src.date or "date unknown") in listing.split(f"## {key} ")[1].split("\n## ")[0]
    seed = next(k for k, s in two_families.sources.items() if not s.url)
    here = "reference/2017-optout/rollout.md"
    assert f'href="../sources.md#{reference._source_anchor(seed)}"' in reference.source_link(two_families, seed, here)
    v = two_families.version("2017-optout", "rollout")
    page = pages[reference.version_path(v)]
    assert "| key | source | publisher | date |" in page and "date unknown" in page
    assert {"Sources": reference.SOURCES_PAGE} in reference.reference_nav(two_families)
