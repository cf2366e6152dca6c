"""The second opinion: a linear model over word and character n-grams.

Trained in-process from the labelled corpora that classifier.yaml names (about
5 s for the shipped 2,300 messages); nothing is downloaded. The weights a
checkout builds (`python -m engine.classifier.modelcache`) ship beside the
corpora, and those a first run trains are kept in a local cache (modelcache.py),
so later runs load them instead of training. scikit-learn is imported for
training only: scoring uses the analyzers below and numpy, so neither a
labelled record nor a cached model pays for its import (~1.4 s).
"""
from __future__ import annotations

import math
import re
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


def fold_of(rows: list[dict], k: int, seed: int = 0) -> list[int]:
    """Fold of each row, stratified by (category, language), deterministic for a seed."""
    import random

    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["category"], r.get("language") or "?"), []).append(i)
    fold = [0] * len(rows)
    rng = random.Random(seed)
    offset = 0
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold[i] = (offset + j) % k
        offset += len(members)
    return fold


# The n-grams of scikit-learn's TfidfVectorizer(analyzer="word", ngram_range=(1, 2),
# token_pattern=r"(?u)\b\w+\b") and (analyzer="char_wb", ngram_range=(2, 4)), in
# the same order; the model is trained with these very functions.
# tests/unit/test_classifier.py compares them with scikit-learn's on the corpora.
_TOKEN = re.compile(r"(?u)\b\w+\b")
_SPACE_RUNS = re.compile(r"\s\s+")


def word_ngrams(doc: str) -> list[str]:
    """Lower-cased word unigrams, then bigrams."""
    tokens = _TOKEN.findall(doc.lower())
    grams = list(tokens)
    grams.extend(map(" ".join, zip(tokens, tokens[1:])))
    return grams


def char_wb_ngrams(doc: str) -> list[str]:
    """Lower-cased character 2-4-grams inside each space-padded word."""
    grams = []
    append = grams.append
    for word in _SPACE_RUNS.sub(" ", doc.lower()).split():
        word = f" {word} "
        length = len(word)
        for n in (2, 3, 4):
            offset = 0
            append(word[:n])
            while offset + n < length:
                offset += 1
                append(word[offset:offset + n])
            if offset == 0:  # a word shorter than n counts once
                break
    return grams


ANALYZERS = (word_ngrams, char_wb_ngrams)
MIN_DF = (1, 2)


class NgramModel:
    """LinearSVC over tf-idf word 1-2-grams and char 2-4-grams; margins → probabilities by softmax."""

    def __init__(self, C: float = 0.5, scale: float = 4.0):
        self.C, self.scale = C, scale

    def fit(self, documents: Sequence[str], labels: Sequence[str]) -> "NgramModel":
        """Train on model documents (features.model_document), one label each."""
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        vectorizers = [TfidfVectorizer(analyzer=analyze, sublinear_tf=True, min_df=min_df)
                       for analyze, min_df in zip(ANALYZERS, MIN_DF)]
        matrix = hstack([v.fit_transform(documents) for v in vectorizers]).tocsr()
        svm = LinearSVC(C=self.C, random_state=0).fit(matrix, list(labels))  # liblinear shuffles: fixed seed
        self._classes = [str(c) for c in svm.classes_]
        # One message is scored in plain Python from these (sklearn's transform costs
        # ~2 ms a call in validation and sparse bookkeeping): per block, the analyzer,
        # each n-gram's idf and its column of class weights.
        coef = svm.coef_.T
        self._blocks = []
        offset = 0
        for analyze, v in zip(ANALYZERS, vectorizers):
            columns = dict(v.vocabulary_)
            self._blocks.append((analyze, columns, v.idf_.copy(), coef[offset:offset + len(columns)].copy()))
            offset += len(columns)
        self._intercept = svm.intercept_.copy()
        return self

    # -- the trained weights as plain arrays (no pickle: a cache file is data, never code) --

    def save(self, path: Path) -> None:
        import numpy as np

        arrays = {"classes": np.array(self._classes), "intercept": self._intercept}
        for i, (_, columns, idf, coef) in enumerate(self._blocks):
            arrays[f"terms{i}"] = np.array(sorted(columns, key=columns.__getitem__))
            arrays[f"idf{i}"], arrays[f"coef{i}"] = idf, coef
        with open(path, "wb") as out:
            np.savez(out, **arrays)

    @classmethod
    def load(cls, path: Path, C: float, scale: float) -> "NgramModel":
        import numpy as np

        model = cls(C, scale)
        with np.load(path, allow_pickle=False) as arrays:
            model._classes = [str(c) for c in arrays["classes"].tolist()]
            model._intercept = arrays["intercept"]
            model._blocks = []
            for i, analyze in enumerate(ANALYZERS):
                terms = arrays[f"terms{i}"].tolist()
                coef = arrays[f"coef{i}"]
                if coef.shape != (len(terms), len(model._classes)):
                    raise ValueError(f"{path}: coef{i} has shape {coef.shape}")
                model._blocks.append((analyze, dict(zip(terms, range(len(terms)))), arrays[f"idf{i}"], coef))
        return model

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
