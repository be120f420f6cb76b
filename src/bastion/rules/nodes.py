"""The rule algebra: immutable nodes that both compilers read.

A rule is a tree of frozen dataclasses. Leaves read values from three *scopes*:

* ``"target"``: the object the permission is asked about (a mapped instance, or its table in SQL);
* ``"subject"``: who asks (any Python object; its values are bound as parameters in SQL);
* ``"it"``: the related object of the innermost enclosing :class:`Related` node.

plus context values passed to the call (:class:`Context`) and literals (:class:`Literal`).

Semantics: SQL's three-valued logic
-----------------------------------
Every node evaluates to TRUE, FALSE or UNKNOWN (``True``, ``False``, ``None`` in Python), exactly as
SQL evaluates the ``WHERE`` clause the SQL compiler emits for it:

* a comparison (``==, !=, <, <=, >, >=``) where either side is NULL/``None`` is UNKNOWN;
* ``x IN (...)``: FALSE for an empty list; UNKNOWN if ``x`` is NULL, or if nothing matches and the
  list holds a NULL; otherwise TRUE or FALSE;
* ``IS NULL`` / ``IS NOT NULL`` (:class:`IsNull`) are two-valued; ``== None`` in a rule means
  ``IS NULL``;
* ``NOT UNKNOWN`` is UNKNOWN; ``TRUE OR UNKNOWN`` is TRUE; ``FALSE AND UNKNOWN`` is FALSE;
* a relationship condition (:class:`Related`, SQL ``EXISTS``) is two-valued: TRUE when some related
  object makes the inner rule TRUE, FALSE otherwise (no related object, or only FALSE/UNKNOWN ones);
* UNKNOWN at the top of a rule **denies**, as ``WHERE`` drops the row.

So ``~(target.colour == "blue")`` denies an object whose colour is NULL on both paths, where naive
Python (``not (None == "blue")``) would allow it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union
from typing import Literal as TypingLiteral

from bastion.errors import InvalidArgument

__all__ = [
    "ALLOW",
    "COMPARISON_OPERATORS",
    "DENY",
    "UNKNOWN",
    "Ancestors",
    "And",
    "Attr",
    "Compare",
    "Const",
    "Context",
    "Deferred",
    "In",
    "IsNull",
    "Literal",
    "Not",
    "Operand",
    "Or",
    "PythonRule",
    "Related",
    "Reroot",
    "Rule",
    "Same",
    "Scope",
    "SqlRule",
    "junction",
]

#: Where an :class:`Attr` reads from.
Scope = TypingLiteral["target", "subject", "it"]

#: The comparison operators a :class:`Compare` node may hold, by their SQL spelling.
COMPARISON_OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


class Rule:
    """Base of every rule node; the operators ``&``, ``|``, ``~`` build And, Or and Not."""

    __slots__ = ()

    def __and__(self, other: object) -> Rule:
        from bastion.rules.dsl import as_rule

        return junction(And, self, as_rule(other))

    def __rand__(self, other: object) -> Rule:
        from bastion.rules.dsl import as_rule

        return junction(And, as_rule(other), self)

    def __or__(self, other: object) -> Rule:
        from bastion.rules.dsl import as_rule

        return junction(Or, self, as_rule(other))

    def __ror__(self, other: object) -> Rule:
        from bastion.rules.dsl import as_rule

        return junction(Or, as_rule(other), self)

    def __invert__(self) -> Rule:
        return Not(self)

    def __bool__(self) -> bool:
        raise InvalidArgument(
            "a bastion rule has no truth value: combine rules with &, | and ~, not and/or/not"
        )

    def children(self) -> tuple[Rule, ...]:
        """The direct sub-rules of this node (empty for leaves)."""
        return ()

    def operands(self) -> tuple[Operand, ...]:
        """The values this node reads directly (validated, and part of the SQL cache key)."""
        return ()

    def reads_subject_identity(self) -> bool:
        """True when the node's SQL depends on which row the subject is (its primary key)."""
        return False

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        """A copy of this node with ``children`` in place of :meth:`children` (for rewrites)."""
        return self

    def sql_depends_only_on_inputs(self) -> bool:
        """False when the node's SQL may depend on more than its operands and the subject's
        identity (e.g. a function reading any attribute): its clauses are then never cached."""
        return True


