"""A local cache of the trained n-gram model, so only the first run trains it.

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
import os
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

KEEP = 4  # cache files kept (several policy sets or what-if variants may alternate)
_PREFIX = "ngram-model-"
# The code the weights depend on: how a message becomes a document, and how documents become n-grams.
_SOURCES = ("features.py", "statistical.py", "__init__.py", "../detectors.py")
_LIBRARIES = ("scikit-learn", "scipy", "numpy")


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
