"""Calibrated candidate sets: split conformal prediction over the blended probabilities.

The nonconformity of category c for a message is 1 - p(c). Calibration scores
are the true categories' nonconformity on messages the scoring model did not
train on: the labelled corpora split into `folds` folds, each scored by a model
trained on the other folds (out-of-fold scores; with the model off, by the
vocabulary alone). The candidate set of a new message holds every category
whose nonconformity is at most the ceil((n + 1)(1 - alpha))-th smallest of
the n calibration scores, so it holds the true category with probability at
least 1 - alpha for a message drawn like the corpora.

The scores are data: `calibration.json` beside classifier.yaml, named by a key
of everything they depend on (vocabulary, corpora, scoring settings, the code
that scores, the training libraries). `python -m engine.classifier.conformal`
rewrites it. When the file is absent or its key differs (a vocabulary edited,
a corpus extended) the scores are recomputed on first use and kept in the
model cache directory, so an edit never runs on stale calibration.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field

# The code the scores depend on (the prefilter is left out: it never changes a score).
_SOURCES = ("features.py", "statistical.py", "__init__.py", "vocabulary.py", "conformal.py", "../detectors.py")
_LIBRARIES = ("scikit-learn", "scipy", "numpy")
_PREFIX = "conformal-"


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(min_length=1)
    folds: int = Field(ge=2)
    # the true category's nonconformity per calibration message, ascending
    scores: list[float] = Field(min_length=1)


def calibration_key(classifier) -> str:
    """Names what the scores depend on; alpha, the ids and language detection are left out."""
    config = classifier.config
    settings = classifier.settings.model_dump(mode="json", exclude={"id", "language_detection"})
    for name in ("alpha", "min_evidence"):  # both act after the scores
        settings["conformal"].pop(name)
    digest = hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS))
    digest.update((config.directory / config.settings.vocabulary).read_bytes())
    for path in config.labelled:
        digest.update(path.read_bytes())
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    if classifier.settings.model.enabled:
        for library in _LIBRARIES:
            digest.update(f"{library}={metadata.version(library)};".encode())
    return digest.hexdigest()[:32]


def quantile(scores: Sequence[float], alpha: float) -> float:
    """The conformal threshold: the ceil((n + 1)(1 - alpha))-th smallest score, or
    infinity (every category a candidate) when there are too few scores for alpha."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if k > n:
        return math.inf
    return sorted(scores)[k - 1]


def out_of_fold_scores(classifier, rows: list[dict], folds: int) -> list[float]:
    """The true category's nonconformity for each row, scored by a model that did not train on it."""
    from .features import ClassifierInput
    from .statistical import fold_of

    items = [ClassifierInput.from_corpus(r) for r in rows]
    truth = [r["category"] for r in rows]
    if not (classifier.settings.model.enabled and classifier.config.training):
        return [1.0 - classifier.probabilities(i)[0][t] for i, t in zip(items, truth)]
    fold = fold_of(rows, folds)
    scores = [0.0] * len(rows)
    for f in range(folds):
        inside = [i for i in range(len(rows)) if fold[i] != f]
        model = classifier.train([items[i] for i in inside], [truth[i] for i in inside])
        scorer = classifier.with_model(model, calibration=())
        for i in (i for i in range(len(rows)) if fold[i] == f):
            scores[i] = 1.0 - scorer.probabilities(items[i])[0][truth[i]]
    return scores


def compute(classifier) -> Calibration:
    from .statistical import read_corpus

    config = classifier.config
    rows = [r for path in config.labelled for r in read_corpus(path)]
    folds = config.settings.conformal.folds
    scores = sorted(out_of_fold_scores(classifier, rows, folds))
    return Calibration(key=calibration_key(classifier), folds=folds, scores=scores)


def read(path: Path) -> Optional[Calibration]:
    from ..policyfile import PolicyError, _validate

    try:
        data = orjson.loads(path.read_bytes())
    except OSError:
        return None
    except orjson.JSONDecodeError as exc:
        raise PolicyError(path, f"not valid JSON: {exc}") from None
    return _validate(Calibration, data, path)


def write(path: Path, calibration: Calibration) -> None:
    handle, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "wb") as out:
        out.write(orjson.dumps(calibration.model_dump()))
        out.write(b"\n")
    os.replace(temporary, path)


def calibration_for(classifier) -> Calibration:
    """The shipped scores when they match the data; else cached ones; else computed (and cached)."""
    from .modelcache import cache_directory

    config = classifier.config
    key = calibration_key(classifier)
    shipped = read(config.calibration_file)
    if shipped is not None and shipped.key == key:
        return shipped
    directory = cache_directory()
    cached = directory / f"{_PREFIX}{key}.json" if directory is not None else None
    if cached is not None:
        try:
            found = read(cached)
            if found is not None and found.key == key:
                return found
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
            pass
    calibration = compute(classifier)
    if cached is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write(cached, calibration)
        except OSError:
            pass  # an unwritable cache costs time, never a result
    return calibration


def main(argv=None) -> int:
    """Recompute policies/classifier/calibration.json (or that of the policies directory given)."""
    from .. import load_policies
    from . import classifier_for

    root = Path(argv[0] if argv else (sys.argv[1] if len(sys.argv) > 1 else "policies"))
    classifier = classifier_for(load_policies(root))
    calibration = compute(classifier)
    write(classifier.config.calibration_file, calibration)
    alpha = classifier.settings.conformal.alpha
    print(f"{classifier.config.calibration_file}: {len(calibration.scores)} scores, {calibration.folds} folds, "
          f"threshold at alpha {alpha}: {quantile(calibration.scores, alpha):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