def junction(kind: type[And] | type[Or], left: Rule, right: Rule) -> Rule:
    """``left & right`` / ``left | right``, flattening a left operand of the same kind, so that
    ``a | b | c`` is one ``Or`` of three items (as written), not nested pairs."""
    items = left.items if isinstance(left, kind) else (left,)
    return kind((*items, right))


# ---------------------------------------------------------------------------------------------
# operands (not rules themselves)


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute of the target, the subject, or the innermost related object (``it``)."""

    scope: Scope
    name: str

    def __str__(self) -> str:
        return f"{self.scope}.{self.name}"


@dataclass(frozen=True, slots=True)
class Context:
    """A value passed to the call as a keyword argument (``check(..., ip="10.0.0.1")``)."""

    name: str

    def __str__(self) -> str:
        return f"ctx.{self.name}"


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant written in the rule. Collections are stored as tuples (hashable)."""

    value: Any

    def __str__(self) -> str:
        return repr(self.value)


Operand = Union[Attr, Context, Literal]  # noqa: UP007 - a runtime alias on 3.10


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True, slots=True)
class Const(Rule):
    """``ALLOW`` (TRUE), ``DENY`` (FALSE) or ``UNKNOWN`` (NULL)."""

    value: bool | None

    def __str__(self) -> str:
        return {True: "ALLOW", False: "DENY", None: "UNKNOWN"}[self.value]


ALLOW = Const(True)
DENY = Const(False)
UNKNOWN = Const(None)


@dataclass(frozen=True, slots=True)
class And(Rule):
    """TRUE when every item is TRUE; FALSE when one is FALSE; UNKNOWN otherwise."""

    items: tuple[Rule, ...]

    def children(self) -> tuple[Rule, ...]:
        return self.items

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return And(children)

    def __str__(self) -> str:
        return "(" + " & ".join(map(str, self.items)) + ")"


@dataclass(frozen=True, slots=True)
class Or(Rule):
    """TRUE when one item is TRUE; FALSE when every item is FALSE; UNKNOWN otherwise."""

    items: tuple[Rule, ...]

    def children(self) -> tuple[Rule, ...]:
        return self.items

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return Or(children)

    def __str__(self) -> str:
        return "(" + " | ".join(map(str, self.items)) + ")"


@dataclass(frozen=True, slots=True)
class Not(Rule):
    """Negation; ``NOT UNKNOWN`` is UNKNOWN."""

    item: Rule

    def children(self) -> tuple[Rule, ...]:
        return (self.item,)

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return Not(children[0])

    def __str__(self) -> str:
        return f"~{self.item}"


@dataclass(frozen=True, slots=True)
class Compare(Rule):
    """``left <op> right``, ``op`` in :data:`COMPARISON_OPERATORS`; UNKNOWN if a side is NULL."""

    left: Operand
    op: str
    right: Operand

    def operands(self) -> tuple[Operand, ...]:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True, slots=True)
class In(Rule):
    """``left IN values``; ``values`` is a literal tuple, a subject attribute or a context value."""

    left: Operand
    values: Operand

    def operands(self) -> tuple[Operand, ...]:
        return (self.left, self.values)

    def __str__(self) -> str:
        return f"{self.left}.in_({self.values})"


@dataclass(frozen=True, slots=True)
class IsNull(Rule):
    """``operand IS NULL`` (or ``IS NOT NULL`` when ``negated``): two-valued."""

    operand: Operand
    negated: bool = False

    def operands(self) -> tuple[Operand, ...]:
        return (self.operand,)

    def __str__(self) -> str:
        return f"({self.operand} {'!=' if self.negated else '=='} None)"


