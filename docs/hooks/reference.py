"""mkdocs hook: the policy reference, generated at build time from the loaded policy models.

Nothing here re-implements a rule: every page is a view over
``engine.load_policies()`` (families → dated versions → resolved rules), so the
site cannot drift from what the engine enforces. Pages made (for every family
and every version, however many there are)::

    reference/index.md                         overview of families and versions
    reference/timeline.md                      SVG diagram of every version over time
    reference/sources.md                       every source: title, publisher, date, link
    reference/<family>/index.md                the family, its versions and alternatives
    reference/<family>/categories.md           category attributes per version
    reference/<family>/<version>.md            every rule of the version
    reference/<family>/<version>-changes.md    what changed against the previous version

The pages exist only in the build (``File.generated``); none is committed.
The policies directory is ``extra.msgpolicy_policies`` in mkdocs.yml (relative
to it), else the one shipped with the package.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import yaml
from mkdocs.structure.files import File

from engine.conditions import ConditionSpec, Const, describe
from engine.policyfile import ALL_MARKETPLACES, Family, PolicySet, ResolvedRule, ResolvedVersion, load_policies

REF = "reference"
SOURCES_PAGE = f"{REF}/sources.md"
_PAGES: dict[str, str] = {}


# ---- mkdocs events ----------------------------------------------------------------


def on_config(config, **kwargs):
    policies = _load(config)
    _PAGES.clear()
    _PAGES.update(build_pages(policies))
    nav = config.get("nav")
    if nav is not None:
        section = {"Policy reference": reference_nav(policies)}
        for i, item in enumerate(nav):
            if isinstance(item, dict) and "Policy reference" in item:
                nav[i] = section
                break
        else:
            nav.append(section)
    return config


def on_files(files, config, **kwargs):
    for path, content in _PAGES.items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    return files


def _load(config) -> PolicySet:
    extra = config.get("extra") or {}
    where = extra.get("msgpolicy_policies")
    if where:
        root = Path(config["config_file_path"]).parent / where
        return load_policies(root)
    return load_policies()


# ---- page set ----------------------------------------------------------------------


def version_path(v: ResolvedVersion) -> str:
    return f"{REF}/{v.family}/{v.id}.md"


def changes_path(v: ResolvedVersion) -> str:
    return f"{REF}/{v.family}/{v.id}-changes.md"


def reference_nav(policies: PolicySet) -> list:
    nav: list = [{"Overview": f"{REF}/index.md"}, {"Timeline": f"{REF}/timeline.md"},
                 {"Sources": SOURCES_PAGE}]
    for family in policies.families.values():
        items: list = [{"Family": f"{REF}/{family.id}/index.md"},
                       {"Categories": f"{REF}/{family.id}/categories.md"}]
        for v in family.versions:
            items.append({f"{v.effective_from} {v.id}": [
                {"Rules": version_path(v)}, {"What changed": changes_path(v)}]})
        nav.append({family.id: items})
    return nav


def build_pages(policies: PolicySet) -> dict[str, str]:
    pages = {f"{REF}/index.md": overview_page(policies), f"{REF}/timeline.md": timeline_page(policies),
             SOURCES_PAGE: sources_page(policies)}
    for family in policies.families.values():
        pages[f"{REF}/{family.id}/index.md"] = family_page(policies, family)
        pages[f"{REF}/{family.id}/categories.md"] = categories_page(family)
        previous = None
        for v in family.versions:
            pages[version_path(v)] = version_page(policies, family, v)
            pages[changes_path(v)] = changes_page(policies, family, v, previous)
            previous = v
    return pages


# ---- helpers -----------------------------------------------------------------------


def _conf(here: str, letter: str) -> str:
    """A confidence letter linked to its definition."""
    return f"[{letter}]({_rel(here, 'concepts.md')}#confidence-h-m-l)"


def _rel(from_page: str, to_page: str) -> str:
    """A relative link between two docs paths (mkdocs resolves .md links)."""
    a = Path(from_page).parent
    b = Path(to_page)
    parts_a, parts_b = a.parts, b.parts
    common = 0
    while common < min(len(parts_a), len(parts_b)) and parts_a[common] == parts_b[common]:
        common += 1
    return "/".join([".."] * (len(parts_a) - common) + list(parts_b[common:])) or b.name


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _interval(v: ResolvedVersion) -> str:
    return f"[{v.effective_from}, {v.effective_to or '…'})"


def _markets(v: ResolvedVersion) -> str:
    return "all marketplaces" if ALL_MARKETPLACES in v.version.marketplaces else ", ".join(v.version.marketplaces)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _source_anchor(key: str) -> str:
    return "source-" + "".join(c if c.isalnum() else "-" for c in key.lower())


def _source_hint(src) -> str:
    return " — ".join(p for p in (src.title, src.publisher, src.date or "date unknown") if p)


def source_link(policies: PolicySet, key: str, here: str) -> str:
    """The key linked to its article (its URL, or its entry on the sources page when it has none)."""
    src = policies.sources.get(key)
    if src is None:
        return f"`{key}`"
    href = src.url or f"{_rel(here, SOURCES_PAGE)}#{_source_anchor(key)}"
    return f'<a href="{html.escape(href)}" title="{html.escape(_source_hint(src))}">{html.escape(key)}</a>'


def sources_links(policies: PolicySet, keys: Iterable[str], here: str) -> str:
    return ", ".join(source_link(policies, k, here) for k in keys) or "—"


def sources_page(policies: PolicySet) -> str:
    from engine.sources import source_rows

    out = ["# Sources", "",
           "Every source the policy files cite, as `msgpolicy sources` prints it. A date is the "
           "article's own (or its address's dated path); *date unknown* when it gives none. "
           "A source with no public copy is kept as a file named by its key.", ""]
    for row in source_rows(policies):
        title = row["title"].removeprefix(f"{row['key']}: ")
        out += [f"## {row['key']} {{ #{_source_anchor(row['key'])} }}", "",
                f"- **Title:** {_cell(title)}",
                f"- **Publisher:** {_cell(row['publisher'] or 'unknown')}",
                f"- **Date:** {row['date'] or 'date unknown'}",
                f"- **Link:** <{row['url']}>" if row["url"] else f"- **File:** `{row['file']}` (no public copy located)"]
        if row["note"]:
            out.append(f"- **Note:** {_cell(row['note'])}")
        cited = "; ".join(where + (f" ({', '.join(rules)})" if rules else "") for where, rules in row["cited_by"].items())
        out += [f"- **Cited by:** {_cell(cited) or 'nothing'}", ""]
    return "\n".join(out)


def _anchor(rule_id: str) -> str:
    return "rule-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in rule_id.lower())


def specs_reached(version: ResolvedVersion, rule: ResolvedRule) -> Iterator[tuple[ConditionSpec, Optional[str]]]:
    """Every condition node of a rule, following predicates (each once); with the predicate a node opens."""
    seen: set[str] = set()

    def walk(spec: Optional[ConditionSpec]):
        if spec is None:
            return
        opened = spec.ref if spec.ref is not None and spec.ref not in seen else None
        yield spec, opened
        for sub in (spec.all_ or []) + (spec.any_ or []):
            yield from walk(sub)
        yield from walk(spec.not_)
        if opened is not None:
            seen.add(opened)
            yield from walk(version.version.predicates.get(opened))

    yield from walk(rule.rule.when)


def params_used(version: ResolvedVersion, rule: ResolvedRule) -> dict[str, Any]:
    """The parameters a rule's condition reads (through predicates), with their values."""
    names: list[str] = []
    for spec, _ in specs_reached(version, rule):
        if spec.param is not None and spec.param not in names:
            names.append(spec.param)
        if spec.fact is not None:
            _, value = spec.operator()
            if getattr(value, "param", None) and value.param not in names:
                names.append(value.param)
    out = {}
    for name in names:
        if name in rule.rule.parameters:
            out[name] = rule.rule.parameters[name]
        elif name in version.version.parameters:
            out[name] = version.version.parameters[name]
    for name, value in rule.rule.parameters.items():
        out.setdefault(name, value)
    return out


