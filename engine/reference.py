"""A plain-Python interpreter of the condition language: the oracle for differential tests.

It shares nothing with the durable_rules path but the resolved condition tree,
so a disagreement points at the compiler or at durable_rules itself.
"""
from __future__ import annotations

from .conditions import All, AnyOf, Const, Node, Not, Test
from .policyfile import ResolvedVersion


def holds(node: Node, facts: dict) -> bool:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return not holds(node.item, facts)
    if isinstance(node, All):
        return all(holds(i, facts) for i in node.items)
    if isinstance(node, AnyOf):
        return any(holds(i, facts) for i in node.items)
    assert isinstance(node, Test)
    value = facts[node.fact]
    op = node.op
    if op == "eq":
        return value == node.value
    if op == "ne":
        return value != node.value
    if op == "in":
        return value in node.value
    if op == "not_in":
        return value not in node.value
    if op == "gt":
        return value > node.value
    if op == "ge":
        return value >= node.value
    if op == "lt":
        return value < node.value
    return value <= node.value


class ReferenceVersion:
    def __init__(self, version: ResolvedVersion):
        self.version = version

    def fired(self, facts: dict) -> frozenset[str]:
        return frozenset(r.id for r in self.version.enabled_rules if holds(r.condition, facts))
