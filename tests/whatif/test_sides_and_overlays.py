"""Side specifications (--baseline/--variant) and overlay validation."""
import datetime as dt

import pytest

from engine.policyfile import PolicyError, load_policies
from engine.whatif import Side, SideError, parse_side


def test_items_combine_across_commas_and_repeated_options(overlays):
    side = parse_side([f"on=2017-04-01,alt:guidelines-from-2020-11-06", f"overlay:{overlays['window14']}"])
    assert side.on == dt.date(2017, 4, 1)
    assert side.alternatives == ("guidelines-from-2020-11-06",)
    assert side.overlays == (str(overlays["window14"]),)
    assert side.label.startswith("on=2017-04-01,alt:guidelines-from-2020-11-06,overlay:")
    assert parse_side([]) == Side() and parse_side(["shipped"]).label == "shipped"
    assert parse_side(["on:2017-04-01T10:00:00-07:00"]).on.utcoffset() == dt.timedelta(hours=-7)


@pytest.mark.parametrize("spec,message", [
    (["on=2017-04-01,on=2017-04-02"], "on= given twice"),
    (["when=2017-04-01"], "is not one of"),
    (["on=2017-13-01"], "neither a date"),
    (["on=2017-04-01T10:00:00"], "no UTC offset"),
    (["overlay:/nonexistent/draft.yaml"], "no such file"),
    (["alt:"], "is not one of"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(SideError, match=message):
        parse_side(spec, "--variant")


def test_unknown_alternative_is_a_policy_error():
    with pytest.raises(PolicyError, match="unknown alternative 'nope'"):
        parse_side(["alt:nope"]).load()


def _overlay(tmp_path, text):
    path = tmp_path / "draft.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text,rule,field,message", [
    ("families: {nope: {}}\n", None, "families.nope", "unknown family 'nope'"),
    ("families: {2020-contact-guidelines: {versions: {bse: {}}}}\n", None,
     "families.2020-contact-guidelines.versions.bse", "unknown version 'bse'"),
    ("families: {2020-contact-guidelines: {versions: {base: {colour: red}}}}\n", None,
     "families.2020-contact-guidelines.versions.base.colour", "Extra inputs"),
    ("families:\n  2020-contact-guidelines:\n    versions:\n      base:\n        rules:\n"
     "          - {id: X1, title: t, when: {fact: nope, eq: true}, outcome: violation, reason: r,"
     " sources: [P1], confidence: H}\n", "X1", "when.fact", "unknown fact 'nope'"),
    ("families:\n  2020-contact-guidelines:\n    versions:\n      base:\n        rules: [{title: no id}]\n",
     None, "families.2020-contact-guidelines.versions.base.rules.0.id", "needs a string 'id'"),
    ("families:\n  2017-optout:\n    versions:\n      rollout: {remove_rules: [D99]}\n", "D99", "remove_rules",
     "unknown rule 'D99'"),
    ("families: {}\n", None, "families", "at least 1"),
])
def test_overlay_errors_name_the_overlay_file_rule_and_field(tmp_path, text, rule, field, message):
    path = _overlay(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policies(overlays=[path])
    err = info.value
    assert err.file == str(path), str(err)
    assert err.rule == rule and err.field == field, str(err)
    assert message in str(err)


def test_overlay_changes_parameters_dates_marketplaces_and_rules(tmp_path):
    path = _overlay(tmp_path, """\
sources: {DRAFT-1: {title: our legal team's reading}}
families:
  2020-contact-guidelines:
    versions:
      base:
        effective_from: 2020-11-10
        marketplaces: [US, UK]
        parameters: {window_days: 14}
        remove_rules: [CG2020-SENSITIVE]
        rules:
          - {id: CG2020-STYLE-EMOJI, outcome: allowed}
          - {id: DRAFT-NO-STARS, title: Stars, when: {fact: mentions_review, eq: true}, outcome: violation,
             reason: No stars., sources: [DRAFT-1], confidence: L}
""")
    pol = load_policies(overlays=[path])
    base = pol.version("2020-contact-guidelines", "base")
    assert base.effective_from == dt.date(2020, 11, 10) and base.version.marketplaces == ["US", "UK"]
    assert base.detectors_used["in_window"][1].max_days == 14
    ids = {r.id for r in base.rules}
    assert "CG2020-SENSITIVE" not in ids and "DRAFT-NO-STARS" in ids
    assert base.rule_index["CG2020-STYLE-EMOJI"].rule.outcome.value == "allowed"
    # inherited by the later version too
    later = pol.version("2020-contact-guidelines", "important-retired")
    assert "DRAFT-NO-STARS" in {r.id for r in later.rules}
    assert pol.overlay_names == (str(path),)