def _spec_dump(spec: ConditionSpec) -> Any:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def as_written(version: ResolvedVersion, rule: ResolvedRule) -> str:
    """The rule's condition as in the policy file, with the predicates it reaches."""
    preds = [opened for _, opened in specs_reached(version, rule) if opened is not None]
    doc: dict[str, Any] = {"when": _spec_dump(rule.rule.when)}
    if preds:
        doc["predicates"] = {name: _spec_dump(version.version.predicates[name])
                             for name in preds if name in version.version.predicates}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def _rule_signature(v: ResolvedVersion, r: ResolvedRule) -> dict:
    return {
        "title": r.rule.title,
        "condition": describe(r.condition),
        "outcome": r.rule.outcome.value,
        "reason": r.rule.reason,
        "confidence": r.rule.confidence,
        "sources": list(r.rule.sources),
        "on_unknown": r.rule.on_unknown,
        "parameters": params_used(v, r),
    }


# ---- overview ----------------------------------------------------------------------


def overview_page(policies: PolicySet) -> str:
    here = f"{REF}/index.md"
    total = sum(len(v.enabled_rules) for v in policies.all_versions())
    out = [
        "# Policy reference",
        "",
        "Generated at build time from the policy files by `docs/hooks/reference.py`; "
        "every page is a view of the models the engine loads, so it shows exactly what "
        "`msgpolicy check` enforces.",
        "",
        f"{len(policies.families)} famil{'y' if len(policies.families) == 1 else 'ies'}, "
        f"{len(policies.all_versions())} versions, {total} enabled rules in all versions together. "
        f"See the [timeline]({_rel(here, f'{REF}/timeline.md')}).",
        "",
    ]
    for family in policies.families.values():
        fam_index = f"{REF}/{family.id}/index.md"
        out += [f"## {family.id}: {family.file.title}", "", family.file.summary, "",
                f"[Family page]({_rel(here, fam_index)}) · "
                f"[Category table]({_rel(here, f'{REF}/{family.id}/categories.md')})", "",
                "| version | interval [from, to) | marketplaces | confidence | enabled rules | |",
                "|---|---|---|---|---|---|"]
        for v in family.versions:
            out.append(
                f"| [{v.id}]({_rel(here, version_path(v))}) | {_interval(v)} | {_markets(v)} | "
                f"{_conf(here, v.version.confidence)} | {len(v.enabled_rules)} | [what changed]({_rel(here, changes_path(v))}) |")
        out.append("")
    return "\n".join(out)


