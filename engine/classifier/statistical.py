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

    def fit(self, inputs: Sequence[ClassifierInput], labels: Sequence[str]) -> "NgramModel":
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        self._vectorizers = (
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
        )
        texts = [i.model_text().lower() for i in inputs]
        matrix = hstack([v.fit_transform(texts) for v in self._vectorizers]).tocsr()
        svm = LinearSVC(C=self.C, random_state=0).fit(matrix, list(labels))  # liblinear shuffles: fixed seed
        # Kept as plain arrays: one message is scored without sklearn's per-call pipeline overhead.
        self._coef, self._intercept, self._classes = svm.coef_.T.copy(), svm.intercept_.copy(), [str(c) for c in svm.classes_]
        return self

    def probabilities(self, item: ClassifierInput, text: str) -> dict[str, float]:
        from scipy.sparse import hstack

        doc = [item.model_text(text).lower()]
        row = hstack([v.transform(doc) for v in self._vectorizers]).tocsr()
        scores = (row @ self._coef)[0] + self._intercept
        top = max(scores)
        exp = [math.exp(self.scale * (s - top)) for s in scores]
        total = sum(exp)
        probs = dict.fromkeys(CATEGORIES, 0.0)
        for cls, e in zip(self._classes, exp):
            probs[cls] = e / total
        return probs
