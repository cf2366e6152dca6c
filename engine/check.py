"""`check`: validate a whole log, then judge every message (nothing when any record is bad)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .evaluate import Evaluator, When, judge_records
from .io import InputError, Record, read_records
from .mapping import ColumnMap
from .model import BuyerEvent, Message, Verdict
from .policyfile import PolicySet


@dataclass
class LoadedLog:
    records: list[Record] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def validate_against_policies(record: Record, policies: PolicySet, source: str, line: int,
                              seen_ids: set) -> Union[Record, InputError]:
    """Checks a record's schema cannot make: known marketplace, unique message_id."""
    if isinstance(record, Message):
        if record.marketplace not in policies.marketplaces:
            known = ", ".join(sorted(policies.marketplaces))
            return InputError(source, line, record.message_id, "marketplace",
                              f"unknown marketplace {record.marketplace!r} (known: {known})")
        if record.category is None and policies.classifier is None:
            return InputError(source, line, record.message_id, "category",
                              "required: these policies have no classifier (classifier/classifier.yaml) to infer it")
        if record.message_id in seen_ids:
            return InputError(source, line, record.message_id, "message_id", "duplicate message_id in this log")
        seen_ids.add(record.message_id)
    return record


def load_log(path: Union[str, Path], policies: PolicySet, mapping: Optional[ColumnMap] = None) -> LoadedLog:
    log = LoadedLog()
    seen: set[str] = set()
    for line, item in read_records(path, mapping):
        if not isinstance(item, InputError):
            item = validate_against_policies(item, policies, str(path), line, seen)
        (log.errors if isinstance(item, InputError) else log.records).append(item)
    return log


def check_log(path: Union[str, Path], policies: PolicySet, at: When = None,
              evaluator: Evaluator = "durable", mapping: Optional[ColumnMap] = None
              ) -> tuple[list[Verdict], list[InputError]]:
    log = load_log(path, policies, mapping)
    if log.errors:
        return [], log.errors
    return judge_records(policies, log.records, at=at, evaluator=evaluator), []


__all__ = ["LoadedLog", "load_log", "check_log", "BuyerEvent"]
