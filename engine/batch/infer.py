"""Inference stage of the batch audit: the classifier and language detection, for the
records that lack a category, or a language that a rule in force reads.

The rows that need inference and the texts are chosen as `Judge.infer` chooses them,
record by record, so the answers are the streaming audit's. Languages are detected
in one batch call over the distinct texts, and the classifier's model scores the
records in batches.
"""
from __future__ import annotations

from typing import Optional

import orjson
import polars as pl

from ..classifier.features import ClassifierInput
from ..evaluate import Inference
from .texts import Views


def classifier_inputs(rows: pl.DataFrame, loaded) -> list[ClassifierInput]:
    """What the classifier reads of each row: from its model object if it was validated one
    by one, else from its columns (validated in bulk to the model's values)."""
    inputs = []
    for pos, subject, body, channel, reply_to, attachments in rows.select(
            "pos", "subject", "body", "channel", "reply_to", "attachments_json").iter_rows():
        found = dict.get(loaded.objects, pos)
        if found is not None:
            inputs.append(ClassifierInput.from_message(found))
        else:
            kinds = tuple(a["kind"] for a in orjson.loads(attachments)) if attachments else ()
            inputs.append(ClassifierInput(subject, body, channel, reply_to is not None, kinds))
    return inputs


def infer_missing(judge, messages, vsets, loaded, memo: Optional[dict] = None):
    """Category and language filled in where a record lacks them; returns the messages with
    `category`, `language` and `candidates` (uncertain categories, "|"-joined) and the
    Inference of each row that had one, by row. `memo` keeps language readings by settings
    and text, for another audit of the same log (the other side of a diff)."""
    reads_language = dict(enumerate(any(v.reads_language for v in vs) for vs in vsets))
    need_category = pl.col("category").is_null()
    need = messages.with_row_index("row").with_columns(
        need_category=need_category,
        need_language=pl.col("language").is_null()
        & (pl.col("buyer_language").is_not_null() | need_category)
        & pl.col("vset").replace_strict(reads_language, default=False),
    ).filter(pl.col("need_category") | pl.col("need_language"))
    inferences: dict[int, object] = {}
    if need.is_empty():
        return messages.with_columns(candidates=pl.lit("")), inferences

    from ..classifier import classifier_for
    from ..classifier.language import detect_languages

    config = judge.policies.classifier
    # Building the classifier (its vocabulary's patterns) costs a second: only when a category is missing.
    classifier = classifier_for(judge.policies) if config is None or need["need_category"].any() else None
    settings = config.settings.language_detection
    languages_of = need.filter("need_language")
    texts = Views(languages_of["subject"], languages_of["body"]).values("text")
    arguments = (tuple(settings.languages), settings.min_confidence, settings.accuracy)
    known = memo.setdefault(arguments, {}) if memo is not None else {}
    new = [t for t in dict.fromkeys(texts) if t not in known]
    known.update(zip(new, detect_languages(new, *arguments)))
    detected = dict(zip(languages_of["row"].to_list(), (known[t] for t in texts)))

    categories = messages["category"].to_list()
    languages = messages["language"].to_list()
    candidates = [""] * len(messages)
    to_classify = need.filter("need_category")
    classified = dict(zip(to_classify["row"].to_list(),
                          classifier.classify_many(classifier_inputs(to_classify, loaded)))) if classifier else {}
    for row, wants_category in need.select("row", "need_category").iter_rows():
        classification = classified.get(row)
        if classification is not None and classification.confident:
            categories[row] = classification.category
        language = detected.get(row)
        if language is not None and language[0] is not None:
            languages[row] = language[0]
        inference = Inference(classification, language, config.label, config.sources)
        inferences[row] = inference
        candidates[row] = "|".join(inference.uncertain_candidates)
    return messages.with_columns(category=pl.Series(categories, dtype=pl.String),
                                 language=pl.Series(languages, dtype=pl.String),
                                 candidates=pl.Series(candidates, dtype=pl.String)), inferences
