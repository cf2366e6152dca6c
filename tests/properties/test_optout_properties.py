"""Properties of the 2017 opt-out family and of the engine (issue 2, (a)-(g))."""
from __future__ import annotations

import datetime as dt
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine import Judge, judge_records, load_policies
from engine.model import Category, Channel, Message, Outcome
from engine.timeline import in_force, local_midnight, marketplaces_of

from .strategies import CATEGORIES, CHANNELS, SUBJECTS, instants, logs, messages

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FAMILY = "2017-optout"
POLICY_SET = load_policies(POLICIES)
SUSPENSION = POLICY_SET.version(FAMILY, "suspension")
ALL_VERSIONS = POLICY_SET.all_versions()


def judge_one(message: Message, evaluator="durable", policies=POLICY_SET, at=None):
    return Judge(policies, evaluator=evaluator).judge(message, at)


def with_opt(message: Message, state) -> Message:
    return message.model_copy(update={"buyer_opted_out": state})


# (a) half-open boundaries -----------------------------------------------------------

@given(st.sampled_from([(v, m) for v in ALL_VERSIONS for m in marketplaces_of(POLICY_SET, v)]),
       st.integers(0, 10**6))
def test_version_owns_its_first_instant_and_not_the_microsecond_before(version_and_market, micro):
    version, market = version_and_market
    start = local_midnight(POLICY_SET, version.effective_from, market)
    assert version in in_force(POLICY_SET, start, market)
    before = start - dt.timedelta(microseconds=1)
    earlier = [v for v in in_force(POLICY_SET, before, market) if v.family == version.family]
    assert version not in earlier
    previous = [v for v in POLICY_SET.families[version.family].versions
                if v.applies_to(market) and v.effective_to is not None and v.effective_to == version.effective_from]
    assert earlier == previous
    # and every instant inside the first day still belongs to it (when the version lasts that long)
    inside = start + dt.timedelta(microseconds=micro)
    if version.effective_to is None or inside < local_midnight(POLICY_SET, version.effective_to, market):
        assert version in in_force(POLICY_SET, inside, market)


# (b) suspension ----------------------------------------------------------------------

@given(st.data())
def test_during_suspension_the_opt_out_changes_nothing(data):
    start = local_midnight(POLICY_SET, SUSPENSION.effective_from, "US")
    end = local_midnight(POLICY_SET, SUSPENSION.effective_to, "US")
    offset = data.draw(st.integers(0, int((end - start).total_seconds() * 10**6) - 1))
    message = data.draw(messages(sent_at=start + dt.timedelta(microseconds=offset), marketplace="US"))
    outcomes = {judge_one(with_opt(message, state)).outcome for state in (True, False, None)}
    assert len(outcomes) == 1


# (c) opt-out monotonicity ------------------------------------------------------------

@given(messages())
def test_opting_out_never_makes_an_outcome_less_severe(message):
    opted_in = judge_one(with_opt(message, False)).outcome
    opted_out = judge_one(with_opt(message, True)).outcome
    assert opted_out >= opted_in


# (d) sanctioned paths ------------------------------------------------------------------

CRITICAL = [c for c, attrs in POLICY_SET.version(FAMILY, "rollout").version.categories.items() if attrs["critical"]]


@given(st.data(), st.sampled_from(["air", "reply", "important"]), st.sampled_from([True, False, None]))
def test_critical_message_on_a_sanctioned_path_is_never_blocked(data, path, opted):
    category = data.draw(st.sampled_from([c.value for c in CRITICAL]))
    end = dt.datetime(2026, 6, 1) if path != "important" else dt.datetime(2025, 4, 23)
    at = data.draw(instants(end=end))
    base = dict(sent_at=at, category=category, buyer_opted_out=opted, buyer_id="B1")
    records = []
    if path == "air":
        message = data.draw(messages(channel="seller_central", subject="Additional Information Required", **base))
    elif path == "important":
        message = data.draw(messages(channel=data.draw(st.sampled_from(["email", "api"])),
                                     subject=data.draw(st.sampled_from(["[Important] x", "x [IMPORTANT]", "[ important ]"])),
                                     **base))
    else:
        question = data.draw(messages(sent_at=at - dt.timedelta(hours=1), buyer_id="B1", message_id="q",
                                      initiated_by="buyer", body="Can you do blue?", category="customer_service_reply"))
        records.append(question)
        message = data.draw(messages(reply_to="q", body="Yes!\n> Can you do blue?", message_id="r", **base))
    records.append(message)
    verdict = judge_records(POLICY_SET, records)[-1]
    assert verdict.outcome is not Outcome.blocked, verdict


