"""Renderers for what-if results: the log diff, the exhaustive diff and the audit's sensitivity section.

Text output holds no timings or hashes (they go to JSON and to standard
error), so the same comparison always prints the same text.
"""
from __future__ import annotations

import html
import io
from typing import Optional

import orjson

from ..io import SafeCsvWriter
from ..model import Outcome

ORDER = {o.value: i for i, o in enumerate(Outcome)}


def _n(x: int) -> str:
    return f"{x:,}"


# ---- log diff ----------------------------------------------------------------------------


def log_diff_dict(d, include_changes: bool = True) -> dict:
    s = d.summary
    rules = sorted(set(s.appeared) | set(s.disappeared))
    out = {
        "mode": "log",
        "baseline": d.baseline.as_dict(),
        "variant": d.variant.as_dict(),
        "judged": s.judged,
        "changed": s.changed,
        "transitions": [{"from": a, "to": b, "messages": n, "changed": s.changed_by_transition.get((a, b), 0)}
                        for (a, b), n in sorted(s.transitions.items(), key=lambda kv: (ORDER[kv[0][0]], ORDER[kv[0][1]]))],
        "rules": [{"rule": r, "appeared": s.appeared.get(r, 0), "disappeared": s.disappeared.get(r, 0)} for r in rules],
        "level_changed": [{"rule": r, "from": a, "to": b, "messages": n}
                          for (r, a, b), n in sorted(s.level_changed.items())],
        "rejected": len(d.rejects),
        "provenance": d.provenance,
        "seconds": round(d.seconds, 3),
    }
    if include_changes:
        out["changes"] = d.changes
        out["changes_listed"] = len(d.changes)
    return out


def _change_line(c: dict) -> str:
    parts = [f"{c['message_id']}  {c['from']} → {c['to']}"]
    parts += [f"+{r}" for r in c["appeared"]]
    parts += [f"-{r}" for r in c["disappeared"]]
    parts += [f"~{x['rule']} ({x['from']} → {x['to']})" for x in c["level_changed"]]
    return "  ".join(parts)


def render_log_diff(fmt: str, d, include_changes: bool = True) -> str:
    data = log_diff_dict(d, include_changes)
    if fmt == "json":
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = SafeCsvWriter(buf)
        w.writerow(["section", "message_id", "rule", "from", "to", "appeared", "disappeared", "count"])
        for t in data["transitions"]:
            w.writerow(["transition", "", "", t["from"], t["to"], "", "", t["messages"]])
            w.writerow(["transition_changed", "", "", t["from"], t["to"], "", "", t["changed"]])
        for r in data["rules"]:
            w.writerow(["rule", "", r["rule"], "", "", r["appeared"], r["disappeared"], ""])
        for x in data["level_changed"]:
            w.writerow(["level_changed", "", x["rule"], x["from"], x["to"], "", "", x["messages"]])
        for c in data.get("changes", []):
            w.writerow(["change", c["message_id"], "", c["from"], c["to"], " ".join(c["appeared"]),
                        " ".join(c["disappeared"]), ""])
        return buf.getvalue()
    if fmt == "html":
        return _html_page("msgpolicy diff", _log_html(data))
    out = ["msgpolicy diff",
           f"baseline: {data['baseline']['label']}",
           f"variant:  {data['variant']['label']}",
           f"judged {data['judged']} message(s); {data['changed']} changed"
           + (f"; {data['rejected']} record(s) rejected" if data["rejected"] else ""),
           "", "transitions (baseline → variant):      messages   changed"]
    for t in data["transitions"]:
        out.append(f"  {t['from'] + ' → ' + t['to']:<34} {t['messages']:>10} {t['changed']:>9}")
    if data["rules"]:
        out.append("")
        out.append("rules:                                  appeared disappeared")
        for r in data["rules"]:
            out.append(f"  {r['rule']:<38} {r['appeared']:>8} {r['disappeared']:>11}")
    if data["level_changed"]:
        out.append("")
        out.append("finding level changed:")
        for x in data["level_changed"]:
            out.append(f"  {x['rule']} {x['from']} → {x['to']}: {x['messages']}")
    if include_changes and data["changes"]:
        out.append("")
        shown = len(data["changes"])
        more = f" (first {shown})" if shown < data["changed"] else ""
        out.append(f"changed messages{more}:")
        out += ["  " + _change_line(c) for c in data["changes"]]
    return "\n".join(out) + "\n"


