"""The second opinion: a linear model over word and character n-grams.

Trained in-process on first use from the labelled corpora that classifier.yaml
names (about a second for the shipped 480 messages); nothing is downloaded and
no weights are shipped. scikit-learn is imported here only, so judging
labelled records never pays for it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import orjson

from ..model import Category
from .features import ClassifierInput

CATEGORIES = tuple(c.value for c in Category)


def read_corpus(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if line.strip():
            row = orjson.loads(line)
            if row.get("category") not in CATEGORIES:
                raise ValueError(f"{path} line {number}: field 'category': {row.get('category')!r} is not a category")
            rows.append(row)
    return rows


class NgramModel:
    """LinearSVC over tf-idf word 1-2-grams and char 2-4-grams; scores → probabilities by softmax."""

    def __init__(self, C: float = 0.5, scale: float = 4.0):
        self.C, self.scale = C, scale
        self._pipeline = None

    def fit(self, inputs: Sequence[ClassifierInput], labels: Sequence[str]) -> "NgramModel":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.svm import LinearSVC

        features = make_union(
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
        )
        self._pipeline = make_pipeline(features, LinearSVC(C=self.C, random_state=0))  # liblinear shuffles: fixed seed, same model every run
        self._pipeline.fit([i.model_text().lower() for i in inputs], list(labels))
        return self

    def probabilities(self, item: ClassifierInput, text: str) -> dict[str, float]:
        scores = self._pipeline.decision_function([item.model_text(text).lower()])[0]
        classes = self._pipeline.classes_
        top = max(scores)
        exp = [math.exp(self.scale * (s - top)) for s in scores]
        total = sum(exp)
        probs = dict.fromkeys(CATEGORIES, 0.0)
        for cls, e in zip(classes, exp):
            probs[str(cls)] = e / total
        return probs
