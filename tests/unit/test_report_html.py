"""The HTML audit report: a continuous month axis, round ticks, axis titles, version labels
that do not touch, and what to do under each top rule; rendered in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import load_policies
from engine.cli import main
from engine.report.advice import what_to_do
from engine.report.html import _months_between, _text_width, nice_ticks

from ..conftest import POLICIES, ROOT

SAMPLE = ROOT / "samples" / "2017-2025-sample.jsonl"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.parametrize("peak", [1, 3, 7, 10, 14, 99, 101, 3062, 195_547, 10**6 + 1])
def test_ticks_are_round_and_cover_the_peak(peak):
    ticks = nice_ticks(peak)
    step = ticks[1] - ticks[0]
    assert ticks[0] == 0 and ticks[-1] >= peak > ticks[-2]
    assert all(b - a == step for a, b in zip(ticks, ticks[1:]))
    assert re.fullmatch(r"[125]0*", str(step)), step
    assert 2 <= len(ticks) <= 6 and (len(ticks) >= 3 or peak == 1)


def test_months_are_continuous():
    months = _months_between("2017-11", "2018-02")
    assert months == ["2017-11", "2017-12", "2018-01", "2018-02"]
    assert len(_months_between("2017-03", "2025-06")) == 8 * 12 + 4


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(main, ["audit", str(SAMPLE), "--format", "html", "-o", str(out)])
    assert result.exit_code == 1, result.output
    return out.read_text(encoding="utf-8")


def test_the_month_axis_has_every_month_round_ticks_and_titles(report):
    svg = re.search(r'<svg[^>]*aria-label="messages judged per month.*?</svg>', report, re.S).group(0)
    # one tick mark per month from the first to the last (2017-03 .. 2025-06), years labelled
    assert len(re.findall(r'<line x1="([\d.]+)" x2="\1" y1="\d+" y2="\d+" stroke="#98a2b3"/>', svg)) == 100
    # 2017 too, though the axis starts in March: the year has room for its label
    assert [y for y in re.findall(r">(20\d\d)</text>", svg)] == [str(y) for y in range(2017, 2026)]
    ticks = [int(t.replace(",", "")) for t in re.findall(r'text-anchor="end" fill="#667085">([\d,]+)</text>', svg)]
    assert ticks == nice_ticks(max(ticks))
    assert "messages judged</text>" in svg and "month judged (2017-03 to 2025-06" in svg


def test_version_labels_appear_once_per_date_and_never_touch(report):
    policies = load_policies(POLICIES)
    labels = re.findall(r'<text x="([\d.]+)" y="(\d+)" font-size="10.5" fill="#1d2430" text-anchor="(start|end)">([^<]+)</text>',
                        report)
    dates = sorted({v.effective_from.isoformat() for v in policies.all_versions()})
    assert sorted(text.split()[0] for *_, text in labels) == dates  # two families starting together: one label
    spans: dict[str, list[tuple[float, float]]] = {}
    for x, y, anchor, text in labels:
        x, w = float(x), _text_width(text, 10.5)
        spans.setdefault(y, []).append((x - w, x) if anchor == "end" else (x, x + w))
    for row in spans.values():
        row.sort()
        assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(row, row[1:])), row


def test_each_top_rule_says_what_to_do(report):
    rows = re.findall(r"<tr><td><b>([^<]+)</b> → (\w+)<br>.*?</tr>", report, re.S)
    assert rows
    blocks = re.findall(r"<tr><td><b>[^<]+</b> → \w+<br>(.*?)</tr>", report, re.S)
    assert all("What to do:" in b for b in blocks)
    # an indeterminate from an unknown opt-out state: export the opt-out events or the field
    [indeterminate] = [b for (rule, outcome), b in zip(rows, blocks) if outcome == "indeterminate"]
    assert "buyer opt-out events" in indeterminate and "buyer_opted_out" in indeterminate
    assert "category" not in indeterminate  # every record of the sample gives its own


def test_advice_follows_the_rule_and_its_outcome():
    policies = load_policies(POLICIES)
    version = next(v for v in policies.all_versions() if any(r.id == "CG2020-WINDOW-30D" for r in v.enabled_rules))
    rule = version.rule_index["CG2020-WINDOW-30D"]
    window = what_to_do(policies, version.family, version.id, rule.id, "indeterminate")
    assert any("delivered_at" in item for item in window.items)
    violation = what_to_do(policies, version.family, version.id, rule.id, "violation")
    assert rule.rule.reason.strip() in violation.text and not violation.items
    assert what_to_do(policies, version.family, version.id, "NO-SUCH-RULE", "violation") is None
    assert what_to_do(policies, version.family, version.id, rule.id, "allowed") is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_chromium_renders_the_report(report, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report, encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="msgpolicy-chromium-")
    shot = tmp_path / "report.png"
    try:
        base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}"]
        dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "What to do:" in dom.stdout and "month judged" in dom.stdout
        # the page asks for nothing over the network: every asset is inline
        assert not re.search(r'(?:src|href)="(?:https?:)?//', dom.stdout)
        proc = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1240,1400", page.as_uri()],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert shot.stat().st_size > 20_000
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_rules_most_severe_first_one_row_per_rule_across_versions(report):
    rows = re.findall(r"<tr><td><b>([^<]+)</b> → (\w+)<br><span class=muted>([^<]+)</span></td><td class=n>([\d,]+)",
                      report)
    outcomes = [o for _, o, _, _ in rows]
    severity = ["violation", "indeterminate", "blocked"]
    assert outcomes == sorted(outcomes, key=severity.index) and set(outcomes) == set(severity)
    # D2 blocked under three versions with the same advice: one row, their sum
    [d2] = [r for r in rows if r[:2] == ("D2", "blocked")]
    assert d2[2] == "2017-optout/all-marketplaces, important-retired, rollout" and d2[3] == "4"
    assert outcomes.count("violation") == 8 and "Not shown: 7 more violation rule(s)" in report


def test_outcome_cards_have_a_row_of_their_own(report):
    rows = re.findall(r"<div class=cards>(.*?)</div></div>(?=<div class=cards>|\n)", report, re.S)
    assert len(rows) == 2
    assert "buyer events" in rows[0] and "violation" not in rows[0]
    assert all(o in rows[1] for o in ("no_policy", "allowed", "blocked", "indeterminate", "violation"))