# ---- exhaustive diff ------------------------------------------------------------------------


def _region_dict(r) -> dict:
    return {"vectors": r.vectors, "where": r.where, "verified": r.verified,
            "witness": r.witness, "observed": r.observed}


def exhaustive_dict(d, max_regions: Optional[int] = None) -> dict:
    def listed(row):
        return {"context": row.context, **row.label, "vectors": row.vectors, "regions_total": len(row.regions),
                "regions": [_region_dict(r) for r in row.regions[:max_regions]]}
    return {
        "mode": "exhaustive",
        "baseline": d.baseline.as_dict(),
        "variant": d.variant.as_dict(),
        "space": d.space,
        "contexts": d.contexts,
        "outcomes": [listed(r) for r in d.outcomes],
        "rules": [listed(r) for r in d.rules],
        "changes": None if d.changes is None else [listed(r) for r in d.changes],
        "notes": d.notes,
        "seconds": round(d.seconds, 3),
    }


def _where_text(where: dict) -> str:
    if not where:
        return "every message"
    return "; ".join(f"{k} = {v}" for k, v in where.items())


# Text reports off a terminal (a file, a pipe) are folded at this width.
TEXT_WIDTH = 100


class _Folder:
    """Text lines, long ones folded at word boundaries by rich within `width`, a continuation
    under the start of its text; facts as two-column grids (name, value) whose values fold."""

    def __init__(self, width: int):
        from rich.console import Console

        self.width = max(40, width)
        self.console = Console(width=self.width, file=io.StringIO(), highlight=False, markup=False,
                               emoji=False, color_system=None)
        self.lines: list[str] = []

    def _render(self, renderable, width: int) -> list[str]:
        with self.console.capture() as captured:
            self.console.print(renderable, markup=False, width=max(20, width))
        return [line.rstrip() for line in captured.get().splitlines()]

    def line(self, text: str, hang: int = 2) -> None:
        from rich.padding import Padding
        from rich.text import Text

        indent = len(text) - len(text.lstrip(" "))
        body = text[indent:]
        if indent + len(body) <= self.width:
            self.lines.append(text)
            return
        folded = self._render(Padding(Text(body, overflow="fold"), (0, 0, 0, hang)), self.width - indent)
        self.lines.append(" " * indent + folded[0].lstrip(" "))
        self.lines.extend(" " * indent + row for row in folded[1:])

    def facts(self, indent: int, pairs) -> None:
        from rich.padding import Padding
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for name, value in pairs:
            grid.add_row(Text(name), Text(value, overflow="fold"))
        self.lines.extend(self._render(Padding(grid, (0, 0, 0, indent)), self.width))


def _witness_text(out: "_Folder", region, indent: int) -> None:
    pad = " " * indent
    if region.witness is None:
        out.line(f"{pad}witness: none could be written (unrealised)")
        return
    state = "reproduces the change" if region.verified else "DOES NOT reproduce the change (unrealised)"
    out.line(f"{pad}witness ({state}; judge the last record, W; --format json gives the records):")
    for i, rec in enumerate(region.witness, start=1):
        name = "W" if i == len(region.witness) else f"history {i}"
        out.line(f"{pad}  {name}:")
        out.facts(indent + 4, [(k, orjson.dumps(v).decode()) for k, v in rec.items()])