# (e) totality ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: v.label)
def test_every_category_channel_subject_and_opt_out_state_gets_one_verdict(version):
    market = marketplaces_of(POLICY_SET, version)[0]
    at = local_midnight(POLICY_SET, version.effective_from, market) + dt.timedelta(hours=12)
    judge = Judge(POLICY_SET)
    count = 0
    for category in CATEGORIES:
        for channel in CHANNELS:
            for subject in SUBJECTS:
                for opted in (True, False, None):
                    message = Message(message_id="t", order_id="o", buyer_id="b", sent_at=at, marketplace=market,
                                      channel=channel, subject=subject, category=category, buyer_opted_out=opted)
                    verdict = judge.judge(message, record=False)
                    assert verdict.outcome in Outcome and verdict.outcome is not Outcome.no_policy
                    assert [(p.policy, p.version) for p in verdict.policies if p.policy == version.family] == [(version.family, version.id)]
                    if verdict.findings:
                        assert verdict.outcome == max(f.outcome for f in verdict.findings)
                    count += 1
    assert count == len(Category) * len(Channel) * len(SUBJECTS) * 3


# (f) rule order ---------------------------------------------------------------------------

@given(rng=st.randoms(use_true_random=False), log=logs(max_size=8))
def test_shuffling_rules_inside_policy_files_never_changes_a_verdict(rng, log):
    with tempfile.TemporaryDirectory() as tmp:
        shuffled_root = Path(tmp)
        shutil.copytree(POLICIES, shuffled_root, dirs_exist_ok=True)
        _shuffle_and_compare(rng, log, shuffled_root)


def _shuffle_and_compare(rng, log, shuffled_root):
    for path in shuffled_root.glob(f"{FAMILY}/*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc.get("rules"):
            rng.shuffle(doc["rules"])
            path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    shuffled = load_policies(shuffled_root)
    expected = judge_records(POLICY_SET, log)
    got = judge_records(shuffled, log)
    assert [v.model_dump() for v in got] == [v.model_dump() for v in expected]


# (g) durable_rules ≡ reference interpreter ----------------------------------------------

@given(logs())
def test_durable_rules_and_reference_agree_on_generated_logs(log):
    durable = judge_records(POLICY_SET, log, evaluator="durable", cache=False)
    reference = judge_records(POLICY_SET, log, evaluator="reference", cache=False)
    assert [v.model_dump() for v in durable] == [v.model_dump() for v in reference]


@given(logs(), st.sampled_from([None, dt.date(2017, 3, 30), dt.date(2017, 4, 1), dt.date(2021, 1, 1)]))
def test_cached_and_uncached_verdicts_are_equal(log, on):
    assert judge_records(POLICY_SET, log, at=on, cache=True) == judge_records(POLICY_SET, log, at=on, cache=False)


def test_five_thousand_orders_and_buyers_in_one_process_match_the_reference():
    """Bounded engine state: 5,000 distinct orders and buyers (the 1,024-sid limit would break a naive design)."""
    rng = random.Random(5000)
    start = dt.datetime(2017, 3, 20, tzinfo=dt.timezone.utc)
    log = []
    for i in range(5000):
        log.append(Message(
            message_id=f"m{i}", order_id=f"111-{i:07d}-{i:07d}", buyer_id=f"buyer-{i}",
            sent_at=start + dt.timedelta(hours=rng.randrange(0, 24 * 3000)),
            marketplace=rng.choice(["US", "UK", "DE", "JP"]), channel=rng.choice(CHANNELS),
            subject=rng.choice(SUBJECTS), category=rng.choice(CATEGORIES),
            buyer_opted_out=rng.choice([True, False, None]),
        ))
    durable = judge_records(POLICY_SET, log, evaluator="durable", cache=False)
    reference = judge_records(POLICY_SET, log, evaluator="reference", cache=False)
    assert len(durable) == 5000
    assert durable == reference
    assert len({v.outcome for v in durable}) >= 4
