"""Inference stage of the batch audit: the classifier and language detection, for the
records that lack a category, or a language that a rule in force reads.

A record's inference reads that record alone, so the answers are those of
`Judge.infer` in the streaming audit, record by record.
"""
from __future__ import annotations

import orjson
import polars as pl

from ..io import to_record
from ..model import Message
from .decode import line_bytes


def message_object(loaded, pos: int, file: int, line: int) -> Message:
    found = loaded.objects.get(pos)
    if found is None:
        data, offsets = loaded.raw[file]
        found = to_record(orjson.loads(line_bytes(data, offsets, line - 1)), "", line)
        loaded.objects[pos] = found
    return found


def infer_missing(judge, messages, vsets, loaded):
    """The classifier and language detection for the records that need them (Python, per record)."""
    reads_language = [any(v.reads_language for v in vs) for vs in vsets]
    need = messages.with_row_index("row").filter(
        pl.col("category").is_null()
        | (pl.col("language").is_null() & pl.col("buyer_language").is_not_null()
           & pl.col("vset").replace_strict(dict(enumerate(reads_language)), default=False)))
    inferences: dict[int, object] = {}
    if need.is_empty():
        return messages.with_columns(candidates=pl.lit("")), inferences
    categories = messages["category"].to_list()
    languages = messages["language"].to_list()
    candidates = [""] * len(messages)
    for row, pos, file, line, vset in need.select("row", "pos", "file", "line", "vset").iter_rows():
        message = message_object(loaded, pos, file, line)
        effective, inference = judge.infer(message, list(vsets[vset]))
        if inference is None:
            continue
        inferences[row] = inference
        categories[row] = effective.category.value if effective.category is not None else None
        languages[row] = effective.language
        candidates[row] = "|".join(inference.uncertain_candidates)
    return messages.with_columns(category=pl.Series(categories, dtype=pl.String),
                                 language=pl.Series(languages, dtype=pl.String),
                                 candidates=pl.Series(candidates, dtype=pl.String)), inferences