def family_page(policies: PolicySet, family: Family) -> str:
    here = f"{REF}/{family.id}/index.md"
    f = family.file
    out = [f"# {family.id}: {f.title}", "", f.summary, "", f.description, "",
           f"**Sources:** {sources_links(policies, f.sources, here)}", "",
           f"**Category attributes:** {', '.join(f'`{a}`' for a in f.category_attributes)} "
           f"([table per version]({_rel(here, f'{REF}/{family.id}/categories.md')}))", "",
           "## Versions", "",
           "| version | title | interval [from, to) | marketplaces | inherits | confidence |",
           "|---|---|---|---|---|---|"]
    for v in family.versions:
        out.append(f"| [{v.id}]({_rel(here, version_path(v))}) | {_cell(v.version.title)} | {_interval(v)} | "
                   f"{_markets(v)} | {v.version.inherits or '—'} | {_conf(here, v.version.confidence)} |")
    out += ["", "## Recorded alternatives", ""]
    if not f.alternatives:
        out.append("None recorded.")
    for alt in f.alternatives:
        out += [f"### `{alt.name}`", "", f"**{_cell(alt.title)}** (confidence {_conf(here, alt.confidence)})", "",
                alt.description, "",
                f"Select it with `--alt {alt.name}`. Sources: {sources_links(policies, alt.sources, here)}", "",
                "Effect on the versions:", ""]
        out += [f"- {line}" for line in alternative_effects(policies, family, alt.name)] or ["- none"]
        out.append("")
    return "\n".join(out)