@dataclass(frozen=True, slots=True)
class Related(Rule):
    """SQL ``EXISTS``: some object reached through relationship ``name`` of ``scope`` satisfies
    ``where`` (in which ``it`` is that related object). Works for many-to-one (``has``),
    one-to-many and many-to-many (``any``) relationships; two-valued."""

    scope: Scope
    name: str
    where: Rule

    def children(self) -> tuple[Rule, ...]:
        return (self.where,)

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return Related(self.scope, self.name, children[0])

    def reads_subject_identity(self) -> bool:
        return self.scope == "subject"

    def __str__(self) -> str:
        if self.where == Same("it"):
            return f"({self.scope}.{self.name} == subject)"
        return f"{self.scope}.{self.name}.any({self.where})"


@dataclass(frozen=True, slots=True)
class Same(Rule):
    """The object in ``scope`` *is* the subject (same mapped class hierarchy and primary key)."""

    scope: Scope

    def reads_subject_identity(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"({self.scope} == subject)"


@dataclass(frozen=True, slots=True)
class PythonRule(Rule):
    """A Python callable ``fn(subject, target, **context) -> bool``: it has **no SQL form**.

    Only accepted by ``Policy.allow(..., check_only=True)``; ``filter`` on a permission that uses
    one raises ``RuleNotTranslatable`` rather than return a partial list. Two-valued (truthy).
    """

    fn: Callable[..., Any]
    name: str

    def __str__(self) -> str:
        return f"python:{self.name}"


@dataclass(frozen=True, slots=True)
class Reroot(Rule):
    """Some object reached through relationship ``name`` of ``scope`` satisfies ``rule`` *as its
    target*: inside ``rule``, ``target`` is that related object (and ``it`` starts afresh).

    This is how a page's permission defers to its book's rules (:class:`Deferred` resolves to
    it). SQL: ``EXISTS`` through the relationship, the rule compiled against the related alias.
    Two-valued, like :class:`Related`.
    """

    scope: Scope
    name: str
    rule: Rule

    def children(self) -> tuple[Rule, ...]:
        return (self.rule,)

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return Reroot(self.scope, self.name, children[0])

    def __str__(self) -> str:
        return f"{self.scope}.{self.name}:({self.rule})"


@dataclass(frozen=True, slots=True)
class Ancestors(Rule):
    """The target, or one of its ancestors through the self-referential many-to-one ``parent``,
    satisfies ``rule`` (as its target): a permission on a folder holds on all its descendants.

    SQL: ``target.pk IN (WITH RECURSIVE ...)`` from the objects satisfying ``rule`` down to their
    descendants; Python: a walk up the parents. A cycle in the data is walked once: an object in
    a cycle is allowed when some object on the cycle or above it satisfies ``rule``, on both
    paths. Two-valued.
    """

    parent: str
    rule: Rule

    def children(self) -> tuple[Rule, ...]:
        return (self.rule,)

    def with_children(self, children: tuple[Rule, ...]) -> Rule:
        return Ancestors(self.parent, children[0])

    def __str__(self) -> str:
        return f"ancestors({self.parent}):({self.rule})"


@dataclass(frozen=True, slots=True)
class Deferred(Rule):
    """Placeholder for "the permission holds on the object(s) reached through ``name``": the
    policy resolves it, when it builds a plan, to a :class:`Reroot` holding the related class's
    rules for ``permission`` (``None``: the permission being checked)."""

    name: str
    permission: Any = None

    def __str__(self) -> str:
        perm = "" if self.permission is None else f", {self.permission!r}"
        return f"defer(target.{self.name}{perm})"


@dataclass(frozen=True, slots=True)
class SqlRule(Rule):
    """A rule only SQL can express: ``fn(select, bearer=subject, target=entity, permission=P)``
    receives a ``Select`` of the target's primary key and returns it narrowed (the shield form).
    It has no Python path: ``check`` answers it with one query for the object's key."""

    fn: Callable[..., Any]
    name: str
    permission: Any = None

    def sql_depends_only_on_inputs(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"sql:{self.name}"
