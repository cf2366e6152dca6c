"""The curl examples of docs/howto/serve.md, run in order against a fresh `msgpolicy serve`.

A block titled `$ curl` is a shell command (its URL is pointed at the test's
server); the block titled `response` after it holds the JSON value(s) it must
print. An expected object's members must all be present and equal (members it
leaves out are not compared); lists must match element by element; the string
"…" matches any value. The OpenAPI document published beside the page must be
the one the server builds.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.docs.test_examples import blocks

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "howto" / "serve.md"
OPENAPI = ROOT / "docs" / "howto" / "serve-openapi.json"
ANY = "…"


def examples() -> list[tuple[int, str, str]]:
    items = blocks(PAGE)
    out = []
    for i, (line, title, body) in enumerate(items):
        if title == "$ curl":
            assert i + 1 < len(items) and items[i + 1][1] == "response", f"serve.md:{line}: no response block"
            out.append((line, body, items[i + 1][2]))
    return out


def json_values(text: str) -> list:
    decoder, values, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        value, end = decoder.raw_decode(text, pos)
        values.append(value)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


def matches(want, got, where="$") -> list[str]:
    if want == ANY:
        return []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {got!r}"]
        problems = []
        for key, value in want.items():
            if key not in got:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += matches(value, got[key], f"{where}.{key}")
        return problems
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: expected {len(want)} items, got {got!r}"]
        return [p for i, (w, g) in enumerate(zip(want, got)) for p in matches(w, g, f"{where}[{i}]")]
    return [] if want == got else [f"{where}: docs say {want!r}, server says {got!r}"]


def test_examples_are_found():
    assert len(examples()) >= 8


def test_curl_examples(server):
    srv = server()
    for line, command, response in examples():
        assert "http://127.0.0.1:8080" in command, f"serve.md:{line}"
        run = subprocess.run(["bash", "-o", "pipefail", "-c", command.replace("http://127.0.0.1:8080", srv.url)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"serve.md:{line}: exit {run.returncode}\n{run.stderr}"
        got, want = json_values(run.stdout), json_values(response)
        assert len(got) == len(want), f"serve.md:{line}: {len(want)} value(s) in the docs, got {run.stdout}"
        problems = [p for w, g in zip(want, got) for p in matches(w, g)]
        assert not problems, f"serve.md:{line}:\n" + "\n".join(problems) + f"\n{run.stdout}"


@pytest.fixture(scope="module")
def app_openapi():
    from engine.serve.app import create_app
    from engine.serve.service import Service

    from tests.conftest import POLICIES
    from engine import load_policies

    return create_app(Service(load_policies(POLICIES), store=None)).openapi()


def test_published_openapi_document_is_current(app_openapi):
    # Regenerate with: python -m engine.serve.openapi > docs/howto/serve-openapi.json
    assert orjson.loads(OPENAPI.read_bytes()) == orjson.loads(orjson.dumps(app_openapi)), \
        "docs/howto/serve-openapi.json is stale: python -m engine.serve.openapi > docs/howto/serve-openapi.json"


def test_page_is_in_the_nav():
    assert re.search(r"^\s*- .*: howto/serve\.md$", (ROOT / "mkdocs.yml").read_text(), re.M)