def render_exhaustive(fmt: str, d, max_regions: int = 3, witnesses: bool = True, width: int = TEXT_WIDTH) -> str:
    data = exhaustive_dict(d, max_regions)
    if fmt == "json":
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = SafeCsvWriter(buf)
        w.writerow(["kind", "context", "rule", "from", "to", "appeared", "disappeared", "vectors", "regions",
                    "region_vectors", "where", "verified", "witness"])
        for kind, rows in (("outcome", data["outcomes"]), ("rule", data["rules"]), ("change", data["changes"] or [])):
            for row in rows:
                for region in row["regions"]:
                    w.writerow([kind, row["context"], row.get("rule", ""), row["from"], row["to"],
                                " ".join(row.get("appeared", [])), " ".join(row.get("disappeared", [])),
                                row["vectors"], row["regions_total"], region["vectors"],
                                orjson.dumps(region["where"]).decode(), region["verified"],
                                orjson.dumps(region["witness"]).decode() if region["witness"] else ""])
        return buf.getvalue()
    if fmt == "html":
        return _html_page("msgpolicy diff --exhaustive", _exhaustive_html(data))
    sp = data["space"]
    out = _Folder(width)
    for text in ("msgpolicy diff --exhaustive", f"baseline: {data['baseline']['label']}",
                 f"variant:  {data['variant']['label']}",
                 f"space: {_n(sp['vectors'])} fact vectors ({_n(sp['classes'])} after merging values no rule tells "
                 f"apart) in {sp['differing_contexts']} of {sp['contexts']} contexts (the rest have the same "
                 "versions on both sides)"):
        out.line(text)
    alike = sum(1 for c in data["contexts"] if not c["differs"])
    if alike:
        out.line(f"  {alike} of them judge every message alike (their version files differ only in "
                 "what no rule reads, e.g. a date outside the interval)")
    for c in data["contexts"]:
        if not c["differs"]:
            continue
        sent = "; ".join((f"[{s['from'] or '…'}, {s['to'] or '…'})" if s["from"] or s["to"] else "any date")
                         + f" {','.join(s['marketplaces'])}" for s in c["sent"])
        out.line(f"  context {c['id']}: sent {sent}")
        out.line(f"    baseline: {', '.join(c['baseline']) or 'no policy'}")
        out.line(f"    variant:  {', '.join(c['variant']) or 'no policy'}")
        out.line("    dimensions: " + " × ".join(f"{k} {v}" for k, v in c["dimensions"].items())
                 + f" = {_n(c['vectors'])}")
    if not d.differs:
        out.lines += ["", "no differences"]
        return "\n".join(out.lines) + "\n"

    def section(title, rows, head):
        out.lines += ["", title]
        for row, obj in zip(rows, head):
            out.line(f"  [context {row.context}] {obj}: {_n(row.vectors)} vectors in {len(row.regions)} region(s)")
            for region in row.regions[:max_regions]:
                # a region's facts one a line: its values fold within the width, not one long line
                if region.where:
                    out.line(f"    {_n(region.vectors)} vectors where")
                    out.facts(6, [(k, str(v)) for k, v in region.where.items()])
                else:
                    out.line(f"    {_n(region.vectors)} vectors: every message")
                if witnesses:
                    _witness_text(out, region, 6)
            hidden = len(row.regions) - max_regions
            if hidden > 0:
                out.line(f"    … {hidden} more region(s) (--max-regions)")

    def arrow(label):
        return f"{label['from']} → {label['to']}"
    section("outcome changes:", d.outcomes, [arrow(r.label) for r in d.outcomes])
    section("rule changes:", d.rules, [f"{r.label['rule']} {arrow(r.label)}" for r in d.rules])
    if d.changes is not None:
        section("whole changes (outcome, +appeared, -disappeared):", d.changes,
                [arrow(r.label) + " " + " ".join([f"+{x}" for x in r.label["appeared"]] +
                                                 [f"-{x}" for x in r.label["disappeared"]]) for r in d.changes])
    for note in d.notes:
        out.lines.append("")
        out.line(f"note: {note}")
    return "\n".join(out.lines) + "\n"


# ---- sensitivity (audit --sensitivity) ---------------------------------------------------------


def sensitivity_dict(s) -> dict:
    return {
        "alternatives": s.alternatives,
        "judged": s.judged,
        "flagged": s.flagged,
        "by_alternative": [{"alternative": a, "messages": s.by_alternative.get(a, 0)} for a in s.alternatives],
        "transitions": [{"alternative": a, "from": f, "to": t, "messages": n}
                        for (a, f, t), n in sorted(s.transitions.items())],
        "messages": s.messages,
    }


