"""The docs site builds with `mkdocs build --strict`, and its generated reference is complete.

The Chromium test serves the built site on 127.0.0.1 and loads pages in headless Chromium
(Debian package `chromium`), asserting on the rendered text that every version page lists
every rule id of that version and that the timeline diagram renders.
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine import load_policies

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
pytest.importorskip("material", reason="mkdocs-material is not installed")
pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"NO_MKDOCS_2_WARNING": "1", **__import__("os").environ},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def policies():
    return load_policies(ROOT / "policies")


def _text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_build_strict_makes_every_reference_page(site, policies):
    assert (site / "reference" / "timeline" / "index.html").is_file()
    for family in policies.families.values():
        assert (site / "reference" / family.id / "categories" / "index.html").is_file()
        for v in family.versions:
            page = site / "reference" / family.id / v.id / "index.html"
            assert page.is_file(), page
            assert (site / "reference" / family.id / f"{v.id}-changes" / "index.html").is_file()
            text = _text(page.read_text(encoding="utf-8"))
            for r in v.enabled_rules:
                assert re.search(rf"\b{re.escape(r.id)}\b", text), f"{v.label}: rule {r.id} missing"


def test_no_generated_page_is_committed():
    assert not (ROOT / "docs" / "reference").exists(), "docs/reference/ is generated at build time only"


# ---- headless Chromium --------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def chromium(*args: str, timeout: int = 45) -> str:
    profile = tempfile.mkdtemp(prefix="msgpolicy-chromium-")
    try:
        proc = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")


@needs_chromium
def test_chromium_reference_lists_every_rule_and_timeline_renders(server, policies):
    versions = policies.all_versions()
    urls = {v.label: f"{server}/reference/{v.family}/{v.id}/" for v in versions}
    urls["timeline"] = f"{server}/reference/timeline/"
    with ThreadPoolExecutor(max_workers=4) as pool:
        doms = dict(zip(urls, pool.map(lambda u: chromium("--dump-dom", u), urls.values())))

    documented = loaded = 0
    for v in versions:
        text = _text(doms[v.label])
        assert v.version.title in text or v.id in text, f"{v.label} page did not render"
        for r in v.enabled_rules:
            loaded += 1
            # each rule has its own heading "ID: title" and a row in the rule table
            if re.search(rf"\b{re.escape(r.id)}\b: {re.escape(r.rule.title.split(':')[0][:20])}", text):
                documented += 1
            else:
                pytest.fail(f"{v.label}: rule {r.id} not in the rendered page")
    assert documented == loaded == sum(len(v.enabled_rules) for v in versions)

    timeline = doms["timeline"]
    m = re.search(r'<svg[^>]*class="msgpolicy-timeline".*?</svg>', timeline, re.S)
    assert m, "timeline SVG missing from the rendered page"
    svg = m.group(0)
    tl_text = _text(svg)
    for v in versions:
        assert v.effective_from.isoformat() in tl_text, f"{v.label}: start date not on the timeline axis"
        assert svg.count("<rect") >= len(versions)
    for family in policies.families.values():
        for alt in family.file.alternatives:
            assert alt.name in _text(timeline), f"alternative {alt.name} not shown on the timeline page"


@needs_chromium
def test_chromium_screenshot_of_timeline(server, tmp_path):
    shot = tmp_path / "timeline.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", f"{server}/reference/timeline/")
    assert shot.is_file() and shot.stat().st_size > 10_000
