"""The batch audit detects languages in one call over the distinct texts; each answer
must be the one-text call's, for every accuracy mode the settings allow."""
from __future__ import annotations

import pytest

from engine.classifier.language import detect_language, detect_languages

LANGUAGES = ("en", "de", "fr", "es", "it", "ja")
TEXTS = [
    "Thank you for your order, it ships tomorrow.",
    "Vielen Dank für Ihre Bestellung. Das Paket wird morgen versendet.",
    "   ",
    "",
    "Merci pour votre commande !",
    "Thank you for your order, it ships tomorrow.",  # repeated: detected once, answered twice
    "ご注文ありがとうございます。",
    "ok",
    "Gracias por su pedido, saldrá mañana.",
]


@pytest.mark.parametrize("accuracy", ["low", "high"])
@pytest.mark.parametrize("min_confidence", [0.0, 0.5, 0.9])
def test_batch_detection_gives_each_texts_own_answer(accuracy, min_confidence):
    one_by_one = [detect_language(t, LANGUAGES, min_confidence, accuracy) for t in TEXTS]
    assert detect_languages(TEXTS, LANGUAGES, min_confidence, accuracy) == one_by_one
    assert one_by_one[2] == one_by_one[3] == (None, 0.0)
    assert one_by_one[1][0] == "de" or min_confidence == 0.9


def test_batch_detection_of_nothing_is_nothing():
    assert detect_languages([], LANGUAGES, 0.5) == []
