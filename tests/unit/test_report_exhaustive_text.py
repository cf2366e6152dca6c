"""`diff --exhaustive` text: regions one fact a line, everything folded within the width."""
from __future__ import annotations

from click.testing import CliRunner

from engine.cli import main

ARGS = ["diff", "--exhaustive", "--baseline", "on=2017-04-10", "--variant", "on=2017-04-10,alt:important-from-2017-05-16",
        "--max-regions", "1"]


def test_exhaustive_text_folds_within_100_columns_off_a_terminal():
    r = CliRunner().invoke(main, ARGS)
    assert r.exit_code == 1, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    # a region: its size, then one fact a line, a long value folded under its own column
    i = lines.index("    96 vectors where")
    assert lines[i + 1].split()[:2] == ["category", "product_customization"]
    value_column = lines[i + 1].index("product_customization")
    assert lines[i + 2].index("order_info_request") == value_column
    assert lines[i + 4].split() == ["channel", "email", "|", "api"]
    # witness records: a field a line
    w = lines.index("        W:", i)
    assert lines[w + 1].split() == ["message_id", '"W"']
    assert any(line.split() == ["subject", '"[important]"'] for line in lines[w:w + 15])
