"""The pre-trained n-gram model shipped beside classifier.yaml is exactly what a first run trains.

`python -m engine.classifier.modelcache POLICIES` builds it; a policy set uses it only when
its key (data, code, training libraries) matches, else it trains as before, saying so on stderr.
"""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from engine import load_policies
from engine.classifier import Classifier
from engine.classifier import modelcache

from ..conftest import POLICIES


def _policies_copy(tmp_path):
    # Without any shipped model: the copy starts like a fresh clone.
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("ngram-model-*.npz"))
    return target


def _arrays(model):
    out = {"classes": list(model._classes), "intercept": np.asarray(model._intercept)}
    for i, (_, columns, idf, coef) in enumerate(model._blocks):
        out[f"terms{i}"] = sorted(columns, key=columns.__getitem__)
        out[f"idf{i}"], out[f"coef{i}"] = np.asarray(idf), np.asarray(coef)
    return out


def _assert_same_model(a, b):
    left, right = _arrays(a), _arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        if isinstance(left[name], list):
            assert left[name] == right[name], name
        else:
            # bit for bit: the same weights give the same probabilities, hence the same verdicts
            assert left[name].dtype == right[name].dtype and np.array_equal(left[name], right[name]), name


class _NoTraining:
    def __call__(self):
        raise AssertionError("trained although a matching model is shipped")


@pytest.fixture(scope="module")
def trained_from_scratch():
    config = load_policies(POLICIES).classifier
    return Classifier(config)._train_on_corpora()


def test_the_built_model_is_the_one_training_gives(tmp_path, monkeypatch, trained_from_scratch, capsys):
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", "off")  # nothing may come from a cache
    root = _policies_copy(tmp_path)
    assert modelcache.main([str(root)]) == 0
    config = load_policies(root).classifier
    [shipped] = config.directory.glob("ngram-model-*.npz")
    assert shipped == modelcache.shipped_path(config)
    assert shipped.name in capsys.readouterr().out
    _assert_same_model(modelcache.model_for(config, _NoTraining()), trained_from_scratch)


def test_the_model_in_this_checkout_matches_its_data(trained_from_scratch):
    config = load_policies(POLICIES).classifier
    path = modelcache.shipped_path(config)
    if not any(config.directory.glob("ngram-model-*.npz")):
        pytest.skip("no model built in this checkout (python -m engine.classifier.modelcache policies)")
    assert path.is_file(), f"the shipped model is stale: rebuild it with python -m engine.classifier.modelcache policies"
    _assert_same_model(modelcache.model_for(config, _NoTraining()), trained_from_scratch)


class _Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self):
        self.calls += 1
        return self.model


def test_a_model_for_other_data_or_a_damaged_one_is_not_used(tmp_path, monkeypatch, caplog, trained_from_scratch):
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", "off")
    root = _policies_copy(tmp_path)
    config = load_policies(root).classifier
    right = modelcache.shipped_path(config)
    trained_from_scratch.save(config.directory / "ngram-model-0123456789abcdef0123456789abcdef.npz")
    trainer = _Counting(trained_from_scratch)
    with caplog.at_level(logging.WARNING, logger="engine.classifier.modelcache"):
        assert modelcache.model_for(config, trainer) is trained_from_scratch
    assert trainer.calls == 1
    # a first run that trains says so, once, and where the weights go
    [notice] = [r.getMessage() for r in caplog.records]
    assert "training the category model" in notice and "not kept" in notice

    trained_from_scratch.save(right)
    right.write_bytes(right.read_bytes()[:4096])
    assert modelcache.model_for(config, trainer) is trained_from_scratch and trainer.calls == 2