def render_sensitivity(fmt: str, s, report: str) -> str:
    """The audit report with a sensitivity section added in the same format."""
    data = sensitivity_dict(s)
    if fmt == "json":
        doc = orjson.loads(report)
        doc["sensitivity"] = data
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = SafeCsvWriter(buf)
        for r in data["by_alternative"]:
            w.writerow(["sensitivity", "", "", r["alternative"], "", "", r["messages"]])
        for m in data["messages"]:
            for a in m["alternatives"]:
                w.writerow(["sensitive_message", m["message_id"], "", a["name"], "", f"{m['outcome']}→{a['outcome']}", ""])
        return report + buf.getvalue()
    if fmt == "html":
        section = _sensitivity_html(data)
        return report.replace("</body>", section + "</body>") if "</body>" in report else report + section
    out = ["", f"sensitivity: {data['flagged']} of {data['judged']} message(s) change under a recorded alternative"]
    for r in data["by_alternative"]:
        out.append(f"  {r['alternative']:<32} {r['messages']:>10}")
    for t in data["transitions"]:
        out.append(f"    {t['alternative']}: {t['from']} → {t['to']}: {t['messages']}")
    if data["messages"]:
        out.append("  messages (baseline outcome; outcome under each alternative that changes it):")
        for m in data["messages"][:50]:
            alts = ", ".join(f"{a['name']} {a['outcome']}" for a in m["alternatives"])
            out.append(f"    {m['message_id']}  {m['outcome']}  [{alts}]")
        if len(data["messages"]) > 50:
            out.append(f"    … {len(data['messages']) - 50} more (see --format json)")
    return report + "\n".join(out) + "\n"


# ---- HTML ----------------------------------------------------------------------------------------


def _e(x) -> str:
    return html.escape(str(x))


def _html_page(title: str, body: str) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
             "code,pre{font-size:.85em}pre{white-space:pre-wrap;word-break:break-all}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{style}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>\n")


def _table(head: list, rows: list) -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _log_html(data: dict) -> str:
    parts = [f"<p>baseline: <code>{_e(data['baseline']['label'])}</code><br>variant: "
             f"<code>{_e(data['variant']['label'])}</code><br>{data['judged']} judged, {data['changed']} changed</p>",
             "<h2>Transitions</h2>",
             _table(["from", "to", "messages", "changed"],
                    [[_e(t["from"]), _e(t["to"]), t["messages"], t["changed"]] for t in data["transitions"]])]
    if data["rules"]:
        parts += ["<h2>Rules</h2>", _table(["rule", "appeared", "disappeared"],
                                           [[_e(r["rule"]), r["appeared"], r["disappeared"]] for r in data["rules"]])]
    if data.get("changes"):
        parts += ["<h2>Changed messages</h2>", _table(
            ["message", "from", "to", "appeared", "disappeared"],
            [[_e(c["message_id"]), _e(c["from"]), _e(c["to"]), _e(" ".join(c["appeared"])),
              _e(" ".join(c["disappeared"]))] for c in data["changes"]])]
    return "".join(parts)


def _exhaustive_html(data: dict) -> str:
    sp = data["space"]
    parts = [f"<p>baseline: <code>{_e(data['baseline']['label'])}</code><br>variant: "
             f"<code>{_e(data['variant']['label'])}</code><br>space: {_n(sp['vectors'])} fact vectors in "
             f"{sp['differing_contexts']} of {sp['contexts']} contexts</p>"]
    for title, rows in (("Outcome changes", data["outcomes"]), ("Rule changes", data["rules"]),
                        ("Whole changes", data["changes"] or [])):
        if not rows:
            continue
        table_rows = []
        for row in rows:
            label = row.get("rule", "") + f" {row['from']} → {row['to']}"
            for region in row["regions"]:
                wit = "\n".join(orjson.dumps(r).decode() for r in region["witness"]) if region["witness"] else "none"
                table_rows.append([row["context"], _e(label), _n(row["vectors"]), _n(region["vectors"]),
                                   _e(_where_text(region["where"])),
                                   "yes" if region["verified"] else "no", f"<pre>{_e(wit)}</pre>"])
        parts += [f"<h2>{title}</h2>", _table(["context", "change", "vectors", "region vectors", "where",
                                                "witness verified", "witness"], table_rows)]
    return "".join(parts)


def _sensitivity_html(data: dict) -> str:
    rows = [[_e(r["alternative"]), r["messages"]] for r in data["by_alternative"]]
    msgs = [[_e(m["message_id"]), _e(m["outcome"]),
             _e(", ".join(f"{a['name']}: {a['outcome']}" for a in m["alternatives"]))] for m in data["messages"][:500]]
    return (f"<section><h2>Sensitivity to recorded alternatives</h2><p>{data['flagged']} of {data['judged']} "
            f"messages change under at least one alternative.</p>" + _table(["alternative", "messages"], rows)
            + _table(["message", "baseline", "under alternatives"], msgs) + "</section>")