def alternative_effects(policies: PolicySet, family: Family, name: str) -> list[str]:
    alt_family = policies.with_changes([name]).families[family.id]
    base = {v.id: v for v in family.versions}
    alt = {v.id: v for v in alt_family.versions}
    lines = []
    for vid, v in base.items():
        if vid not in alt:
            lines.append(f"version `{vid}` {_interval(v)} is removed")
    for vid, v in alt.items():
        b = base.get(vid)
        if b is None:
            lines.append(f"version `{vid}` is added: {_interval(v)}, {_markets(v)}")
            continue
        if (b.effective_from, b.effective_to) != (v.effective_from, v.effective_to):
            lines.append(f"version `{vid}` runs {_interval(v)} instead of {_interval(b)}")
        if b.content_hash != v.content_hash:
            params = {k: (b.version.parameters.get(k), val) for k, val in v.version.parameters.items()
                      if b.version.parameters.get(k) != val}
            for k, (old, new) in params.items():
                lines.append(f"version `{vid}`: parameter `{k}` is {_value(new)} (default {_value(old)})")
            b_rules = {r.id for r in b.enabled_rules}
            a_rules = {r.id for r in v.enabled_rules}
            for rid in sorted(a_rules - b_rules):
                lines.append(f"version `{vid}`: rule `{rid}` is enabled")
            for rid in sorted(b_rules - a_rules):
                lines.append(f"version `{vid}`: rule `{rid}` is switched off")
    return lines


# ---- timeline ----------------------------------------------------------------------

BAR_COLOURS = ["#3f51b5", "#00897b", "#8e24aa", "#ef6c00", "#546e7a", "#c62828", "#2e7d32", "#6d4c41"]


def _is_notes_only(v: ResolvedVersion) -> bool:
    """A version none of whose rules can hold a message back (e.g. a suspension)."""
    return all(r.rule.outcome.value == "allowed" for r in v.enabled_rules)


def timeline_rows(policies: PolicySet) -> list[dict]:
    """Rows of the diagram: each family's default versions, then one row per alternative that changes it."""
    rows = []
    for family in policies.families.values():
        rows.append({"label": family.id, "sub": "default reading", "family": family.id,
                     "versions": family.versions, "changed": None})
        base = {v.id: v for v in family.versions}
        for alt in family.file.alternatives:
            alt_versions = policies.with_changes([alt.name]).families[family.id].versions
            changed = {v.id for v in alt_versions
                       if v.id not in base or base[v.id].content_hash != v.content_hash}
            removed = set(base) - {v.id for v in alt_versions}
            if changed or removed:
                rows.append({"label": f"--alt {alt.name}", "sub": alt.title, "family": family.id,
                             "versions": alt_versions, "changed": changed})
    return rows


