"""Audit summary renderers: text, JSON, CSV and a self-contained HTML page."""
from __future__ import annotations

import io

import orjson

from ..io import SafeCsvWriter
from ..model import Outcome

OUTCOMES = [o.value for o in Outcome]


def summary_dict(result, policies=None) -> dict:
    s = result.summary
    return {
        "provenance": result.provenance,
        "counts": {"read": s.read, "judged": s.judged, "rejected": s.rejected, "buyer_events": s.events,
                   "blank_lines": s.blank, "out_of_order": s.out_of_order, "balanced": s.balanced},
        "outcomes": {o: s.outcomes.get(o, 0) for o in OUTCOMES},
        "by_version": [{"policy": p, "version": v, "outcome": o, "count": n}
                       for (p, v, o), n in sorted(s.by_version.items())],
        "by_rule": [{"outcome": o, "policy": p, "version": v, "rule": r, "count": n}
                    for (o, p, v, r), n in sorted(s.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))],
        "by_month": [{"month": m, **{o: s.by_month.get((m, o), 0) for o in OUTCOMES}}
                     for m in sorted({m for m, _ in s.by_month})],
        "rejects_by_field": dict(sorted(s.reject_reasons.items())),
        "worst_orders": s.worst_orders(20),
    }


def render_json(result, policies=None) -> str:
    return orjson.dumps(summary_dict(result), option=orjson.OPT_INDENT_2).decode() + "\n"


def render_text(result, policies=None) -> str:
    d = summary_dict(result)
    c = d["counts"]
    p = d["provenance"]
    out = [f"msgpolicy {p['engine_version']} audit",
           f"read {c['read']} = judged {c['judged']} + rejected {c['rejected']} + buyer events "
           f"{c['buyer_events']}  ({'adds up' if c['balanced'] else 'DOES NOT ADD UP'})"]
    if c["out_of_order"]:
        out.append(f"out of order (judged with the history so far, flagged): {c['out_of_order']}")
    out.append("")
    out.append("outcomes: " + ", ".join(f"{n} {o}" for o, n in d["outcomes"].items() if n) or "none")
    if d["by_version"]:
        out.append("\nby policy version:")
        width = max(len(f"{r['policy']}/{r['version']}") for r in d["by_version"])
        for r in d["by_version"]:
            out.append(f"  {r['policy'] + '/' + r['version']:<{width}}  {r['outcome']:<13} {r['count']:>10}")
    if d["by_rule"]:
        # What needs attention first, most severe outcome first; the allowed notes (what applied,
        # what was inferred, what msgpolicy does not check) after, in a section of their own.
        severity = {o: -i for i, o in enumerate(OUTCOMES)}
        findings = sorted((r for r in d["by_rule"] if r["outcome"] != "allowed"),
                          key=lambda r: (severity[r["outcome"]], -r["count"]))
        notes = [r for r in d["by_rule"] if r["outcome"] == "allowed"]
        width = max(len(f"{r['policy']}/{r['version']} {r['rule']}") for r in d["by_rule"])
        out.append("\nfindings by rule:" + ("" if findings else " none but the allowed notes below"))
        for r in findings:
            name = f"{r['policy']}/{r['version']} {r['rule']}"
            out.append(f"  {r['outcome']:<13} {name:<{width}} {r['count']:>10}")
        if notes:
            out.append("\nallowed notes by rule (what applied, what was inferred, what is not checked):")
            for r in notes:
                name = f"{r['policy']}/{r['version']} {r['rule']}"
                out.append(f"  {name:<{width + 14}} {r['count']:>10}")  # counts in the column above
    if d["by_month"]:
        out.append("\nby month:  " + "  ".join(f"{o:>13}" for o in OUTCOMES))
        for r in d["by_month"]:
            out.append(f"  {r['month']}  " + "  ".join(f"{r[o]:>13}" for o in OUTCOMES))
    if d["rejects_by_field"]:
        out.append("\nrejected by field: " + ", ".join(f"{k} {n}" for k, n in d["rejects_by_field"].items()))
    if d["worst_orders"]:
        out.append("\nworst orders:")
        for r in d["worst_orders"][:10]:
            out.append(f"  {r['order_id']:<22} violation {r['violation']}, indeterminate {r['indeterminate']}, "
                       f"blocked {r['blocked']}")
    out.append("\nprovenance:")
    out.append(f"  engine msgpolicy {p['engine_version']}")
    for name, h in p["policies"].items():
        out.append(f"  policy {name}  {h}")
    for name, h in p["inputs"].items():
        out.append(f"  input {name}  sha256 {h}")
    return "\n".join(out) + "\n"


def render_csv(result, policies=None) -> str:
    """One table: section, key columns, count (by outcome, by version, by rule, by month).
    Overlays name rules, versions and policies, and inputs are file names: any of them could
    start a spreadsheet formula, so the cells are neutralised as in every CSV written."""
    d = summary_dict(result)
    buf = io.StringIO()
    w = SafeCsvWriter(buf)
    w.writerow(["section", "month", "policy", "version", "rule", "outcome", "count"])
    for k, v in d["counts"].items():
        w.writerow(["count", "", "", "", "", k, int(v)])
    for o, n in d["outcomes"].items():
        w.writerow(["outcome", "", "", "", "", o, n])
    for r in d["by_version"]:
        w.writerow(["version", "", r["policy"], r["version"], "", r["outcome"], r["count"]])
    for r in d["by_rule"]:
        w.writerow(["rule", "", r["policy"], r["version"], r["rule"], r["outcome"], r["count"]])
    for r in d["by_month"]:
        for o in OUTCOMES:
            if r[o]:
                w.writerow(["month", r["month"], "", "", "", o, r[o]])
    w.writerow(["provenance_engine", "", "msgpolicy", d["provenance"]["engine_version"], "", "", ""])
    for name, h in d["provenance"]["policies"].items():
        w.writerow(["provenance_policy", "", *name.split("/", 1), h, "", ""])
    for name, h in d["provenance"]["inputs"].items():
        w.writerow(["provenance_input", "", name, "", h, "", ""])
    return buf.getvalue()


def render(fmt: str, result, policies=None) -> str:
    if fmt == "html":
        from .html import render_html
        return render_html(result, policies)
    return {"text": render_text, "json": render_json, "csv": render_csv}[fmt](result, policies)
