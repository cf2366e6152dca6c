"""The trained n-gram model: shipped beside the classifier's files, else cached, else trained.

A policy set may ship the trained weights (`ngram-model-<key>.npz` beside
classifier.yaml, built by `python -m engine.classifier.modelcache POLICIES`,
which trains exactly as a first run would); the file is used only when its key
matches the data, code and libraries at hand. Otherwise the first run trains
and announces it on standard error, and keeps the weights in a local cache.

Training takes about 4 s and importing scikit-learn another 1.4 s: without a
cache, every `check` or `classify` of a raw record paid both. The cache file
is named after everything the weights depend on (the classifier's files with
its settings, the code that builds and scores the documents, and the
versions of the training libraries), so a changed corpus, setting or library
trains anew and a stale file is never read. Files are plain numpy arrays,
loaded without pickle.

`MSGPOLICY_CACHE_DIR` names the directory (default: the user cache directory);
`MSGPOLICY_CACHE_DIR=off` turns the cache off.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

KEEP = 4  # cache files kept (several policy sets or what-if variants may alternate)
_PREFIX = "ngram-model-"
# The code the weights depend on: how a message becomes a document, and how documents become n-grams.
_SOURCES = ("features.py", "statistical.py", "__init__.py", "../detectors.py")
_LIBRARIES = ("scikit-learn", "scipy", "numpy")
_LOG = logging.getLogger(__name__)


def cache_directory() -> Optional[Path]:
    value = os.environ.get("MSGPOLICY_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in ("", "off") else Path(value)
    import platformdirs

    return Path(platformdirs.user_cache_dir("msgpolicy", appauthor=False))


def model_key(config) -> str:
    digest = hashlib.sha256()
    digest.update(config.digest.encode())  # classifier.yaml (so every setting), vocabulary, corpora
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    for library in _LIBRARIES:
        digest.update(f"{library}={metadata.version(library)};".encode())
    return digest.hexdigest()[:32]


def shipped_path(config) -> Path:
    """Where a policy set keeps its pre-trained model for this configuration."""
    return config.directory / f"{_PREFIX}{model_key(config)}.npz"


def model_for(config, train: Callable[[], "NgramModel"]) -> "NgramModel":  # noqa: F821
    """The shipped model when it matches this configuration; else the cached or a newly trained one."""
    from .statistical import NgramModel

    settings = config.settings.model
    try:
        return NgramModel.load(shipped_path(config), settings.C, settings.scale)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # none shipped for this data, code and libraries

    def announced():
        # A logged warning reaches standard error even when nothing configured logging.
        directory = cache_directory()
        kept = f"kept in {directory} for later runs" if directory is not None else "not kept (MSGPOLICY_CACHE_DIR=off)"
        _LOG.warning("msgpolicy: training the category model for records without a category "
                     "(once, about 10 s; %s)", kept)
        return train()

    return cached_model(config, announced)


def cached_model(config, train: Callable[[], "NgramModel"]) -> "NgramModel":  # noqa: F821
    """The model for this configuration: loaded from the cache, or trained (and then cached)."""
    from .statistical import NgramModel

    directory = cache_directory()
    settings = config.settings.model
    if directory is None:
        return train()
    path = directory / f"{_PREFIX}{model_key(config)}.npz"
    try:
        model = NgramModel.load(path, settings.C, settings.scale)
        os.utime(path)  # recently used: kept by the pruning below
        return model
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, unreadable or of another layout: train and replace it
    model = train()
    _store(model, directory, path)
    return model


def _store(model, directory: Path, path: Path) -> None:
    # A cache that cannot be written (read-only home, full disk) costs time, never a result.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=directory)
        os.close(handle)
        try:
            model.save(Path(temporary))
            os.replace(temporary, path)  # atomic: concurrent workers never read half a file
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        older = sorted(directory.glob(f"{_PREFIX}*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
        for stale in older:
            stale.unlink(missing_ok=True)
    except OSError:
        pass


def main(argv=None) -> int:
    """Train the model of a policy set (default: policies) and ship it beside its classifier.yaml."""
    from .. import load_policies
    from . import Classifier

    root = Path(argv[0] if argv else "policies")
    config = load_policies(root).classifier
    if config is None:
        print(f"{root}: no classifier (classifier/classifier.yaml): nothing to ship", file=sys.stderr)
        return 2
    classifier = Classifier(config)  # not classifier_for: an equal policy set elsewhere must not be reused
    if not (config.settings.model.enabled and config.training):
        print(f"{config.directory}: the model is off (model.enabled) or has no corpus: nothing to ship")
        return 0
    start = time.perf_counter()
    model = classifier._train_on_corpora()
    path = shipped_path(config)
    temporary = path.with_suffix(".tmp")
    model.save(temporary)
    os.replace(temporary, path)
    for stale in config.directory.glob(f"{_PREFIX}*.npz"):
        if stale != path:
            stale.unlink()  # a model for data that has since changed is never read: leave none behind
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, trained in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
