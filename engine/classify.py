"""`classify`: the category and language of every message of a log, and how they were found."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .io import InputError, SafeCsvWriter, read_records
from .mapping import ColumnMap
from .model import Message
from .policyfile import PolicySet


@dataclass(frozen=True)
class ClassifiedRow:
    message_id: str
    category: Optional[str]           # given or confidently inferred; None when uncertain
    best: str
    confidence: float
    source: str                        # given | inferred | uncertain
    language: Optional[str]
    language_confidence: Optional[float]
    language_source: str               # given | detected | unknown
    evidence: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, float], ...] = field(default=())


def classify_message(message: Message, policies: PolicySet) -> ClassifiedRow:
    from .classifier import classifier_for

    language, lang_conf, lang_source = message.language, None, "given"
    classifier = None
    if message.language is None:
        classifier = classifier_for(policies)
        language, lang_conf = classifier.detect_language(message)
        lang_source = "detected" if language else "unknown"
    if message.category is not None:
        c = message.category.value
        return ClassifiedRow(message.message_id, c, c, 1.0, "given", language, lang_conf, lang_source,
                             ("given in the record",))
    classifier = classifier or classifier_for(policies)
    result = classifier.classify_message(message)
    return ClassifiedRow(
        message.message_id, result.category, result.best, result.confidence,
        "inferred" if result.confident else "uncertain", language, lang_conf, lang_source, result.evidence,
        () if result.confident else result.candidates,
    )


def classify_log(path: Union[str, Path], policies: PolicySet, mapping: Optional[ColumnMap] = None
                 ) -> tuple[list[ClassifiedRow], list[InputError]]:
    rows, errors = [], []
    for _, item in read_records(path, mapping):
        if isinstance(item, InputError):
            errors.append(item)
        elif isinstance(item, Message):
            rows.append(item)
    if errors:
        return [], errors
    return [classify_message(m, policies) for m in rows], []


def row_json(row: ClassifiedRow) -> dict:
    return {
        "message_id": row.message_id, "category": row.category, "best": row.best,
        "confidence": round(row.confidence, 4), "source": row.source,
        "language": row.language, "language_confidence": row.language_confidence,
        "language_source": row.language_source, "evidence": list(row.evidence),
        "alternatives": [{"category": c, "probability": p} for c, p in row.alternatives],
    }


def _alternatives(row: ClassifiedRow) -> str:
    return ", ".join(f"{c} {p:.2f}" for c, p in row.alternatives)


def row_text(row: ClassifiedRow) -> str:
    category = row.category or f"uncertain (best {row.best})"
    language = row.language or "?"
    line = f"{row.message_id}  {category}  {row.confidence:.2f}  {language}  {'; '.join(row.evidence)}"
    if row.alternatives:
        line += f"  alternatives: {_alternatives(row)}"
    return line


def rows_csv(rows: list[ClassifiedRow]) -> str:
    out = io.StringIO()
    writer = SafeCsvWriter(out, lineterminator="\n")
    writer.writerow(["message_id", "category", "confidence", "source", "language", "evidence", "alternatives"])
    for r in rows:
        writer.writerow([r.message_id, r.category or "", f"{r.confidence:.4f}", r.source, r.language or "",
                         "; ".join(r.evidence), _alternatives(r)])
    return out.getvalue()
