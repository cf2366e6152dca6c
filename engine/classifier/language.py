"""Language of a message text, with lingua (models ship inside the package).

Imported only when a record lacks `language`; the detector is built once per
set of languages. Below the configured confidence the language stays unknown:
a guess never becomes a fact.
"""
from __future__ import annotations

from typing import Optional

_detectors: dict[tuple, object] = {}


def _build(languages: tuple[str, ...], accuracy: str, preloaded: bool):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    chosen = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in languages]
    builder = LanguageDetectorBuilder.from_languages(*chosen)
    if accuracy == "low":
        builder = builder.with_low_accuracy_mode()
    return (builder.with_preloaded_language_models() if preloaded else builder).build()


def _detector(languages: tuple[str, ...], accuracy: str):
    found = _detectors.get((languages, accuracy))
    if found is None:
        # Lazy: a single check loads only the models its text needs.
        found = _detectors[(languages, accuracy)] = _build(languages, accuracy, preloaded=False)
    return found


def preload(languages: tuple[str, ...], accuracy: str = "high") -> None:
    """Load every model now. The audit calls this before forking its workers, so
    they share the models' pages instead of each loading them lazily (about
    3 s a worker, and in high accuracy mode ~370 MB each)."""
    _detectors[(languages, accuracy)] = _build(languages, accuracy, preloaded=True)


def _reading(values, min_confidence: float) -> tuple[Optional[str], float]:
    if not values:
        return None, 0.0
    best = values[0]
    confidence = round(float(best.value), 3)
    if confidence < min_confidence:
        return None, confidence
    return best.language.iso_code_639_1.name.lower(), confidence


def detect_language(text: str, languages: tuple[str, ...], min_confidence: float,
                    accuracy: str = "high") -> tuple[Optional[str], float]:
    """(ISO 639-1 code or None, confidence of the best language)."""
    if not text.strip():
        return None, 0.0
    return _reading(_detector(languages, accuracy).compute_language_confidence_values(text), min_confidence)


def detect_languages(texts: list[str], languages: tuple[str, ...], min_confidence: float,
                     accuracy: str = "high") -> list[tuple[Optional[str], float]]:
    """`detect_language` of each text, each distinct text once, in lingua's threads
    (its batch call releases the GIL and uses the idle cores)."""
    distinct = list(dict.fromkeys(t for t in texts if t.strip()))
    found: dict[str, tuple[Optional[str], float]] = {}
    if distinct:
        values = _detector(languages, accuracy).compute_language_confidence_values_in_parallel(distinct)
        found = {t: _reading(v, min_confidence) for t, v in zip(distinct, values)}
    return [found.get(t, (None, 0.0)) for t in texts]
