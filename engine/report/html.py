"""Self-contained HTML audit report: inline CSS and SVG, no external assets."""
from __future__ import annotations

import calendar
import html
import math
import re
from typing import Optional

from ..evaluate import CLASSIFIER_POLICY
from . import OUTCOMES, summary_dict

COLORS = {"no_policy": "#b8c0cc", "allowed": "#3a9d5d", "blocked": "#e0a31b",
          "indeterminate": "#7a6fd0", "violation": "#d64545"}

CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.muted{color:#667085} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px} .ok{color:#3a9d5d} .bad{color:#d64545}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef1f5}
th{background:#f6f8fb} th.n{text-align:right} td.n{text-align:right;font-variant-numeric:tabular-nums} code{font-size:12px;word-break:break-all}
.legend span{display:inline-block;margin-right:14px} .legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg text{font-family:inherit}
table.rules td{vertical-align:top;padding:6px 8px} table.rules td:first-child{width:300px}
td.barcell{width:62%} .bar{height:14px;border-radius:3px;margin-top:3px;min-width:2px}
.todo{margin-top:5px;color:#344054;font-size:12.5px} .todo ul{margin:3px 0 0 18px;padding:0} .todo code{word-break:normal;white-space:nowrap}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _months_between(first: str, last: str) -> list[str]:
    """Every month from first to last (YYYY-MM), so a quiet month is an empty slot, not a gap."""
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while f"{year:04d}-{month:02d}" <= last:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def nice_ticks(peak: int, target: int = 5) -> list[int]:
    """Round tick values from 0 to at least `peak`: steps of 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return [0, 1]
    raw = peak / max(target - 1, 1)
    magnitude = 10 ** max(len(str(int(raw))) - 1, 0)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = -(-peak // step) * step
    return list(range(0, top + 1, step))


def _text_width(text: str, size: float) -> float:
    # Generous for the sans-serif fonts the page asks for: labels are placed so they cannot touch.
    return 0.62 * size * len(text)


def _month_chart(rows, boundaries) -> str:
    if not rows:
        return "<p class=muted>No judged messages.</p>"
    by_month = {r["month"]: r for r in rows}
    first, last = rows[0]["month"], rows[-1]["month"]
    months = _months_between(first, last)
    empty = dict.fromkeys(OUTCOMES, 0)
    rows = [by_month.get(m, {"month": m, **empty}) for m in months]
    ticks = nice_ticks(max(sum(r[o] for o in OUTCOMES) for r in rows))
    axis_max = ticks[-1]
    width, left, right, bottom = 1140, 64, 12, 58
    plot_w = width - left - right
    bw = plot_w / len(months)

    def x_of_day(day: str) -> Optional[float]:
        month = day[:7]
        if month not in months:
            return None
        days = calendar.monthrange(int(day[:4]), int(day[5:7]))[1]
        return left + (months.index(month) + (int(day[8:10]) - 1) / days) * bw

    # Version boundaries: one label per date (versions of several families may start together),
    # each placed in the first row where it touches no other label.
    grouped: dict[str, list[str]] = {}
    for day, label in boundaries:
        grouped.setdefault(day, [])
        if label not in grouped[day]:
            grouped[day].append(label)
    placed, row_spans = [], []  # (x, row, text, anchor_end); per row: the (start, end) spans taken
    for day in sorted(grouped):
        x = x_of_day(day)
        if x is None:
            continue
        text = f"{day} {', '.join(grouped[day])}"
        text_w = _text_width(text, 10.5)
        anchor_end = x + 4 + text_w > width - right
        start, end = (x - 4 - text_w, x) if anchor_end else (x, x + 4 + text_w)
        row = 0
        while row < len(row_spans) and any(start < e + 8 and s < end + 8 for s, e in row_spans[row]):
            row += 1
        if row == len(row_spans):
            row_spans.append([])
        row_spans[row].append((start, end))
        placed.append((x, row, text, anchor_end))
    top = 18 + 14 * len(row_spans) + 10
    plot_h = 240
    height = top + plot_h + bottom
    base = top + plot_h
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="messages judged per month, by outcome">']
    for v in ticks:  # grid and round y ticks
        y = base - plot_h * v / axis_max
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e8ee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#667085">{v:,}</text>')
    parts.append(f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" font-size="12" '
                 f'text-anchor="middle" fill="#344054">messages judged</text>')
    for i, r in enumerate(rows):
        y = base
        x = left + i * bw
        for o in OUTCOMES:
            h = plot_h * r[o] / axis_max
            if h > 0:
                y -= h
                parts.append(f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 0.8):.1f}" height="{h:.1f}" '
                             f'fill="{COLORS[o]}"><title>{_e(r["month"])} {o}: {r[o]:,}</title></rect>')
    # x axis: every month when there are few, else each January (the year), with a tick per month
    yearly = len(months) > 18
    room = 12 * bw if yearly else bw  # px between two labels if every year (month) had one
    label_every = max(1, math.ceil((_text_width("2020" if yearly else "2020-11", 11) + 10) / room))
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#98a2b3"/>')
    for i, m in enumerate(months):
        x = left + i * bw
        january = m.endswith("-01")
        if yearly:
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + (6 if january else 3)}" stroke="#98a2b3"/>')
            # the first year gets a label too when it starts after January and has room for one
            first_year = i == 0 and not january and 12 - int(m[5:7]) + 1 >= label_every * 6 \
                and (13 - int(m[5:7])) * bw >= _text_width("2020", 11) + 10
            if first_year or (january and int(m[:4]) % label_every == 0):
                parts.append(f'<text x="{x:.1f}" y="{base + 18}" font-size="11" text-anchor="middle" '
                             f'fill="#667085">{m[:4]}</text>')
        elif i % label_every == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{base + 18}" font-size="11" text-anchor="middle" '
                         f'fill="#667085">{_e(m)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" font-size="12" text-anchor="middle" '
                 f'fill="#344054">month judged ({_e(months[0])} to {_e(months[-1])}, every month shown)</text>')
    for x, row, text, anchor_end in placed:
        y = 16 + row * 14
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 3}" y2="{base}" stroke="#1d2430" '
                     f'stroke-dasharray="4 3" stroke-width="1.1"/>'
                     f'<text x="{x + (-4 if anchor_end else 4):.1f}" y="{y}" font-size="10.5" fill="#1d2430" '
                     f'text-anchor="{"end" if anchor_end else "start"}">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _rule_rows(by_rule, policies, categories_inferred: bool, per_outcome: int):
    """The findings other than notes, one row per rule and outcome: a rule's versions that
    advise alike are summed into one row (the same advice is not repeated per version). Most
    severe outcome first, the most frequent first within it; at most `per_outcome` rows an
    outcome, so a long list of violations leaves room for the indeterminate and blocked."""
    from .advice import what_to_do

    groups: dict[tuple, dict] = {}
    for r in by_rule:
        if r["outcome"] == "allowed":
            continue
        advice = what_to_do(policies, r["policy"], r["version"], r["rule"], r["outcome"], categories_inferred)
        key = (r["outcome"], r["policy"], r["rule"], advice)
        group = groups.setdefault(key, {**r, "versions": [], "count": 0, "advice": advice})
        group["versions"].append(r["version"])
        group["count"] += r["count"]
    severity = {o: -i for i, o in enumerate(OUTCOMES)}
    rows = sorted(groups.values(), key=lambda g: (severity[g["outcome"]], -g["count"], g["policy"], g["rule"]))
    shown, hidden = [], {}
    for g in rows:
        if sum(1 for x in shown if x["outcome"] == g["outcome"]) < per_outcome:
            shown.append(g)
        else:
            hidden[g["outcome"]] = hidden.get(g["outcome"], 0) + 1
    return shown, hidden


def _top_rules(by_rule, policies, categories_inferred: bool, per_outcome=8) -> str:
    """The findings other than notes, each with a bar and what to do about it."""
    rows, hidden = _rule_rows(by_rule, policies, categories_inferred, per_outcome)
    if not rows:
        return "<p class=muted>None.</p>"
    peak = max(r["count"] for r in rows) or 1
    out = ["<table class=rules><tr><th>rule → outcome</th><th class=n>findings</th><th></th></tr>"]
    for r in rows:
        advice = r["advice"]
        todo = ""
        if advice is not None:
            items = "".join(f"<li>{_inline(i)}</li>" for i in advice.items)
            todo = (f'<div class=todo><b>What to do:</b> {_inline(advice.text)}'
                    + (f"<ul>{items}</ul>" if items else "") + "</div>")
        share = 100 * r["count"] / peak
        out.append(
            f'<tr><td><b>{_e(r["rule"])}</b> → {_e(r["outcome"])}<br><span class=muted>{_e(r["policy"])}/'
            f'{_e(", ".join(r["versions"]))}</span></td>'
            f'<td class=n>{r["count"]:,}</td>'
            f'<td class=barcell><div class=bar style="width:{share:.1f}%;background:{COLORS.get(r["outcome"], "#5b7db1")}"></div>'
            + todo + "</td></tr>")
    out.append("</table>")
    if hidden:
        out.append("<p class=muted>Not shown: " + ", ".join(f"{n:,} more {_e(o)} rule(s)" for o, n in hidden.items())
                   + " (every rule is in the text and JSON summaries).</p>")
    return "".join(out)


def _card(label: str, value: int) -> str:
    mark = f'<i style="background:{COLORS[label]}"></i>' if label in COLORS else ""
    return f"<div class=card><span class=muted>{mark}{_e(label)}</span><b>{value:,}</b></div>"


def render_html(result, policies=None) -> str:
    d = summary_dict(result)
    c, p = d["counts"], d["provenance"]
    boundaries = []
    if policies is not None:
        from ..timeline import timeline_rows
        for r in timeline_rows(policies):
            boundaries.append((r["effective_from"], r["version"]))
    boundaries.sort()
    findings = sum(d["outcomes"][o] for o in ("blocked", "indeterminate", "violation"))
    # Two rows of cards, so the outcomes never wrap apart: what was read, then how it was judged.
    counts = [("read", c["read"]), ("judged", c["judged"]), ("rejected", c["rejected"]),
              ("buyer events", c["buyer_events"])]
    outcomes = [(o, d["outcomes"][o]) for o in OUTCOMES]
    legend = "".join(f'<span><i style="background:{COLORS[o]}"></i>{o}</span>' for o in OUTCOMES)
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
{"".join(f'<div class=cards>{"".join(_card(k, v) for k, v in row)}</div>' for row in (counts, outcomes))}
<div class=muted>{balance}{f" · {c['out_of_order']:,} out of order (flagged)" if c["out_of_order"] else ""} · rejected by field: {rejects}</div>
<h2>Outcomes per month</h2>
<div class=legend>{legend}<span class=muted>dashed lines: policy version boundaries</span></div>
{_month_chart(d["by_month"], boundaries)}
<h2>Rules with findings (most severe first; allowed notes left out)</h2>
{_top_rules(d["by_rule"], policies, any(r["policy"] == CLASSIFIER_POLICY for r in d["by_rule"]))}
<h2>Worst orders</h2>
<table><tr><th>order</th><th class=n>violation</th><th class=n>indeterminate</th><th class=n>blocked</th></tr>{worst or "<tr><td colspan=4 class=muted>none</td></tr>"}</table>
<h2>By policy version</h2>
<table><tr><th>version</th><th>outcome</th><th class=n>messages</th></tr>{versions}</table>
<h2>Provenance</h2>
<table>{prov_rows}</table>
</body></html>
"""
