"""Infer a message's category (and language) when the record gives none (issue 8).

The vocabulary's scores (data in policies/classifier/) and, when enabled, a
linear n-gram model trained on the labelled corpus are blended into one
probability per category. The result is either a decided category (its
probability reaches `confident_at`) or an uncertain one with its candidates:
the evaluator then treats the category as an unknown fact whose domain is the
candidates, so uncertainty can never turn into a pass.

Classification reads one message only (subject, body, channel, reply_to,
attachments): it is deterministic and independent of every other message.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
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
    candidates: tuple[tuple[str, float], ...]      # plausible categories, most probable first
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
        self._lock = threading.Lock()

    # -- the statistical second opinion (lazy: loaded from the cache, or trained on first use) --

    def model(self):
        if self._model is not None:
            return self._model
        if not self.settings.model.enabled or not self.config.training:
            return None
        with self._lock:
            if self._model is None:
                from .modelcache import cached_model

                self._model = cached_model(self.config, self._train_on_corpora)
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

    def with_model(self, model) -> "Classifier":
        """A copy using another trained model (the benchmark's cross-validation folds), or None for none."""
        other = Classifier.__new__(Classifier)
        other.__dict__.update(self.__dict__)
        other._lock = threading.Lock()
        other._model = model
        if model is None:
            other.settings = self.settings.model_copy(update={"model": self.settings.model.model_copy(update={"enabled": False})})
        return other

    # -- classification ----------------------------------------------------------------

    def probabilities(self, item: ClassifierInput) -> tuple[dict[str, float], dict, tuple[str, ...]]:
        """Blended probabilities, the vocabulary's scores, and each opinion's first choice."""
        own, features, document = self.reading(item)
        scores = self.scorer.score(own, features)
        t = self.settings.temperature
        top = max(s.value for s in scores.values())
        exp = {c: math.exp((scores[c].value - top) / t) for c in CATEGORIES}
        total = sum(exp.values())
        probs = {c: exp[c] / total for c in CATEGORIES}
        firsts = (_first(probs),)
        model = self.model()
        if model is not None:
            w = self.settings.model.weight
            second = model.probabilities(document)
            firsts += (_first(second),)
            probs = {c: (1 - w) * probs[c] + w * second[c] for c in CATEGORIES}
        return probs, scores, firsts

    def classify(self, item: ClassifierInput) -> Classification:
        probs, scores, firsts = self.probabilities(item)
        ranked = sorted(CATEGORIES, key=lambda c: (-probs[c], _ORDER[c]))
        best = ranked[0]
        candidates = []
        mass = 0.0
        floor = probs[best] * self.settings.candidate_min_share
        for c in ranked:
            if mass >= self.settings.candidate_mass and probs[c] < candidates[-1][1] - 1e-12:
                break
            if candidates and probs[c] < floor:
                break
            candidates.append((c, round(probs[c], 4)))
            mass += probs[c]
        confidence = round(probs[best], 4)
        evidence = tuple(
            (f"feature {span}" if ":" in span or span in _FEATURE_NAMES else span)
            for weight, span in scores[best].evidence if weight > 0
        )[:6]
        decided = best if confidence >= self.settings.confident_at else None
        if self.settings.model.decide_when_agreeing and any(f != best for f in firsts):
            decided = None
        return Classification(decided, best, confidence, tuple(candidates), evidence)

    def classify_message(self, message) -> Classification:
        return self.classify(ClassifierInput.from_message(message))

    def detect_language(self, message) -> tuple[Optional[str], float]:
        from .language import detect_language

        settings = self.settings.language_detection
        return detect_language(ClassifierInput.from_message(message).text, tuple(settings.languages),
                               settings.min_confidence, settings.accuracy)


def _first(probs: dict[str, float]) -> str:
    return min(CATEGORIES, key=lambda c: (-probs[c], _ORDER[c]))


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
