"""Conformal candidate sets: the quantile, the shipped calibration, recalibration after an edit."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine import load_policies
from engine.classifier import ClassifierInput, classifier_for, conformal
from engine.classifier.statistical import read_corpus
from engine.policyfile import PolicyError

from ..conftest import POLICIES


@pytest.fixture(scope="module")
def clf(policies):
    return classifier_for(policies)


def test_quantile_is_the_finite_sample_order_statistic():
    scores = [i / 100 for i in range(100)]  # 0.00 … 0.99, given unsorted below
    shuffled = scores[::2] + scores[1::2]
    assert conformal.quantile(shuffled, 0.1) == scores[math.ceil(101 * 0.9) - 1]  # the 91st smallest
    assert conformal.quantile(shuffled, 0.01) == scores[-1]  # ceil(101 * 0.99) = 100
    assert conformal.quantile(scores[:98], 0.01) == math.inf  # too few scores for alpha: no category left out
    assert conformal.quantile(scores, 0.2) <= conformal.quantile(scores, 0.1)


def test_sets_cover_one_minus_alpha_on_exchangeable_data():
    """The guarantee itself, on simulated probabilities: calibrated on one half, the sets hold
    the true class at least 1 - alpha of the time on the other (averaged over 200 splits)."""
    rng = np.random.default_rng(0)
    n, k, alpha = 400, 6, 0.05
    covered = []
    for _ in range(200):
        logits = rng.normal(size=(2 * n, k)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        truth = np.array([rng.choice(k, p=p) for p in probs])
        calibration, test = slice(0, n), slice(n, 2 * n)
        q = conformal.quantile((1 - probs[calibration][np.arange(n), truth[calibration]]).tolist(), alpha)
        covered.append(np.mean(1 - probs[test][np.arange(n), truth[test]] <= q))
    assert np.mean(covered) >= 1 - alpha - 0.005


def test_the_shipped_calibration_matches_the_data(clf):
    """calibration.json was computed from exactly these corpora, vocabulary, settings and code
    (rerun `python -m engine.classifier.conformal` after changing any of them)."""
    shipped = conformal.read(clf.config.calibration_file)
    assert shipped is not None and shipped.key == conformal.calibration_key(clf)
    assert len(shipped.scores) == sum(len(read_corpus(p)) for p in clf.config.labelled)
    assert shipped.scores == sorted(shipped.scores) and 0 <= shipped.scores[0] and shipped.scores[-1] <= 1
    assert clf.threshold() == conformal.quantile(shipped.scores, clf.settings.conformal.alpha)
    assert f"policies/classifier/{clf.settings.conformal.calibration}" in clf.config.sources


def _vocabulary_only(tmp_path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    path = root / "classifier" / "classifier.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["model"]["enabled"] = False
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return root


def test_stale_calibration_is_recomputed_then_cached(tmp_path, monkeypatch):
    """A vocabulary edit makes the shipped scores stale: they are recomputed (here by the
    vocabulary alone, the model being off), kept in the cache, and loaded from it next time."""
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", str(tmp_path / "cache"))
    root = _vocabulary_only(tmp_path)
    path = root / "classifier" / "vocabulary.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["categories"]["marketing"]["terms"].append({"weight": 8, "en": ["zorblax"]})
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    edited = classifier_for(load_policies(root))
    shipped = conformal.read(edited.config.calibration_file)
    assert shipped.key != conformal.calibration_key(edited)
    first = edited.calibration()
    assert len(first) == len(shipped.scores) and list(first) != shipped.scores
    assert len(list((tmp_path / "cache").glob("conformal-*.json"))) == 1

    def fail(_):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(conformal, "compute", fail)
    again = classifier_for(load_policies(root)).with_model(None)
    assert again.calibration() == first
    assert again.classify(ClassifierInput("Zorblax", "Zorblax quux.")).best == "marketing"


def test_calibration_file_errors_name_file_and_field(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    path = root / "classifier" / "calibration.json"
    data = json.loads(path.read_text())
    data["scores"] = ["high"]
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError) as info:
        classifier_for(load_policies(root)).calibration()
    assert info.value.file == str(path) and info.value.field.startswith("scores")
    path.write_text("{not json")
    with pytest.raises(PolicyError) as info:
        classifier_for(load_policies(root)).calibration()
    assert info.value.file == str(path) and "not valid JSON" in str(info.value)


def test_alpha_is_a_setting(tmp_path, clf):
    """A larger alpha leaves more categories out (a lower threshold), on the same scores."""
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    path = root / "classifier" / "classifier.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["conformal"]["alpha"] = 0.1
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    looser = classifier_for(load_policies(root))
    assert looser.calibration() == clf.calibration()  # alpha is not part of the calibration's key
    assert looser.threshold() < clf.threshold()
    doc["conformal"]["alpha"] = 1.5
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(root)
    assert info.value.field == "conformal.alpha"
