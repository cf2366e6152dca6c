"""The classifier's data files: schema and safe loading (errors name file and field).

`policies/classifier/classifier.yaml` holds the blend settings and names the
vocabulary file and the training corpora; `vocabulary.yaml` holds, per
category, weighted phrases per language and weights for generic message
features. Nothing here is category-specific: categories come from the model
(engine.model.Category), phrases and weights from the files.
"""
from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..detectors import check_regexes
from ..model import AttachmentKind, Category, Channel
from ..policyfile import PolicyError, _validate, read_yaml

LANGUAGE_KEY = re.compile(r"^[a-z]{2,3}$")

# The generic message features a vocabulary may weigh (computed in features.py).
FEATURES = (
    "reply_to", "quoted_text", "reply_subject", "proactive", "short", "long", "order_id",
    *(f"attachment:{k.value}" for k in AttachmentKind),
    *(f"channel:{c.value}" for c in Channel),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TermGroup(BaseModel):
    """Phrases sharing one weight: `weight`, optional `regex` list, and one list per language code."""

    model_config = ConfigDict(extra="allow", frozen=True)
    weight: float
    regex: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _languages(self):
        for key, value in (self.model_extra or {}).items():
            if not LANGUAGE_KEY.match(key):
                raise ValueError(f"{key!r} is neither 'weight', 'regex' nor a language code (en, de, ja, …)")
            if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
                raise ValueError(f"language {key!r} takes a list of non-empty phrases")
        if not self.phrases and not self.regex:
            raise ValueError("a term group needs phrases in at least one language, or a regex")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns):
        return check_regexes(patterns, "regex")

    @property
    def phrases(self) -> dict[str, list[str]]:
        return dict(self.model_extra or {})


class CategoryVocabulary(_Strict):
    description: str = ""
    signals: dict[str, float] = Field(default_factory=dict)
    terms: list[TermGroup] = Field(default_factory=list)

    @field_validator("signals")
    @classmethod
    def _known_features(cls, signals):
        for name in signals:
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
        return signals


class Vocabulary(_Strict):
    id: str = Field(min_length=1)
    categories: dict[Category, CategoryVocabulary]

    @field_validator("categories")
    @classmethod
    def _every_category(cls, categories):
        missing = [c.value for c in Category if c not in categories]
        if missing:
            raise ValueError(f"every category needs an entry; missing: {', '.join(missing)}")
        return categories

    def languages(self) -> set[str]:
        return {lang for cv in self.categories.values() for g in cv.terms for lang in g.phrases}


class ModelSettings(_Strict):
    enabled: bool = True
    training: list[str] = Field(default_factory=list)
    weight: float = Field(0.35, ge=0, le=1)
    C: float = Field(0.5, gt=0)
    scale: float = Field(4.0, gt=0)
    # How the two opinions combine: "linear" averages the probabilities, "geometric"
    # averages their logarithms (a product of experts: both must find a category
    # plausible), at `blend_temperature`.
    blend: Literal["linear", "geometric"] = "linear"
    blend_temperature: float = Field(1.0, gt=0)


class ConformalSettings(_Strict):
    """Candidate sets by split conformal prediction: a category is a candidate when its
    nonconformity (1 - its probability) is at most the (1 - alpha) quantile of the
    nonconformity of the true category on messages the model did not train on."""

    alpha: float = Field(0.01, gt=0, lt=1)
    # Out-of-fold nonconformity scores of the training corpora (engine/classifier/conformal.py
    # writes it; when it does not match the data it is recomputed and cached).
    calibration: str = "calibration.json"
    folds: int = Field(5, ge=2)
    # The guarantee holds for messages like the corpora. One in which the vocabulary's best
    # score (its summed weights) stays below this shows too little evidence to be one of
    # them: every category stays a candidate that the vocabulary does not score below zero.
    min_evidence: float = 0.0


class LanguageDetection(_Strict):
    languages: list[str] = Field(min_length=1)
    min_confidence: float = Field(0.5, ge=0, le=1)
    # lingua's modes: "high" reads 1- to 5-grams, "low" trigrams only (smaller, faster).
    accuracy: Literal["high", "low"] = "high"

    @field_validator("languages")
    @classmethod
    def _codes(cls, languages):
        for code in languages:
            if not re.match(r"^[a-z]{2}$", code):
                raise ValueError(f"{code!r} is not an ISO 639-1 code")
        return languages


class ClassifierSettings(_Strict):
    id: str = Field(min_length=1)
    vocabulary: str = "vocabulary.yaml"
    # Lines that open the quoted earlier message of a reply (matched case-insensitively,
    # line by line): from the first such line on, the text is the buyer's, not the seller's.
    quoted_reply_starts: list[str] = Field(default_factory=list)
    temperature: float = Field(1.0, gt=0)
    model: ModelSettings = ModelSettings(enabled=False)
    conformal: ConformalSettings = ConformalSettings()
    language_detection: LanguageDetection

    @field_validator("quoted_reply_starts")
    @classmethod
    def _quote_patterns_compile(cls, patterns):
        return check_regexes(patterns, "quoted_reply_starts")


class ClassifierConfig:
    """Settings, vocabulary and where they came from."""

    def __init__(self, directory: Path, settings: ClassifierSettings, vocabulary: Vocabulary,
                 training: tuple[Path, ...], digest: str):
        self.directory, self.settings, self.vocabulary = directory, settings, vocabulary
        self.training, self.digest = training, digest

    @cached_property
    def labelled(self) -> tuple[Path, ...]:
        """The labelled corpora (model.training), also when the model is off: the calibration's data."""
        return tuple(self.directory / name for name in self.settings.model.training)

    @property
    def calibration_file(self) -> Path:
        return self.directory / self.settings.conformal.calibration

    @cached_property
    def label(self) -> str:
        return f"{self.settings.id}+{self.vocabulary.id}"

    @cached_property
    def sources(self) -> tuple[str, ...]:
        """What an inference rests on, named as a finding's sources: the settings, the
        vocabulary and the training corpora (as `policies/classifier/<file>`)."""
        prefix = f"{self.directory.parent.name}/{self.directory.name}"
        files = ("classifier.yaml", self.settings.vocabulary, *(p.name for p in self.training))
        if self.calibration_file.is_file():
            files += (self.settings.conformal.calibration,)
        return tuple(f"{prefix}/{name}" for name in files)


def load_classifier_config(directory: Path) -> Optional[ClassifierConfig]:
    """The classifier of a policies directory (`classifier/`), or None when it has none."""
    settings_file = directory / "classifier.yaml"
    if not settings_file.is_file():
        return None
    settings = _validate(ClassifierSettings, read_yaml(settings_file), settings_file)
    vocab_file = directory / settings.vocabulary
    if not vocab_file.is_file():
        raise PolicyError(settings_file, f"vocabulary file {settings.vocabulary!r} not found", field="vocabulary")
    vocabulary = _validate(Vocabulary, read_yaml(vocab_file), vocab_file)
    training = []
    for i, name in enumerate(settings.model.training):
        path = directory / name
        if not path.is_file():
            raise PolicyError(settings_file, f"training corpus {name!r} not found", field=f"model.training.{i}")
        if settings.model.enabled:
            training.append(path)
    digest = hashlib.sha256()
    calibration = directory / settings.conformal.calibration
    for path in (settings_file, vocab_file, *training, *([calibration] if calibration.is_file() else [])):
        digest.update(path.read_bytes())
    return ClassifierConfig(directory, settings, vocabulary, tuple(training), digest.hexdigest())
