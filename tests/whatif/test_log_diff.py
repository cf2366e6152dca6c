"""The log diff joins two audits; checked against judging the log directly under each side."""
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.check import load_log
from engine.evaluate import judge_records
from engine.whatif import Side, compare, diff_logs, parse_side, sensitivity
from engine.cli import verdict_json

from ..audit.gen import write

SIDES = ["shipped", "on=2017-03-30", "on=2017-04-01", "alt:guidelines-from-2020-11-06",
         "alt:important-from-2017-05-16", "alt:no-suspension-2017-03-31", "on=2020-11-04"]


def _direct(path, side: Side) -> list[dict]:
    pol = side.load()
    return [verdict_json(v) for v in judge_records(pol, load_log(path, pol).records, at=side.on)]


def test_diff_matches_judging_the_log_under_each_side(small_log, overlays):
    a, b = Side(), parse_side([f"overlay:{overlays['window14']}", "alt:guidelines-from-2020-11-06"])
    d = diff_logs([small_log], a, b)
    expected = [c for c in (compare(x, y) for x, y in zip(_direct(small_log, a), _direct(small_log, b))) if c]
    strip = lambda cs: [{k: v for k, v in c.items() if k != "evaluated_at"} for c in cs]  # noqa: E731
    assert strip(d.changes) == strip(expected)
    assert d.summary.changed == len(expected) > 0
    assert sum(d.summary.transitions.values()) == d.summary.judged


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), a=st.sampled_from(SIDES), b=st.sampled_from(SIDES))
def test_identical_sides_give_an_empty_diff_and_diff_is_a_mirror(tmp_path_factory, seed, a, b):
    path = tmp_path_factory.mktemp("g") / "log.jsonl"
    write(path, 160, seed=seed, start="2017-03-20", end="2021-01-31")
    sa, sb = parse_side([a]), parse_side([b])
    same = diff_logs([path], sa, sa)
    assert same.summary.changed == 0 and not same.changes
    ab, ba = diff_logs([path], sa, sb), diff_logs([path], sb, sa)
    assert ab.summary.changed == ba.summary.changed
    for x, y in zip(ab.changes, ba.changes):
        assert x["message_id"] == y["message_id"]
        assert (x["from"], x["to"]) == (y["to"], y["from"])
        assert (x["appeared"], x["disappeared"]) == (y["disappeared"], y["appeared"])
        assert [(c["rule"], c["from"], c["to"]) for c in x["level_changed"]] == \
               [(c["rule"], c["to"], c["from"]) for c in y["level_changed"]]


def test_cosmetic_overlay_changes_nothing(small_log, overlays):
    d = diff_logs([small_log], Side(), parse_side([f"overlay:{overlays['cosmetic']}"]))
    assert d.summary.changed == 0 and d.summary.judged > 500


def test_sensitivity_flags_exactly_the_messages_an_alternative_changes(small_log):
    s = sensitivity([small_log], alternatives=["guidelines-from-2020-11-06", "no-suspension-2017-03-31"])
    assert s.flagged > 0 and s.judged > 500
    for name in s.alternatives:
        d = diff_logs([small_log], Side(), parse_side([f"alt:{name}"]))
        flagged = {m["message_id"] for m in s.messages if any(a["name"] == name for a in m["alternatives"])}
        assert flagged == {c["message_id"] for c in d.changes}
        assert s.by_alternative[name] == d.summary.changed
