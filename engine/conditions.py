"""The condition language: YAML syntax (validated by pydantic) and its resolved tree.

A condition is written in a policy file as one of
``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``, ``{ref: PREDICATE}``,
``{param: BOOLEAN_PARAMETER}``, ``{always: true}`` or a fact test
``{fact: NAME, OP: VALUE}`` with OP one of eq, ne, in, not_in, gt, ge, lt, le.
A VALUE may be a literal, ``{param: NAME}`` or, for ``in``/``not_in`` over
``category``, ``{categories_where: {ATTRIBUTE: VALUE}}``.

Resolution substitutes predicates, parameters and category sets, so the tree
that the compiler and the reference interpreter see holds only fact tests,
constants and connectives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = Union[bool, int, str]

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "ge", "lt", "le")
CONNECTIVES = ("all", "any", "not", "ref", "param", "always", "fact")


class ValueRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    param: Optional[str] = None
    categories_where: Optional[dict[str, Scalar]] = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.param is None) == (self.categories_where is None):
            raise ValueError("a value reference is either {param: NAME} or {categories_where: {...}}")
        return self


Value = Union[Scalar, list[Scalar], ValueRef]


class ConditionSpec(BaseModel):
    """One node of a condition as written in a policy file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    all_: Optional[list["ConditionSpec"]] = Field(None, alias="all", min_length=1)
    any_: Optional[list["ConditionSpec"]] = Field(None, alias="any", min_length=1)
    not_: Optional["ConditionSpec"] = Field(None, alias="not")
    ref: Optional[str] = None
    param: Optional[str] = None
    always: Optional[bool] = None
    fact: Optional[str] = None
    eq: Optional[Value] = None
    ne: Optional[Value] = None
    in_: Optional[Value] = Field(None, alias="in")
    not_in: Optional[Value] = None
    gt: Optional[Value] = None
    ge: Optional[Value] = None
    lt: Optional[Value] = None
    le: Optional[Value] = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any):
        if not isinstance(data, dict):
            raise ValueError("a condition is a mapping such as {fact: NAME, eq: VALUE} or {all: [...]}")
        kinds = [k for k in CONNECTIVES if k in data]
        if len(kinds) != 1:
            raise ValueError(
                f"a condition needs exactly one of {', '.join(CONNECTIVES)}; got {sorted(data) or 'nothing'}"
            )
        ops = [k for k in OPERATORS if k in data]
        if kinds == ["fact"]:
            if len(ops) != 1:
                raise ValueError(f"a fact test needs exactly one operator of {', '.join(OPERATORS)}")
        elif ops:
            raise ValueError(f"operator {ops[0]!r} belongs in a fact test ({{fact: NAME, {ops[0]}: ...}})")
        return data

    def operator(self) -> tuple[str, Any]:
        for op in OPERATORS:
            name = "in_" if op == "in" else op
            if name in self.model_fields_set:
                return op, getattr(self, name)
        raise AssertionError("validated fact test without operator")


ConditionSpec.model_rebuild()


# ---- resolved tree -------------------------------------------------------


@dataclass(frozen=True)
class Test:
    fact: str
    op: str
    value: Any  # scalar, or tuple for in/not_in


@dataclass(frozen=True)
class All:
    items: tuple


@dataclass(frozen=True)
class AnyOf:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class Const:
    value: bool


Node = Union[Test, All, AnyOf, Not, Const]


def facts_used(node: Node) -> set[str]:
    if isinstance(node, Test):
        return {node.fact}
    if isinstance(node, (All, AnyOf)):
        out: set[str] = set()
        for item in node.items:
            out |= facts_used(item)
        return out
    if isinstance(node, Not):
        return facts_used(node.item)
    return set()


def simplify(node: Node) -> Node:
    """Fold constants so rules switched off by a parameter compile to nothing."""
    if isinstance(node, Not):
        inner = simplify(node.item)
        if isinstance(inner, Const):
            return Const(not inner.value)
        if isinstance(inner, Not):
            return inner.item
        return Not(inner)
    if isinstance(node, (All, AnyOf)):
        is_all = isinstance(node, All)
        items = []
        for item in map(simplify, node.items):
            if isinstance(item, Const):
                if item.value != is_all:  # False in all / True in any decides
                    return Const(not is_all)
                continue
            items.append(item)
        if not items:
            return Const(is_all)
        if len(items) == 1:
            return items[0]
        return All(tuple(items)) if is_all else AnyOf(tuple(items))
    return node


def to_nnf(node: Node, negate: bool = False) -> Node:
    """Push negations down to the tests: durable_rules has no general 'not'."""
    if isinstance(node, Const):
        return Const(node.value != negate)
    if isinstance(node, Not):
        return to_nnf(node.item, not negate)
    if isinstance(node, (All, AnyOf)):
        items = tuple(to_nnf(i, negate) for i in node.items)
        conjunctive = isinstance(node, All) != negate
        return All(items) if conjunctive else AnyOf(items)
    if not negate:
        return node
    flipped = {"eq": "ne", "ne": "eq", "in": "not_in", "not_in": "in", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge"}
    return Test(node.fact, flipped[node.op], node.value)


def describe(node: Node) -> str:
    """Plain words for the docs and the `rules` command."""
    if isinstance(node, Const):
        return "always" if node.value else "never"
    if isinstance(node, Not):
        return f"not ({describe(node.item)})"
    if isinstance(node, (All, AnyOf)):
        joiner = " and " if isinstance(node, All) else " or "
        return joiner.join(
            f"({describe(i)})" if isinstance(i, (All, AnyOf)) else describe(i) for i in node.items
        )
    words = {"eq": "is", "ne": "is not", "in": "is one of", "not_in": "is none of",
             "gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    value = node.value
    if isinstance(value, tuple):
        value = ", ".join(map(_show, value))
    else:
        value = _show(value)
    return f"{node.fact} {words[node.op]} {value}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
