"""The rule builder: ``target``, ``subject``, ``it`` and ``ctx``.

Rules read like SQLAlchemy criteria::

    from bastion import target, subject, it, ctx

    target.is_public  # a boolean column is TRUE
    target.owner_id == subject.id  # compare target and subject attributes
    target.status.in_(["draft", "review"])  # IN a literal list
    target.org_id.in_(subject.org_ids)  # IN a collection the subject carries
    target.deleted_at == None  # IS NULL  (or .is_(None))
    target.owner == subject  # a many-to-one relationship is the subject
    target.org.has(it.plan == "pro")  # many-to-one with a condition
    target.tags.any(it.name == "urgent")  # one-to-many / many-to-many: any related
    target.org.has(members=subject)  # the org's members include the subject
    subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin"))
    target.level <= ctx.clearance  # a value passed to the call

``it`` is the related object of the innermost ``.any()``/``.has()``. Combine with ``&``, ``|``,
``~``(never ``and``/``or``/``not``, which raise ``TypeError`` like SQLAlchemy's expressions do).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bastion.errors import InvalidArgument, RuleNotTranslatable
from bastion.rules.nodes import (
    ALLOW,
    DENY,
    Ancestors,
    And,
    Attr,
    Compare,
    Context,
    In,
    IsNull,
    Literal,
    Not,
    Operand,
    Related,
    Rule,
    Same,
    Scope,
)

__all__ = ["AttrExpr", "Root", "ancestors", "as_rule", "ctx", "it", "subject", "target"]


class Root:
    """``target``, ``subject`` or ``it``: attribute access builds an :class:`AttrExpr`."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope: Scope = scope

    def __getattr__(self, name: str) -> AttrExpr:
        if name.startswith("__"):
            raise AttributeError(name)
        return AttrExpr(Attr(self._scope, name))

    def __eq__(self, other: object) -> Rule:  # type: ignore[override]
        # ``target == subject``: the target object is the subject itself.
        if other is subject and self._scope != "subject":
            return Same(self._scope)
        if isinstance(other, Root) and other._scope != "subject" and self is subject:
            return Same(other._scope)
        raise InvalidArgument(
            f"{self._scope} can only be compared with subject (is the same object)"
        )

    def __hash__(self) -> int:
        return hash(self._scope)

    def __repr__(self) -> str:
        return self._scope


class _CtxRoot:
    """``ctx.name`` reads the keyword argument ``name`` of the call."""

    __slots__ = ()

    def __getattr__(self, name: str) -> AttrExpr:
        if name.startswith("__"):
            raise AttributeError(name)
        return AttrExpr(Context(name))

    def __repr__(self) -> str:
        return "ctx"


target = Root("target")
subject = Root("subject")
it = Root("it")
ctx = _CtxRoot()


def _as_tuple(values: Iterable[object]) -> tuple[object, ...]:
    """A literal collection as a tuple; sets in a canonical order, so equal sets give equal
    (and equally cached) rules."""
    if not isinstance(values, (set, frozenset)):
        return tuple(values)
    return tuple(sorted(values, key=lambda v: (type(v).__name__, repr(v))))


def _operand(value: object) -> Operand:
    if isinstance(value, AttrExpr):
        return value.node
    if isinstance(value, Root):
        raise InvalidArgument(
            f"compare {value!r} itself only with ==; to compare an attribute write {value!r}.<name>"
        )
    if isinstance(value, Rule):
        raise InvalidArgument(f"a rule cannot be used as a value: {value}")
    if isinstance(value, (list, set, frozenset)):
        return Literal(_as_tuple(value))
    return Literal(value)