def timeline_svg(policies: PolicySet) -> str:
    rows = timeline_rows(policies)
    dates = sorted({d for row in rows for v in row["versions"]
                    for d in (v.effective_from, v.effective_to) if d is not None})
    if not dates:
        return "<p>No versions.</p>"
    # The axis is not to scale: every gap between two dates gets a width that grows with the
    # logarithm of its length, so a four-day suspension stays visible beside seven-year versions.
    label_w, left_pad, open_w, height_row = 230, 10, 115, 44
    x = {dates[0]: label_w + left_pad}
    for a, b in zip(dates, dates[1:]):
        x[b] = x[a] + 34 + 26 * math.log1p((b - a).days)
    end_x = x[dates[-1]] + open_w
    width = int(end_x + 30)
    top = 20
    height = int(top + height_row * len(rows) + 150)
    colours = {f: BAR_COLOURS[i % len(BAR_COLOURS)] for i, f in enumerate(policies.families)}
    s = [f'<svg class="msgpolicy-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
         f'width="100%" role="img" aria-label="Timeline of every policy version" '
         f'style="max-width:{width}px;font-family:sans-serif;font-size:12px">',
         '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
         'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff3e0"/>'
         '<line x1="0" y1="0" x2="0" y2="6" stroke="#ef6c00" stroke-width="3"/></pattern></defs>']
    axis_y = top + height_row * len(rows) + 8
    # gridlines and date labels
    for d in dates:
        s.append(f'<line x1="{x[d]:.1f}" y1="{top - 6}" x2="{x[d]:.1f}" y2="{axis_y}" stroke="#bbb" '
                 f'stroke-dasharray="3,3"/>')
        s.append(f'<text x="{x[d]:.1f}" y="{axis_y + 8}" transform="rotate(60 {x[d]:.1f} {axis_y + 8})" '
                 f'fill="#333">{d.isoformat()}</text>')
    for i, row in enumerate(rows):
        y = top + i * height_row
        is_alt = row["changed"] is not None
        if i and not is_alt:
            s.append(f'<line x1="0" y1="{y - 4}" x2="{width}" y2="{y - 4}" stroke="#888"/>')
        s.append(f'<text x="4" y="{y + 15}" font-weight="{"normal" if is_alt else "bold"}" fill="#222">'
                 f'{html.escape(row["label"])}</text>')
        s.append(f'<text x="4" y="{y + 30}" fill="#666" font-size="10">{html.escape(_trim(row["sub"], 42))}</text>')
        for v in row["versions"]:
            x0 = x[v.effective_from]
            x1 = x[v.effective_to] if v.effective_to else end_x
            faded = is_alt and v.id not in row["changed"]
            fill = "url(#hatch)" if _is_notes_only(v) else colours[row["family"]]
            opacity = "0.25" if faded else "1"
            dash = ' stroke-dasharray="5,3"' if is_alt and not faded else ""
            title = (f"{v.family}/{v.id}: {v.version.title} {_interval(v)}, {_markets(v)}, "
                     f"{len(v.enabled_rules)} enabled rules")
            s.append(f'<g opacity="{opacity}"><title>{html.escape(title)}</title>'
                     f'<rect x="{x0 + 1:.1f}" y="{y + 2}" width="{max(x1 - x0 - 2, 2):.1f}" height="32" rx="3" '
                     f'fill="{fill}" stroke="#222" stroke-width="{1.5 if dash else 0.5}"{dash}/>')
            text_fill = "#4e2600" if fill.startswith("url") else "#fff"
            s.append(f'<text x="{x0 + 5:.1f}" y="{y + 15}" fill="{text_fill}" font-size="11">'
                     f'{html.escape(_fit(v.id, x1 - x0))}</text>')
            s.append(f'<text x="{x0 + 5:.1f}" y="{y + 29}" fill="{text_fill}" font-size="10">'
                     f'{html.escape(_fit(_short_markets(v), x1 - x0))}</text></g>')
        if not row["versions"]:
            continue
    # legend
    ly = height - 34
    s.append(f'<rect x="4" y="{ly}" width="22" height="14" fill="url(#hatch)" stroke="#222" stroke-width="0.5"/>'
             f'<text x="32" y="{ly + 11}">no rule can hold a message back (e.g. suspension)</text>')
    s.append(f'<rect x="360" y="{ly}" width="22" height="14" fill="#999" stroke="#222" stroke-width="1.5" '
             f'stroke-dasharray="5,3"/><text x="388" y="{ly + 11}">version changed by the alternative</text>')
    s.append(f'<text x="640" y="{ly + 11}" fill="#666">axis not to scale: gaps grow with the log of their length</text>')
    s.append("</svg>")
    return "".join(s)


