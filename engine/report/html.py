"""Self-contained HTML audit report: inline CSS and SVG, no external assets."""
from __future__ import annotations

import html

from . import OUTCOMES, summary_dict

COLORS = {"no_policy": "#b8c0cc", "allowed": "#3a9d5d", "blocked": "#e0a31b",
          "indeterminate": "#7a6fd0", "violation": "#d64545"}

CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.muted{color:#667085} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px} .ok{color:#3a9d5d} .bad{color:#d64545}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef1f5}
th{background:#f6f8fb} th.n{text-align:right} td.n{text-align:right;font-variant-numeric:tabular-nums} code{font-size:12px;word-break:break-all}
.legend span{display:inline-block;margin-right:14px} .legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg text{font-family:inherit}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _month_chart(rows, boundaries) -> str:
    if not rows:
        return "<p class=muted>No judged messages.</p>"
    months = [r["month"] for r in rows]
    width, height, left, bottom, top = 1140, 340, 56, 40, 74
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(sum(r[o] for o in OUTCOMES) for r in rows) or 1
    bw = plot_w / len(rows)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="outcomes per month">']
    for i in range(5):  # grid
        v = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width-10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef1f5"/>'
                     f'<text x="{left-6}" y="{y+4:.1f}" font-size="11" text-anchor="end" fill="#667085">{v:,.0f}</text>')
    for i, r in enumerate(rows):
        y = top + plot_h
        x = left + i * bw
        for o in OUTCOMES:
            h = plot_h * r[o] / peak
            if h > 0:
                y -= h
                parts.append(f'<rect x="{x+0.5:.1f}" y="{y:.1f}" width="{max(bw-1,0.8):.1f}" height="{h:.1f}" '
                             f'fill="{COLORS[o]}"><title>{_e(r["month"])} {o}: {r[o]:,}</title></rect>')
    step = max(1, len(months) // 12)
    for i, m in enumerate(months):
        if i % step == 0:
            x = left + i * bw + bw / 2
            parts.append(f'<text x="{x:.1f}" y="{height-bottom+16}" font-size="11" text-anchor="middle" '
                         f'fill="#667085">{_e(m)}</text>')
    row_end: list[float] = []  # per label row: the x where its last label ends
    for day, label in boundaries:
        month = day[:7]
        if month < months[0] or month > months[-1]:
            continue
        idx = next((i for i, m in enumerate(months) if m >= month), len(months) - 1)
        frac = (int(day[8:10]) - 1) / 31 if months[idx] == month else 0
        x = left + (idx + frac) * bw
        text_w = 6.2 * len(label)
        anchor_end = x + text_w > width - 10
        start, end = (x - 3 - text_w, x) if anchor_end else (x, x + 3 + text_w)
        row = next((i for i, e in enumerate(row_end) if e < start - 6), None)
        if row is None:
            row = len(row_end)
            row_end.append(end)
        else:
            row_end[row] = end
        y = 12 + row * 13
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y+2}" y2="{top+plot_h}" stroke="#1d2430" '
                     f'stroke-dasharray="4 3" stroke-width="1.2"/>'
                     f'<text x="{x + (-3 if anchor_end else 3):.1f}" y="{y}" font-size="10.5" fill="#1d2430" '
                     f'text-anchor="{"end" if anchor_end else "start"}">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar_table(rows, label_key, value_key, color_key=None, limit=15) -> str:
    rows = rows[:limit]
    if not rows:
        return "<p class=muted>None.</p>"
    peak = max(r[value_key] for r in rows) or 1
    # Bars start after the longest label (about 6.6 px a character at 12 px).
    bar_x = min(max(int(6.6 * max(len(str(r[label_key])) for r in rows)) + 16, 200), 560)
    out = ['<svg width="1140" height="%d">' % (len(rows) * 24 + 6)]
    for i, r in enumerate(rows):
        y = i * 24 + 4
        w = (1080 - bar_x - 60) * r[value_key] / peak
        color = COLORS.get(r.get(color_key, ""), "#5b7db1") if color_key else "#5b7db1"
        out.append(f'<text x="0" y="{y+14}" font-size="12">{_e(r[label_key])}</text>'
                   f'<rect x="{bar_x}" y="{y}" width="{max(w,1):.1f}" height="18" rx="3" fill="{color}"/>'
                   f'<text x="{bar_x+6+w:.1f}" y="{y+14}" font-size="12" fill="#344054">{r[value_key]:,}</text>')
    out.append("</svg>")
    return "".join(out)


def render_html(result, policies=None) -> str:
    d = summary_dict(result)
    c, p = d["counts"], d["provenance"]
    boundaries = []
    if policies is not None:
        from ..timeline import timeline_rows
        for r in timeline_rows(policies):
            boundaries.append((r["effective_from"], f'{r["version"]} ({r["effective_from"]})'))
    boundaries.sort()
    findings = sum(d["outcomes"][o] for o in ("blocked", "indeterminate", "violation"))
    cards = [("read", c["read"]), ("judged", c["judged"]), ("rejected", c["rejected"]),
             ("buyer events", c["buyer_events"])] + [(o, d["outcomes"][o]) for o in OUTCOMES]
    legend = "".join(f'<span><i style="background:{COLORS[o]}"></i>{o}</span>' for o in OUTCOMES)
    top_rules = [{"label": f'{r["policy"]}/{r["version"]} {r["rule"]} → {r["outcome"]}', **r}
                 for r in d["by_rule"] if r["outcome"] != "allowed"]
    worst = "".join(
        f'<tr><td><code>{_e(r["order_id"])}</code></td><td class=n>{r["violation"]:,}</td>'
        f'<td class=n>{r["indeterminate"]:,}</td><td class=n>{r["blocked"]:,}</td></tr>'
        for r in d["worst_orders"])
    versions = "".join(
        f'<tr><td>{_e(r["policy"])}/{_e(r["version"])}</td><td>{_e(r["outcome"])}</td><td class=n>{r["count"]:,}</td></tr>'
        for r in d["by_version"])
    prov = [("engine", f'msgpolicy {p["engine_version"]}'), ("policy set hash", p.get("policy_set_hash") or "")]
    prov += [(f"policy {k}", v) for k, v in p["policies"].items()]
    prov += [(f"input {k}", f"sha256 {v}") for k, v in p["inputs"].items()]
    prov += [("evaluated on", p["evaluated_on"] or "as sent"), ("alternatives", ", ".join(p["alternatives"]) or "none"),
             ("history horizon", f'{p["history_days"]} days'), ("generated at", p["generated_at"])]
    prov_rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in prov)
    rejects = ", ".join(f"{_e(k)} {n:,}" for k, n in d["rejects_by_field"].items()) or "none"
    status = (f'<b class=bad>{findings:,} message(s) need attention</b>' if findings
              else '<b class=ok>every judged message is allowed or outside any policy</b>')
    balance = ("read = judged + rejected + buyer events ✓" if c["balanced"]
               else "<b class=bad>read ≠ judged + rejected + buyer events</b>")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>msgpolicy audit</title><style>{CSS}</style></head><body>
<h1>Messaging compliance audit</h1>
<div class=muted>msgpolicy {_e(p["engine_version"])} · {_e(", ".join(p["inputs"]))} · {status}</div>
<div class=cards>{"".join(f"<div class=card><span class=muted>{_e(k)}</span><b>{v:,}</b></div>" for k, v in cards)}</div>
<div class=muted>{balance}{f" · {c['out_of_order']:,} out of order (flagged)" if c["out_of_order"] else ""} · rejected by field: {rejects}</div>
<h2>Outcomes per month</h2>
<div class=legend>{legend}<span class=muted>dashed lines: policy version boundaries</span></div>
{_month_chart(d["by_month"], boundaries)}
<h2>Top rules (findings other than notes)</h2>
{_bar_table(top_rules, "label", "count", "outcome")}
<h2>Worst orders</h2>
<table><tr><th>order</th><th class=n>violation</th><th class=n>indeterminate</th><th class=n>blocked</th></tr>{worst or "<tr><td colspan=4 class=muted>none</td></tr>"}</table>
<h2>By policy version</h2>
<table><tr><th>version</th><th>outcome</th><th class=n>messages</th></tr>{versions}</table>
<h2>Provenance</h2>
<table>{prov_rows}</table>
</body></html>
"""
