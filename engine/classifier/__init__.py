"""Infer a message's category (and language) when the record gives none.

The vocabulary's scores (data in policies/classifier/) and, when enabled, a
linear n-gram model trained on the labelled corpus are blended into one
probability per category. The candidate set is calibrated by split conformal
prediction (conformal.py): it holds the true category with probability at least
1 - alpha. A set of one category is decided; a larger one leaves the category
uncertain among its members: the evaluator then treats the category as an
unknown fact whose domain is the candidates, so uncertainty can never turn into
a pass.

Classification reads one message only (subject, body, channel, reply_to,
attachments): it is deterministic and independent of every other message.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from itertools import repeat
from typing import Optional

from ..model import Category
from .config import ClassifierConfig, load_classifier_config
from .features import ClassifierInput, model_document
from .vocabulary import VocabularyScorer

CATEGORIES = tuple(c.value for c in Category)
_ORDER = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass(frozen=True)
class Classification:
    category: Optional[str]                        # decided category; None when not confident
    best: str                                      # the most probable category
    confidence: float                              # its blended probability
    candidates: tuple[tuple[str, float], ...]      # the conformal set, most probable first
    evidence: tuple[str, ...]                      # quoted phrases and features behind `best`

    @property
    def confident(self) -> bool:
        return self.category is not None

    def describe_evidence(self) -> str:
        return "; ".join(f"“{e}”" if not e.startswith("feature ") else e for e in self.evidence) or "no phrase matched"


class Classifier:
    def __init__(self, config: ClassifierConfig):
        self.config = config
        self.settings = config.settings
        self.scorer = VocabularyScorer(config.vocabulary)
        starts = self.settings.quoted_reply_starts
        self._quote_starts = re.compile("|".join(f"(?:{p})" for p in starts), re.I | re.M) if starts else None
        self._model = None
        self._calibration = None   # sorted nonconformity scores (conformal.py), loaded on first use
        self._threshold = None
        self._lock = threading.Lock()
        self._calibration_lock = threading.Lock()  # computing the calibration trains models (takes _lock)

    # -- the statistical second opinion (lazy: the shipped model, the cached one, or trained on first use) --

    def model(self):
        if self._model is not None:
            return self._model
        if not self.settings.model.enabled or not self.config.training:
            return None
        with self._lock:
            if self._model is None:
                from .modelcache import model_for

                self._model = model_for(self.config, self._train_on_corpora)
        return self._model

    def _train_on_corpora(self):
        from .statistical import read_corpus

        rows = [r for path in self.config.training for r in read_corpus(path)]
        return self.train([ClassifierInput.from_corpus(r) for r in rows], [r["category"] for r in rows])

    def train(self, items, labels):
        """A statistical model trained on these inputs (what the engine does on first use)."""
        from .statistical import NgramModel

        model = NgramModel(self.settings.model.C, self.settings.model.scale)
        return model.fit([self.reading(i)[2] for i in items], labels)

    def reading(self, item: ClassifierInput) -> tuple[str, set[str], str]:
        """What both opinions read: the seller's own words, the message's features, and
        the model's document made of both."""
        own = item.own_text(self._quote_starts)
        features = item.features(item.text)
        return own, features, model_document(own, features)

    def with_model(self, model, calibration=None) -> "Classifier":
        """A copy using another trained model (the benchmark's cross-validation folds), or None for
        none, with these calibration scores (None: its own, computed on first use; (): none yet,
        for scoring the calibration itself)."""
        other = Classifier.__new__(Classifier)
        other.__dict__.update(self.__dict__)
        other._lock = threading.Lock()
        other._calibration_lock = threading.Lock()
        other._model = model
        other._calibration = tuple(calibration) if calibration is not None else None
        other._threshold = None
        if model is None:
            other.settings = self.settings.model_copy(update={"model": self.settings.model.model_copy(update={"enabled": False})})
        return other

    # -- the conformal threshold ---------------------------------------------------------

    def calibration(self) -> tuple[float, ...]:
        if self._calibration is None:
            with self._calibration_lock:
                if self._calibration is None:
                    from .conformal import calibration_for

                    self._calibration = tuple(calibration_for(self).scores)
        return self._calibration

    def threshold(self) -> float:
        """Largest nonconformity (1 - probability) a candidate may have."""
        if self._threshold is None:
            from .conformal import quantile

            scores = self.calibration()
            self._threshold = quantile(scores, self.settings.conformal.alpha) if scores else math.inf
        return self._threshold

    # -- classification ----------------------------------------------------------------

    def probabilities(self, item: ClassifierInput) -> tuple[dict[str, float], dict, tuple[str, ...]]:
        """Blended probabilities, the vocabulary's scores, and each opinion's first choice."""
        return self.probabilities_many([item])[0]

    def probabilities_many(self, items) -> list[tuple[dict[str, float], dict, tuple[str, ...]]]:
        """`probabilities` of each item; the model scores them together (one item's answer does
        not depend on the others)."""
        readings = [self.reading(item) for item in items]
        model = self.model()
        seconds = model.probabilities_many([r[2] for r in readings]) if model is not None else repeat(None)
        return [self._blend(own, features, second) for (own, features, _), second in zip(readings, seconds)]

    def _blend(self, own: str, features: set[str], second: Optional[dict]):
        scores = self.scorer.score(own, features)
        t = self.settings.temperature
        top = max(s.value for s in scores.values())
        exp = {c: math.exp((scores[c].value - top) / t) for c in CATEGORIES}
        total = sum(exp.values())
        probs = {c: exp[c] / total for c in CATEGORIES}
        firsts = (_first(probs),)
        if second is not None:
            settings = self.settings.model
            w = settings.weight
            firsts += (_first(second),)
            if settings.blend == "linear":
                probs = {c: (1 - w) * probs[c] + w * second[c] for c in CATEGORIES}
            else:
                t = settings.blend_temperature
                logs = {c: ((1 - w) * math.log(probs[c] + _TINY) + w * math.log(second[c] + _TINY)) / t
                        for c in CATEGORIES}
                top = max(logs.values())
                exp = {c: math.exp(logs[c] - top) for c in CATEGORIES}
                total = sum(exp.values())
                probs = {c: exp[c] / total for c in CATEGORIES}
        return probs, scores, firsts

    def classify(self, item: ClassifierInput) -> Classification:
        return self.classify_many([item])[0]

    def classify_many(self, items, chunk: int = 2048) -> list[Classification]:
        """`classify` of each item, the model scoring `chunk` items at a time."""
        out = []
        for start in range(0, len(items), chunk):
            out.extend(self._decide(probs, scores)
                       for probs, scores, _ in self.probabilities_many(items[start:start + chunk]))
        return out

    def _decide(self, probs: dict[str, float], scores: dict) -> Classification:
        ranked = sorted(CATEGORIES, key=lambda c: (-probs[c], _ORDER[c]))
        best = ranked[0]
        # The conformal set (a hair of tolerance only ever adds a candidate). An empty set
        # says no category fits as well as the calibration's: the category is unknown.
        floor = 1.0 - self.threshold() - 1e-12
        members = [c for c in ranked if probs[c] >= floor] or list(ranked)
        if max(s.value for s in scores.values()) < self.settings.conformal.min_evidence:
            # Too little evidence to be like the calibration's messages: every category stays
            # a candidate that the vocabulary does not count against (a negative score).
            members = [c for c in ranked if scores[c].value >= 0] or list(ranked)
        confidence = round(probs[best], 4)
        evidence = tuple(
            (f"feature {span}" if ":" in span or span in _FEATURE_NAMES else span)
            for weight, span in scores[best].evidence if weight > 0
        )[:6]
        decided = best if len(members) == 1 else None
        return Classification(decided, best, confidence, tuple((c, round(probs[c], 4)) for c in members), evidence)

    def classify_message(self, message) -> Classification:
        return self.classify(ClassifierInput.from_message(message))

    def detect_language(self, message) -> tuple[Optional[str], float]:
        from .language import detect_language

        settings = self.settings.language_detection
        return detect_language(ClassifierInput.from_message(message).text, tuple(settings.languages),
                               settings.min_confidence, settings.accuracy)


def _first(probs: dict[str, float]) -> str:
    return min(CATEGORIES, key=lambda c: (-probs[c], _ORDER[c]))


_TINY = 1e-12  # keeps log() finite for a category an opinion rules out entirely
_FEATURE_NAMES = {"reply_to", "quoted_text", "reply_subject", "proactive", "short", "long", "order_id"}

_classifiers: dict[str, Classifier] = {}
_lock = threading.Lock()


def classifier_for(policies) -> Classifier:
    """The classifier shipped with a policy set (policies/classifier/), built once per content."""
    config = policies.classifier
    if config is None:
        from ..policyfile import PolicyError

        raise PolicyError(policies.root / "classifier", "no classifier here (classifier.yaml): "
                          "records without a category cannot be judged")
    with _lock:
        found = _classifiers.get(config.digest)
        if found is None:
            found = _classifiers[config.digest] = Classifier(config)
    return found


__all__ = ["Classification", "Classifier", "ClassifierInput", "classifier_for", "load_classifier_config"]