def _trim(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _fit(text: str, width: float) -> str:
    chars = int((width - 8) / 6.2)
    if chars >= len(text):
        return text
    return text[: max(chars - 1, 0)] + "…" if chars > 1 else ""


def _short_markets(v: ResolvedVersion) -> str:
    return "all" if ALL_MARKETPLACES in v.version.marketplaces else " ".join(v.version.marketplaces)


def timeline_page(policies: PolicySet) -> str:
    here = f"{REF}/timeline.md"
    out = ["---", "hide:", "  - toc", "  - navigation", "---", "", "# Timeline", "",
           "Every version of every policy family over time. Dates are local midnight in the "
           "message's marketplace; each version is in force on the half-open interval [from, to). "
           "Hatched bars are versions in which no rule can hold a message back (the 2017 suspension). "
           "Rows marked `--alt NAME` show a recorded alternative reading: its changed versions are "
           "outlined with dashes, its unchanged ones faded. Hover a bar for details.", "",
           '<div class="msgpolicy-timeline-wrap" markdown="0">', timeline_svg(policies), "</div>", "",
           "## Versions", "",
           "| family | version | from | to (exclusive) | marketplaces | enabled rules |", "|---|---|---|---|---|---|"]
    for family in policies.families.values():
        for v in family.versions:
            out.append(f"| {family.id} | [{v.id}]({_rel(here, version_path(v))}) | {v.effective_from} | "
                       f"{v.effective_to or 'open'} | {_markets(v)} | {len(v.enabled_rules)} |")
    out += ["", "## Disputed dates and other alternatives", "",
            "| family | alternative | confidence | effect |", "|---|---|---|---|"]
    for family in policies.families.values():
        for alt in family.file.alternatives:
            effects = "; ".join(alternative_effects(policies, family, alt.name)) or "—"
            out.append(f"| {family.id} | `--alt {alt.name}`: {_cell(alt.title)} | {_conf(here, alt.confidence)} | {_cell(effects)} |")
    out.append("")
    return "\n".join(out)


# ---- version page ------------------------------------------------------------------


def version_page(policies: PolicySet, family: Family, v: ResolvedVersion) -> str:
    here = version_path(v)
    ver = v.version
    out = [f"# {family.id} / {v.id}: {ver.title}", "",
           ver.summary, "",
           "| property | value |", "|---|---|",
           f"| in force | {_interval(v)}, local midnight in each marketplace |",
           f"| marketplaces | {_markets(v)} |",
           f"| inherits | {ver.inherits or '—'} |",
           f"| confidence | {_conf(here, ver.confidence)} |",
           f"| sources | {sources_links(policies, ver.sources, here)} |",
           f"| file | `{Path(v.file).name}` |",
           f"| content hash | `{v.content_hash[:16]}` |",
           "",
           f"[What changed from the previous version]({_rel(here, changes_path(v))}) · "
           f"[Category table]({_rel(here, f'{REF}/{family.id}/categories.md')}) · "
           f"[Timeline]({_rel(here, f'{REF}/timeline.md')})", "",
           f"## Rules in force ({len(v.enabled_rules)})", ""]
    if not v.enabled_rules:
        out.append("No rule is enabled in this version.")
    else:
        out += ["| rule | title | outcome | confidence |", "|---|---|---|---|"]
        for r in v.enabled_rules:
            out.append(f"| [{r.id}](#{_anchor(r.id)}) | {_cell(r.rule.title)} | `{r.rule.outcome.value}` | "
                       f"{_conf(here, r.rule.confidence)} |")
        out.append("")
    for r in v.enabled_rules:
        params = params_used(v, r)
        out += [f'### {r.id}: {_cell(r.rule.title)} {{ #{_anchor(r.id)} }}', "",
                f"- **Outcome:** `{r.rule.outcome.value}`",
                f"- **When:** {describe(r.condition)}",
                f"- **Reason:** {r.rule.reason}",
                f"- **Parameters:** " + (", ".join(f"`{k}` = `{_value(val)}`" for k, val in params.items()) or "none"),
                f"- **Confidence:** {_conf(here, r.rule.confidence)}",
                f"- **Sources:** {sources_links(policies, r.rule.sources, here)}",
                f"- **A missing fact gives:** {'an `indeterminate` finding' if r.rule.on_unknown == 'indeterminate' else 'an `allowed` note'}"]
        if r.rule.notes:
            out.append(f"- **Notes:** {r.rule.notes}")
        out += ["", '??? abstract "As written in the policy file"', "", "    ```yaml",
                *("    " + line for line in as_written(v, r).splitlines()), "    ```"]
        if isinstance(r.condition, Const) and not r.condition.value:
            out += ["", '!!! note "Cannot fire in this version"',
                    "    With this version's parameters the condition reduces to *never*: "
                    "the rule is enabled but decides nothing here."]
        out.append("")
    disabled = [r for r in v.rules if not r.rule.enabled]
    if disabled:
        out += ["## Switched off in this version", "",
                "Defined (usually inherited) but not enabled, so they decide nothing here: "
                + ", ".join(f"`{r.id}` ({_cell(r.rule.title)})" for r in disabled), ""]
    if ver.parameters:
        out += ["## Parameters", "", "| parameter | value |", "|---|---|"]
        out += [f"| `{k}` | `{_cell(_value(val))}` |" for k, val in ver.parameters.items()]
        out.append("")
    if ver.detectors:
        out += ["## Detectors", "", "| fact | kind | description |", "|---|---|---|"]
        for name, spec in ver.detectors.items():
            out.append(f"| `{name}` | {spec.kind} | {_cell(spec.description) or '—'} |")
        out.append("")
    cited: list[str] = []
    for key in list(ver.sources) + [k for r in v.enabled_rules for k in r.rule.sources]:
        if key not in cited:
            cited.append(key)
    out += ["## Sources cited", "", "| key | source | publisher | date |", "|---|---|---|---|"]
    for key in cited:
        src = policies.sources.get(key)
        if src is None:
            out.append(f"| `{key}` | — | — | — |")
            continue
        title = f"[{_cell(src.title.removeprefix(f'{key}: '))}]"
        title += f"({src.url})" if src.url else f"({_rel(here, SOURCES_PAGE)}#{_source_anchor(key)})"
        if src.note:
            title += f" <small>{_cell(src.note)}</small>"
        out.append(f"| `{key}` | {title} | {_cell(src.publisher) or 'unknown'} | {src.date or 'date unknown'} |")
    out.append("")
    return "\n".join(out)


# ---- what changed ------------------------------------------------------------------


def changes_page(policies: PolicySet, family: Family, v: ResolvedVersion, prev: Optional[ResolvedVersion]) -> str:
    here = changes_path(v)
    out = [f"# What changed in {family.id} / {v.id}", ""]
    if prev is None:
        out += [f"`{v.id}` is the first version of {family.id}, in force from {v.effective_from}. "
                f"Every rule is new: see [the version page]({_rel(here, version_path(v))}).", "",
                "## Rules added", ""]
        out += [f"- `{r.id}` {r.rule.title} → `{r.rule.outcome.value}`" for r in v.enabled_rules] or ["- none"]
        out.append("")
        return "\n".join(out)
    out += [f"Compared with the previous version [`{prev.id}`]({_rel(here, version_path(prev))}) "
            f"{_interval(prev)}; this one is [`{v.id}`]({_rel(here, version_path(v))}) {_interval(v)}.", ""]
    meta = []
    for label, a, b in (("marketplaces", _markets(prev), _markets(v)), ("confidence", prev.version.confidence, v.version.confidence),
                        ("sources", ", ".join(prev.version.sources), ", ".join(v.version.sources))):
        if a != b:
            meta.append(f"| {label} | {_cell(a)} | {_cell(b)} |")
    if meta:
        out += ["## Version", "", f"| | {prev.id} | {v.id} |", "|---|---|---|", *meta, ""]

    old = {r.id: r for r in prev.enabled_rules}
    new = {r.id: r for r in v.enabled_rules}
    added = [rid for rid in new if rid not in old]
    removed = [rid for rid in old if rid not in new]
    changed = []
    for rid in new:
        if rid in old:
            a, b = _rule_signature(prev, old[rid]), _rule_signature(v, new[rid])
            diffs = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
            if diffs:
                changed.append((rid, diffs))
    out += ["## Rules added", ""]
    out += [f"- [`{rid}`]({_rel(here, version_path(v))}#{_anchor(rid)}) {new[rid].rule.title} → "
            f"`{new[rid].rule.outcome.value}`" for rid in added] or ["None."]
    out += ["", "## Rules removed or switched off", ""]
    out += [f"- `{rid}` {old[rid].rule.title} (was `{old[rid].rule.outcome.value}`)" for rid in removed] or ["None."]
    out += ["", "## Rules changed", ""]
    if not changed:
        out.append("None.")
    for rid, diffs in changed:
        out += [f"### [`{rid}`]({_rel(here, version_path(v))}#{_anchor(rid)}) {_cell(new[rid].rule.title)}", "",
                f"| | {prev.id} | {v.id} |", "|---|---|---|"]
        for k, a, b in diffs:
            out.append(f"| {k} | {_cell(_show_sig(a))} | {_cell(_show_sig(b))} |")
        out.append("")
    out += ["", "## Parameters changed", ""]
    pa, pb = prev.version.parameters, v.version.parameters
    prows = [f"| `{k}` | {_cell(_value(pa[k])) if k in pa else '—'} | {_cell(_value(pb[k])) if k in pb else '—'} |"
             for k in list(pa) + [k for k in pb if k not in pa] if pa.get(k, _MISSING) != pb.get(k, _MISSING)]
    out += ([f"| parameter | {prev.id} | {v.id} |", "|---|---|---|", *prows] if prows else ["None."])
    out += ["", "## Categories reclassified", ""]
    crows = []
    for cat, attrs in v.version.categories.items():
        before = prev.version.categories.get(cat, {})
        for attr in family.file.category_attributes:
            if before.get(attr) != attrs.get(attr):
                crows.append(f"| `{cat.value}` | {attr} | {_value(before.get(attr))} | {_value(attrs.get(attr))} |")
    out += ([f"| category | attribute | {prev.id} | {v.id} |", "|---|---|---|---|", *crows] if crows else ["None."])
    out += ["", "## Detectors changed", ""]
    da, db = prev.version.detectors, v.version.detectors
    drows = [f"- `{k}`: " + ("added" if k not in da else "removed" if k not in db else "changed")
             for k in list(da) + [k for k in db if k not in da] if da.get(k) != db.get(k)]
    out += drows or ["None."]
    out.append("")
    return "\n".join(out)


_MISSING = object()


def _show_sig(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


# ---- categories ----------------------------------------------------------------------


def categories_page(family: Family) -> str:
    out = [f"# Categories: {family.id}", "",
           "How each version classifies every message category. "
           "A change from the previous version is marked **bold**.", ""]
    versions = family.versions
    cats = list(versions[0].version.categories) if versions else []
    attrs = family.file.category_attributes
    out += ["## Summary", "",
            "The attributes each version gives each category (for yes/no attributes, the ones that are yes).", "",
            "| category | " + " | ".join(f"{v.id}<br><small>{v.effective_from}</small>" for v in versions) + " |",
            "|---|" + "---|" * len(versions)]
    for cat in cats:
        cells, prev = [], _MISSING
        for v in versions:
            values = v.version.categories.get(cat, {})
            shown = ", ".join(a if values.get(a) is True else f"{a}={_value(values.get(a))}"
                              for a in attrs if values.get(a) is not False) or "—"
            cells.append(f"**{_cell(shown)}**" if prev is not _MISSING and values != prev else _cell(shown))
            prev = values
        out.append(f"| `{cat.value}` | " + " | ".join(cells) + " |")
    out.append("")
    for attr in attrs:
        out += [f"## `{attr}`", "",
                "| category | " + " | ".join(f"{v.id}<br><small>{v.effective_from}</small>" for v in versions) + " |",
                "|---|" + "---|" * len(versions)]
        for cat in cats:
            cells, prev = [], _MISSING
            for v in versions:
                value = v.version.categories.get(cat, {}).get(attr)
                shown = _attr_value(value)
                cells.append(f"**{shown}**" if prev is not _MISSING and value != prev else shown)
                prev = value
            out.append(f"| `{cat.value}` | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _attr_value(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "—"
    return _cell(_value(value))


def on_serve(server, config, builder, **kwargs):
    """`mkdocs serve` rebuilds the reference when a policy file changes."""
    extra = config.get("extra") or {}
    where = extra.get("msgpolicy_policies")
    if where:
        server.watch(str(Path(config["config_file_path"]).parent / where))
    return server
