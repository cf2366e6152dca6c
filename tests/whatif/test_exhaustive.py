"""The exhaustive diff: sound regions, exact counts, witnesses that `msgpolicy check` reproduces."""
import itertools
from collections import Counter

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.evaluate import Judge
from engine.exhaustive import Space, contexts, exhaustive_diff
from engine.whatif import Side, parse_side

# Pairs whose differences stay in the 2017 family, small enough to explore many times in a test run
# (a side judged as sent against a fixed date would also compare the 2020 guidelines with nothing).
AS_SENT = ["shipped", "alt:important-from-2017-05-16", "alt:no-suspension-2017-03-31", "alt:opt-out-from-2017-05-15",
           "alt:handmade-exemption"]
FIXED = ["on=2017-03-30", "on=2017-04-01", "on=2017-04-10", "on=2016-12-01", "on=2018-03-01",
         "on=2017-03-30,alt:handmade-exemption"]
PAIRS = st.one_of(st.tuples(st.sampled_from(AS_SENT), st.sampled_from(AS_SENT)),
                  st.tuples(st.sampled_from(FIXED), st.sampled_from(FIXED)))


def _rows(d):
    return sorted((r.kind, r.context, tuple(sorted(r.label.items())), r.vectors) for r in d.outcomes + d.rules)


def _mirror(rows):
    out = []
    for kind, ctx, label, n in rows:
        lab = dict(label)
        lab["from"], lab["to"] = lab["to"], lab["from"]
        out.append((kind, ctx, tuple(sorted(lab.items())), n))
    return sorted(out)


@settings(max_examples=4, deadline=None)
@given(pair=PAIRS)
def test_identical_is_empty_and_diff_is_a_mirror(pair):
    sa, sb = parse_side([pair[0]]), parse_side([pair[1]])
    same = exhaustive_diff(sa, sa, witnesses=False)
    assert not same.differs and not same.outcomes and not same.rules
    ab = exhaustive_diff(sa, sb, witnesses=False)
    ba = exhaustive_diff(sb, sa, witnesses=False)
    assert _mirror(_rows(ab)) == _rows(ba)
    assert ab.space["vectors"] == ba.space["vectors"]


def test_cosmetic_overlay_has_no_difference_even_over_the_2020_space(overlays):
    d = exhaustive_diff(Side(), parse_side([f"overlay:{overlays['cosmetic']}"]))
    assert d.space["differing_contexts"] >= 2  # the version files differ ...
    assert not d.differs  # ... but no message is judged differently


def test_counts_equal_brute_force_over_every_class():
    """Every point of the (class-merged) space judged by the engine; counts weighted by class size."""
    sa, sb = parse_side(["on=2017-03-30"]), parse_side(["on=2017-04-01"])
    pa, pb = sa.load(), sb.load()
    (ctx,), _ = contexts(pa, pb, sa.on, sb.on)
    space = Space(ctx, pa, pb, sa, sb)
    judges = (Judge(pa), Judge(pb))
    brute: Counter = Counter()
    for point in itertools.product(*(range(len(d.classes)) for d in space.dims)):
        va, vb = space.verdicts(point, judges)
        if va.outcome != vb.outcome:
            weight = 1
            for d, c in zip(space.dims, point):
                weight *= len(d.classes[c])
            brute[(va.outcome.value, vb.outcome.value)] += weight
    d = exhaustive_diff(sa, sb, verify_leaves=True)
    assert {(r.label["from"], r.label["to"]): r.vectors for r in d.outcomes} == dict(brute)
    assert d.space["vectors"] == space.raw_size == 20 * 4 * 2 * 3 * 4 * 2 * 2 * 2


def _check(records, side: Side, tmp_path):
    path = tmp_path / "witness.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    args = ["check", str(path), "--format", "json"]
    if side.on is not None:
        args += ["--on", side.on.isoformat()]
    for a in side.alternatives:
        args += ["--alt", a]
    for o in side.overlays:
        args += ["--overlay", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output
    verdicts = [orjson.loads(l) for l in result.stdout.splitlines()]
    return next(v for v in verdicts if v["message_id"] == "W")


@pytest.mark.parametrize("a,b", [
    (["on=2017-03-30"], ["on=2017-04-01"]),
    ([], ["alt:guidelines-from-2020-11-06"]),
    ([], ["window14"]),
])
def test_every_witness_reproduces_its_change_under_msgpolicy_check(a, b, overlays, tmp_path):
    sides = [parse_side([f"overlay:{overlays[x]}" if x in overlays else x for x in spec]) for spec in (a, b)]
    d = exhaustive_diff(*sides, max_regions=1)
    assert d.differs
    checked = 0
    for row in d.outcomes[:4] + d.rules[:4]:
        for region in row.regions[:1]:
            assert region.verified and region.witness, (row.label, region.where)
            va, vb = (_check(region.witness, s, tmp_path) for s in sides)
            if row.kind == "outcome":
                assert (va["outcome"], vb["outcome"]) == (row.label["from"], row.label["to"])
            else:
                rules = [{f"{f['policy']}/{f['rule']}" for f in v["findings"]} for v in (va, vb)]
                present = [row.label["rule"] in r for r in rules]
                assert present == [row.label["from"] == "present", row.label["to"] == "present"]
            checked += 1
    assert checked >= 2


