"""The second opinion: a linear model over word and character n-grams.

Trained in-process on first use from the labelled corpora that classifier.yaml
names (about a second for the shipped ~540 messages); nothing is downloaded and
no weights are shipped. scikit-learn is imported here only, so judging
labelled records never pays for it.
"""
from __future__ import annotations

import math
from collections import Counter
from itertools import repeat
from pathlib import Path
from typing import Sequence

import orjson

from ..model import Category

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
    """LinearSVC over tf-idf word 1-2-grams and char 2-4-grams; margins → probabilities by softmax."""

    def __init__(self, C: float = 0.5, scale: float = 4.0):
        self.C, self.scale = C, scale

    def fit(self, documents: Sequence[str], labels: Sequence[str]) -> "NgramModel":
        """Train on model documents (features.model_document), one label each."""
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        vectorizers = (
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
        )
        matrix = hstack([v.fit_transform(documents) for v in vectorizers]).tocsr()
        svm = LinearSVC(C=self.C, random_state=0).fit(matrix, list(labels))  # liblinear shuffles: fixed seed
        self._classes = [str(c) for c in svm.classes_]
        # One message is scored in plain Python from these (sklearn's transform costs
        # ~2 ms a call in validation and sparse bookkeeping): per block, the analyzer,
        # each n-gram's idf and its column of class weights.
        coef = svm.coef_.T
        self._blocks = []
        offset = 0
        for v in vectorizers:
            columns = dict(v.vocabulary_)
            self._blocks.append((v.build_analyzer(), columns, v.idf_.copy(), coef[offset:offset + len(columns)].copy()))
            offset += len(columns)
        self._intercept = svm.intercept_.copy()
        return self

    def margins(self, doc: str) -> list[float]:
        """The SVM's decision value per class (order of `_classes`), as sklearn would compute it."""
        import numpy as np

        scores = self._intercept.copy()
        for analyze, columns, idf, coef in self._blocks:
            # tf-idf with sublinear tf, l2-normalised per block, as TfidfVectorizer does
            # (n-grams in order of first occurrence: a fixed summation order).
            grams = Counter(analyze(doc))
            # Column of each n-gram (-1: not in the vocabulary), looked up in C by map/fromiter.
            index = np.fromiter(map(columns.get, grams, repeat(-1)), dtype=np.intp, count=len(grams))
            known = index >= 0
            if not known.any():
                continue
            index = index[known]
            counts = np.fromiter(grams.values(), dtype=float, count=len(grams))[known]
            values = (1.0 + np.log(counts)) * idf[index]
            values /= math.sqrt(float(values @ values))
            scores += values @ coef[index]
        return scores.tolist()

    def probabilities(self, doc: str) -> dict[str, float]:
        scores = self.margins(doc)
        top = max(scores)
        exp = [math.exp(self.scale * (s - top)) for s in scores]
        total = sum(exp)
        probs = dict.fromkeys(CATEGORIES, 0.0)
        for cls, e in zip(self._classes, exp):
            probs[cls] = e / total
        return probs
