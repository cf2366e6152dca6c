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
        return self.margins_many([doc])[0].tolist()

    def margins_many(self, docs: Sequence[str]):
        """`margins` of each document, as one (documents × classes) array. One document's row
        does not depend on the others (each row is summed alone, in a fixed order), so a
        message scores the same alone (`check`) and in a batch (`audit`)."""
        import numpy as np
        from scipy.sparse import csr_matrix

        scores = np.tile(self._intercept, (len(docs), 1))
        for block, (analyze, columns, idf, coef) in enumerate(self._blocks):
            doc_of, column = (self._char_grams(docs) if analyze is char_wb_ngrams
                              else _lookups(docs, analyze, columns))
            if not len(column):
                continue
            # tf-idf with sublinear tf, l2-normalised per document and block, as TfidfVectorizer does.
            keys, counts = np.unique(doc_of * len(columns) + column, return_counts=True)
            rows, cols = np.divmod(keys, len(columns))
            values = (1.0 + np.log(counts)) * idf[cols]
            values /= np.sqrt(np.bincount(rows, values * values, minlength=len(docs)))[rows]
            starts = np.searchsorted(rows, np.arange(len(docs) + 1))
            scores += csr_matrix((values, cols, starts), shape=(len(docs), len(columns))) @ coef
        return scores

    def _char_grams(self, docs: Sequence[str]):
        """(document, column) of every known character n-gram of `docs`, computed over the
        batch's code points at once: char_wb_ngrams' grams are the windows of 2 to 4
        characters inside each space-padded word, and the padded words of a document laid
        end to end are " " + "  ".join(words) + " "."""
        import numpy as np

        table, codes, code_columns = self._char_index()
        padded = [" " + "  ".join(words) + " " if (words := doc.lower().split()) else "" for doc in docs]
        lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
        points = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        letters = table[points]                       # 0: a character no known n-gram has
        space = points == 32
        word_start = np.zeros(len(points), dtype=bool)
        word_start[1:] = space[1:] & space[:-1]       # the second of two spaces opens the next word
        word_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        word = np.cumsum(word_start)
        doc = np.repeat(np.arange(len(docs)), lengths)
        found_docs, found_codes = [], []
        for n in (2, 3, 4):
            if len(points) < n:
                break
            end = len(points) - n + 1
            inside = word[:end] == word[n - 1:]
            code = np.zeros(end, dtype=np.uint64)
            for k in range(n):
                part = letters[k:end + k]
                inside &= part != 0
                code |= part.astype(np.uint64) << np.uint64(16 * (3 - k))
            found_docs.append(doc[:end][inside])
            found_codes.append(code[inside])
        if not found_codes:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        found_codes, found_docs = np.concatenate(found_codes), np.concatenate(found_docs)
        at = np.minimum(np.searchsorted(codes, found_codes), len(codes) - 1)
        known = codes[at] == found_codes
        return found_docs[known], code_columns[at[known]]

    def _char_index(self):
        """The character block's n-grams as integers: each character of an n-gram is its
        1-based rank among the characters the n-grams use, 16 bits per place (exact: no
        hashing), with a table from code point to rank."""
        cached = self.__dict__.get("_char_index_cache")
        if cached is not None:
            return cached
        import numpy as np

        columns = next(c for analyze, c, _, _ in self._blocks if analyze is char_wb_ngrams)
        alphabet = sorted({ch for term in columns for ch in term})
        if len(alphabet) >= 1 << 16 or any(not 1 <= len(t) <= 4 for t in columns):
            raise ValueError("character n-grams of 1 to 4 characters over fewer than 65,536 characters expected")
        table = np.zeros(0x110000, dtype=np.uint16)
        table[[ord(ch) for ch in alphabet]] = np.arange(1, len(alphabet) + 1)
        term_codes = np.array([sum(int(table[ord(ch)]) << (16 * (3 - k)) for k, ch in enumerate(term))
                               for term in columns], dtype=np.uint64)
        term_columns = np.fromiter(columns.values(), dtype=np.int64, count=len(columns))
        order = np.argsort(term_codes)
        cached = self.__dict__["_char_index_cache"] = (table, term_codes[order], term_columns[order])
        return cached

    def probabilities(self, doc: str) -> dict[str, float]:
        return self.probabilities_many([doc])[0]

    def probabilities_many(self, docs: Sequence[str]) -> list[dict[str, float]]:
        return [self._softmax(row) for row in self.margins_many(docs).tolist()]

    def _softmax(self, scores: list[float]) -> dict[str, float]:
        top = max(scores)
        exp = [math.exp(self.scale * (s - top)) for s in scores]
        total = sum(exp)
        probs = dict.fromkeys(CATEGORIES, 0.0)
        for cls, e in zip(self._classes, exp):
            probs[cls] = e / total
        return probs


def _lookups(docs: Sequence[str], analyze, columns: dict):
    """(document, column) of every known n-gram `analyze` finds in each document."""
    import numpy as np

    found = [np.fromiter(map(columns.get, analyze(doc), repeat(-1)), dtype=np.int64) for doc in docs]
    doc_of = np.repeat(np.arange(len(docs)), [len(f) for f in found])
    column = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
    known = column >= 0
    return doc_of[known], column[known]