class AttrExpr:
    """An attribute with SQLAlchemy-like operators; used as a rule it means ``== True``."""

    __slots__ = ("node",)

    def __init__(self, node: Operand) -> None:
        self.node = node

    # comparisons -------------------------------------------------------------------------
    def _compare(self, op: str, other: object) -> Rule:
        return Compare(self.node, op, _operand(other))

    def __eq__(self, other: object) -> Rule:  # type: ignore[override]
        if other is None:
            return IsNull(self.node)
        if other is subject:
            return self._related_to_subject()
        return self._compare("==", other)

    def __ne__(self, other: object) -> Rule:  # type: ignore[override]
        if other is None:
            return IsNull(self.node, negated=True)
        if other is subject:
            return Not(self._related_to_subject())
        return self._compare("!=", other)

    def __lt__(self, other: object) -> Rule:
        return self._compare("<", other)

    def __le__(self, other: object) -> Rule:
        return self._compare("<=", other)

    def __gt__(self, other: object) -> Rule:
        return self._compare(">", other)

    def __ge__(self, other: object) -> Rule:
        return self._compare(">=", other)

    __hash__ = None  # type: ignore[assignment]

    def in_(self, values: object) -> Rule:
        """``IN``: a literal list/tuple/set, a subject attribute or a context value."""
        if isinstance(values, (str, bytes)) or not (
            isinstance(values, (AttrExpr, Iterable)) and not isinstance(values, Rule)
        ):
            raise InvalidArgument(f"in_() takes a collection, got {values!r}")
        if isinstance(values, AttrExpr):
            return In(self.node, values.node)
        return In(self.node, Literal(_as_tuple(values)))

    def not_in(self, values: object) -> Rule:
        """``NOT IN`` (three-valued, like SQL)."""
        return Not(self.in_(values))

    def is_(self, value: None) -> Rule:
        """``IS NULL``; only ``None`` is accepted."""
        if value is not None:
            raise InvalidArgument("is_() only accepts None; use == for values")
        return IsNull(self.node)

    def is_not(self, value: None) -> Rule:
        """``IS NOT NULL``; only ``None`` is accepted."""
        if value is not None:
            raise InvalidArgument("is_not() only accepts None; use != for values")
        return IsNull(self.node, negated=True)

    # relationships -----------------------------------------------------------------------
    def _relationship(self) -> Attr:
        if not isinstance(self.node, Attr):
            raise InvalidArgument(f"{self.node} is not a relationship")
        return self.node

    def any(self, *criteria: object, **values: object) -> Rule:
        """Some related object (``it``) meets every criterion; ``name=v`` is ``it.name == v``."""
        node = self._relationship()
        return Related(node.scope, node.name, _criteria(criteria, values))

    def has(self, *criteria: object, **values: object) -> Rule:
        """Many-to-one spelling of :meth:`any` (SQLAlchemy's ``has``)."""
        return self.any(*criteria, **values)

    def _related_to_subject(self) -> Rule:
        node = self._relationship()
        return Related(node.scope, node.name, Same("it"))

    # as a rule ---------------------------------------------------------------------------
    def as_rule(self) -> Rule:
        """A bare attribute used as a rule: ``attr == True`` (UNKNOWN when NULL)."""
        return Compare(self.node, "==", Literal(True))

    def __and__(self, other: object) -> Rule:
        return self.as_rule() & other

    def __rand__(self, other: object) -> Rule:
        return as_rule(other) & self.as_rule()

    def __or__(self, other: object) -> Rule:
        return self.as_rule() | other

    def __ror__(self, other: object) -> Rule:
        return as_rule(other) | self.as_rule()

    def __invert__(self) -> Rule:
        return Not(self.as_rule())

    def __bool__(self) -> bool:
        raise InvalidArgument(
            "a bastion expression has no truth value: combine rules with &, | and ~, "
            "not and/or/not; compare with ==, not 'is'"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self.node}.{name}: to read through a relationship write "
            f"{self.node}.has(it.{name} == ...) or .any(...)"
        )

    def __repr__(self) -> str:
        return f"<{self.node}>"


def _criteria(criteria: tuple[object, ...], values: dict[str, object]) -> Rule:
    rules = [as_rule(c) for c in criteria]
    rules += [AttrExpr(Attr("it", k)) == v for k, v in values.items()]
    if not rules:
        return ALLOW
    return rules[0] if len(rules) == 1 else And(tuple(rules))


def as_rule(value: object) -> Rule:
    """Coerce a rule-like value: a :class:`Rule`, a bare attribute (``== True``) or a bool."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, AttrExpr):
        return value.as_rule()
    if value is True or value is False:
        return ALLOW if value else DENY
    if callable(value):
        raise RuleNotTranslatable(
            getattr(value, "__qualname__", value),
            "a Python callable has no SQL form; write the rule with target/subject/it/ctx",
        )
    raise RuleNotTranslatable(value, f"{type(value).__name__} is not a rule")


def ancestors(parent: object, rule: object) -> Rule:
    """The target or one of its ancestors satisfies ``rule``: ``parent`` is the self-referential
    many-to-one (``target.parent`` or ``"parent"``); inside ``rule``, ``target`` is the ancestor::

        ancestors(target.parent, target.owner_id == subject.id)  # owner of a folder above
    """
    if isinstance(parent, AttrExpr) and isinstance(parent.node, Attr):
        if parent.node.scope != "target":
            raise InvalidArgument("ancestors() walks up from the target: write target.<parent>")
        name = parent.node.name
    elif isinstance(parent, str):
        name = parent
    else:
        raise InvalidArgument(
            f"ancestors() takes target.<relationship> or its name, got {parent!r}"
        )
    return Ancestors(name, as_rule(rule))
