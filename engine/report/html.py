"""Self-contained HTML audit report (filled in below)."""
from __future__ import annotations

import html

from . import summary_dict, render_text


def render_html(result, policies=None) -> str:
    return "<!doctype html><meta charset=utf-8><pre>" + html.escape(render_text(result, policies)) + "</pre>\n"
