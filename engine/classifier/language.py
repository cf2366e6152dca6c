"""Language of a message text, with lingua (models ship inside the package).

Imported only when a record lacks `language`; the detector is built once per
set of languages. Below the configured confidence the language stays unknown:
a guess never becomes a fact.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional


@lru_cache(maxsize=4)
def _detector(languages: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    chosen = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in languages]
    return LanguageDetectorBuilder.from_languages(*chosen).build()


def detect_language(text: str, languages: tuple[str, ...], min_confidence: float) -> tuple[Optional[str], float]:
    """(ISO 639-1 code or None, confidence of the best language)."""
    if not text.strip():
        return None, 0.0
    values = _detector(languages).compute_language_confidence_values(text)
    if not values:
        return None, 0.0
    best = values[0]
    confidence = round(float(best.value), 3)
    if confidence < min_confidence:
        return None, confidence
    return best.language.iso_code_639_1.name.lower(), confidence
