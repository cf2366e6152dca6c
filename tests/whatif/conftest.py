from pathlib import Path

import pytest

from ..audit.gen import write

WINDOW_14 = """\
title: review window of 14 days
families:
  2020-contact-guidelines:
    versions:
      base: {parameters: {window_days: 14}}
"""

# Changes only words no rule reads: every message must be judged alike.
COSMETIC = """\
title: reworded
families:
  2017-optout:
    versions:
      rollout: {title: "Opt-out rollout (reworded)"}
  2020-contact-guidelines:
    versions:
      base: {summary: "Reworded summary."}
"""


@pytest.fixture(scope="session")
def overlays(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("overlays")
    out = {}
    for name, text in (("window14", WINDOW_14), ("cosmetic", COSMETIC)):
        path = root / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


@pytest.fixture(scope="session")
def small_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whatif") / "log.jsonl"
    write(path, 700, seed=5, start="2017-03-01", end="2021-06-30")
    return path
