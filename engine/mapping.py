"""Column maps for tool exports: one raw row → one record dict (issue 8).

A map file (YAML, validated by pydantic; errors name the file and field)::

    columns:                 # export column → record field
      Order ID: order_id
      Sent Date: sent_at
    constants:               # fields every record gets
      marketplace: DE
    naive_timestamps: Europe/Berlin   # read offset-less timestamps in this zone
    timestamp_format: "%d.%m.%Y %H:%M" # optional: strptime format when not ISO 8601

`apply_map` is a pure function of the row and the map, so every reader (check,
the streaming audit) applies the same rules row by row. Without a map a naive
timestamp stays an input error (CONTRACT §1).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .policyfile import PolicyError, _validate, read_yaml

# Record fields that hold timestamps (messages and buyer events).
TIMESTAMP_FIELDS = ("sent_at", "delivered_at", "order_placed_at", "at")


class MapError(PolicyError):
    """A map file is unreadable or invalid; str() names the file and field."""


class ColumnMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)
    naive_timestamps: Optional[str] = None
    timestamp_format: Optional[str] = None

    @field_validator("naive_timestamps")
    @classmethod
    def _zone(cls, name):
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return name

    @field_validator("columns")
    @classmethod
    def _targets(cls, columns):
        seen: dict[str, str] = {}
        for source, target in columns.items():
            if not target.strip():
                raise ValueError(f"column {source!r} maps to an empty field name")
            if target in seen:
                raise ValueError(f"columns {seen[target]!r} and {source!r} both map to {target!r}")
            seen[target] = source
        return columns

    @model_validator(mode="after")
    def _no_clash(self):
        for name in self.constants:
            if name in self.columns.values():
                raise ValueError(f"constant {name!r} is also the target of a column")
        return self

    def zone(self) -> Optional[ZoneInfo]:
        return ZoneInfo(self.naive_timestamps) if self.naive_timestamps else None


def load_map(path: Union[str, Path]) -> ColumnMap:
    path = Path(path)
    doc = read_yaml(path)
    try:
        return _validate(ColumnMap, doc if doc is not None else {}, path)
    except PolicyError as exc:
        raise MapError(exc.file, exc.message, field=exc.field) from None


def _timestamp(value: Any, mapping: ColumnMap, zone: Optional[ZoneInfo]) -> Any:
    """An offset-less timestamp read in the map's zone; anything else is left for validation to judge."""
    if not isinstance(value, str) or not value.strip():
        return value
    text = value.strip()
    try:
        if mapping.timestamp_format:
            parsed = dt.datetime.strptime(text, mapping.timestamp_format)
        else:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        if zone is None:
            return value if not mapping.timestamp_format else parsed.isoformat()
        # fold=0: an ambiguous wall time at the autumn change is read as the first (summer-time) instant.
        parsed = parsed.replace(tzinfo=zone)
    return parsed.isoformat()


def apply_map(row: dict, mapping: Optional[ColumnMap]) -> dict:
    """The record dict for one raw row: columns renamed, constants set, naive timestamps given a zone."""
    if mapping is None:
        return row
    out = {mapping.columns.get(k, k): v for k, v in row.items()}
    out.update(mapping.constants)
    zone = mapping.zone()
    for name in TIMESTAMP_FIELDS:
        if name in out:
            out[name] = _timestamp(out[name], mapping, zone)
    return out
