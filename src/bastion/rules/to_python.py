"""Compile a rule to a predicate over loaded Python objects.

``to_python(rule)`` returns ``predicate(subject, target, context, it) -> True | False | None``
implementing the three-valued semantics of :mod:`bastion.rules.nodes`; callers allow only on
``True``. The compiler for each node type is chosen from :data:`PYTHON_COMPILERS`, a registry keyed
by node class (MRO lookup), so another package (e.g. ``bastion.grants``) can add node kinds with
:func:`register_python` without the algebra importing it.

Attributes of mapped instances are read from the instance ``__dict__`` only, never through
SQLAlchemy's lazy loader: an attribute that is not loaded on a persistent object raises
:class:`NotLoaded`, and the :class:`~bastion.Authorizer` then answers with one SQL query instead
(never N lazy loads). Transient and pending objects, and unmapped objects, are read with
``getattr``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.exc import UnmappedInstanceError

from bastion.errors import DuplicateName, MissingContext, RuleNotTranslatable
from bastion.rules.nodes import (
    Ancestors,
    And,
    Compare,
    Const,
    Context,
    In,
    IsNull,
    Literal,
    Not,
    Operand,
    Or,
    PythonRule,
    Related,
    Reroot,
    Rule,
    Same,
    SqlRule,
)

__all__ = [
    "ANCESTORS_PREFETCHED",
    "IO_FORBIDDEN",
    "LAZY_LOADS_ALLOWED",
    "PYTHON_COMPILERS",
    "SESSION_KEY",
    "UNMAPPED_TYPES",
    "NotLoaded",
    "Predicate",
    "register_python",
    "to_python",
]

#: ``predicate(subject, target, context, it)`` -> TRUE / FALSE / UNKNOWN (None)
Predicate = Callable[[Any, Any, Mapping[str, Any], Any], "bool | None"]
_Reader = Callable[[Any, Any, Mapping[str, Any], Any], Any]


class NotLoaded(Exception):
    """An attribute the rule needs is not loaded on a persistent instance.

    ``prefetch``, when given, is a statement that loads what is missing (e.g. a folder's
    ancestors); the Authorizer may run it once and evaluate again instead of asking SQL.
    ``start`` is the identity key of the first missing object it loads."""

    def __init__(self, what: str = "", *, prefetch: Any = None, start: Any = None) -> None:
        super().__init__(what)
        self.prefetch = prefetch
        self.start = start


#: node class -> compiler(node) -> Predicate
PYTHON_COMPILERS: dict[type[Rule], Callable[[Any], Predicate]] = {}


def register_python(
    node_type: type[Rule], *, replace: bool = False
) -> Callable[[Callable[[Any], Predicate]], Callable[[Any], Predicate]]:
    """Decorator registering the Python compiler of ``node_type``; refuses to overwrite silently."""

    def decorate(fn: Callable[[Any], Predicate]) -> Callable[[Any], Predicate]:
        if node_type in PYTHON_COMPILERS and not replace:
            raise DuplicateName("Python compiler for", node_type.__name__, "is already registered")
        PYTHON_COMPILERS[node_type] = fn
        return fn

    return decorate


def to_python(rule: Rule) -> Predicate:
    """Compile ``rule`` to a three-valued predicate ``(subject, target, context, it)``."""
    for cls in type(rule).__mro__:
        fn = PYTHON_COMPILERS.get(cls)
        if fn is not None:
            return fn(rule)
    raise RuleNotTranslatable(rule, f"no Python compiler for {type(rule).__name__} nodes")


# ---------------------------------------------------------------------------------------------
# reading values


#: Classes seen not to be mapped by SQLAlchemy: their attributes are read with plain getattr
#: (e.g. a subject class with ``__slots__``, which has no ``__dict__`` to look in).
_UNMAPPED: set[type] = set()
#: The same set, for compilers in other modules that inline :func:`read_attribute` on a hot path
#: (``type(obj) in UNMAPPED_TYPES`` first, then ``obj.__dict__``, then ``read_attribute``).
UNMAPPED_TYPES = _UNMAPPED


def read_attribute(obj: Any, key: str) -> Any:
    """``obj.key`` without lazy loading; raises :class:`NotLoaded` if a query would be needed."""
    if type(obj) in _UNMAPPED:
        return getattr(obj, key, None)
    try:
        return obj.__dict__[key]
    except (KeyError, AttributeError):
        return _read_slow(obj, key)


def _read_slow(obj: Any, key: str) -> Any:
    if obj is None:
        return None  # an absent subject has only NULL attributes
    try:
        state = instance_state(obj)
    except (AttributeError, UnmappedInstanceError):
        if not hasattr(type(obj), "_sa_class_manager"):
            _UNMAPPED.add(type(obj))
        return getattr(obj, key, None)  # a missing attribute is NULL, as in the SQL compiler
    if (
        key in state.mapper.attrs
        and state.key is not None
        and not state.pending
        and not LAZY_LOADS_ALLOWED.get()
    ):
        raise NotLoaded(key)
    return getattr(obj, key)


#: The context key under which the Authorizer passes its session to predicates that need one
#: (rules over stored grants). Not a Python identifier, so no caller's ``**context`` collides.
SESSION_KEY = "bastion session"

#: A predicate may carry this attribute, ``(info key, member)``: it then answers exactly
#: ``member in session.info[info key][id(subject)].tokens`` whenever that lookup
#: succeeds (and only falls back to its own work when it raises KeyError or AttributeError).
#: ``Authorizer.check`` makes that lookup itself, without calling the predicate: a check of a
#: stored grant after the subject's grants are cached (W5) is then one call, not two.
SESSION_LOOKUP = "bastion_session_lookup"

#: Set by ``AsyncAuthorizer`` while it tries a check without awaiting: anything that would
#: query (e.g. loading a subject's stored grants) raises NotLoaded instead, and the check is
#: then run again, awaited, through ``AsyncSession.run_sync``.
IO_FORBIDDEN: ContextVar[bool] = ContextVar("bastion_io_forbidden", default=False)

#: Set by the Authorizer while it evaluates a rule that has no SQL form (``check_only``): such a
#: rule cannot fall back to a query, so missing attributes are loaded the ordinary way.
LAZY_LOADS_ALLOWED: ContextVar[bool] = ContextVar("bastion_lazy_loads_allowed", default=False)

#: Set by the Authorizer while it walks again after running a ``NotLoaded.prefetch``: the
#: ``start`` key and the identity keys the prefetch loaded. Every existing ancestor is then in
#: the identity map, so a parent key still missing there has no row (a dangling foreign key):
#: the walk ends, as the recursive CTE does, instead of falling back to a second query.
ANCESTORS_PREFETCHED: ContextVar[tuple[Any, frozenset[Any]] | None] = ContextVar(
    "bastion_ancestors_prefetched", default=None
)


def _scope_reader(scope: str) -> Callable[[Any, Any, Any], Any]:
    if scope == "target":
        return lambda s, t, i: t
    if scope == "subject":
        return lambda s, t, i: s
    return lambda s, t, i: i


def operand_reader(operand: Operand) -> _Reader:
    """A function ``(subject, target, context, it) -> value`` for one operand."""
    if isinstance(operand, Literal):
        value = operand.value
        return lambda s, t, c, i: value
    if isinstance(operand, Context):
        name = operand.name

        def read_context(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Any:
            try:
                return c[name]
            except KeyError:
                raise MissingContext(name) from None

        return read_context
    key = operand.name
    unmapped = _UNMAPPED
    # read_attribute() inlined: these readers run on every check.
    if operand.scope == "target":

        def read_target(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Any:
            if type(t) in unmapped:
                return getattr(t, key, None)
            try:
                return t.__dict__[key]
            except (KeyError, AttributeError):
                return _read_slow(t, key)

        return read_target
    if operand.scope == "subject":

        def read_subject(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Any:
            if type(s) in unmapped:
                return getattr(s, key, None)
            try:
                return s.__dict__[key]
            except (KeyError, AttributeError):
                return _read_slow(s, key)

        return read_subject
    return lambda s, t, c, i: read_attribute(i, key)


# ---------------------------------------------------------------------------------------------
# three-valued comparisons


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _ne(a: Any, b: Any) -> bool:
    return bool(a != b)


def _lt(a: Any, b: Any) -> bool:
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return bool(a <= b)


def _gt(a: Any, b: Any) -> bool:
    return bool(a > b)


def _ge(a: Any, b: Any) -> bool:
    return bool(a >= b)


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": _ne,
    "<": _lt,
    "<=": _le,
    ">": _gt,
    ">=": _ge,
}


def in_3vl(value: Any, values: Any) -> bool | None:
    """SQL ``value IN (values)`` in three-valued logic."""
    values = tuple(values)
    if not values:
        return False
    if value is None:
        return None
    saw_null = False
    for v in values:
        if v is None:
            saw_null = True
        elif v == value:
            return True
    return None if saw_null else False


# ---------------------------------------------------------------------------------------------
# compilers


@register_python(Const)
def _const(node: Const) -> Predicate:
    value = node.value
    return lambda s, t, c, i: value


@register_python(And)
def _and(node: And) -> Predicate:
    preds = tuple(map(to_python, node.items))

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        result: bool | None = True
        for p in preds:
            v = p(s, t, c, i)
            if v is False:
                return False
            if v is None:
                result = None
        return result

    return pred


@register_python(Or)
def _or(node: Or) -> Predicate:
    preds = tuple(map(to_python, node.items))

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        result: bool | None = False
        for p in preds:
            v = p(s, t, c, i)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return pred


@register_python(Not)
def _not(node: Not) -> Predicate:
    inner = to_python(node.item)

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        v = inner(s, t, c, i)
        return None if v is None else not v

    return pred


@register_python(Compare)
def _compare(node: Compare) -> Predicate:
    left, right = operand_reader(node.left), operand_reader(node.right)
    op = OPERATORS[node.op]
    if isinstance(node.right, Literal):
        # the common shape: attribute <op> literal
        literal = node.right.value
        if literal is None:
            return lambda s, t, c, i: None

        def pred_literal(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
            a = left(s, t, c, i)
            return None if a is None else op(a, literal)

        return pred_literal

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        a = left(s, t, c, i)
        if a is None:
            return None
        b = right(s, t, c, i)
        return None if b is None else op(a, b)

    return pred


@register_python(In)
def _in(node: In) -> Predicate:
    left, values = operand_reader(node.left), operand_reader(node.values)
    if isinstance(node.values, Literal) and node.values.value:
        return _in_literal(left, node.values.value)

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        vs = values(s, t, c, i)
        if vs is None:
            return None  # a NULL list: nothing is known
        return in_3vl(left(s, t, c, i), vs)

    return pred


def _in_literal(left: _Reader, literal: tuple[Any, ...]) -> Predicate:
    """``x IN (literal, ...)`` as a set lookup (same three-valued answer as :func:`in_3vl`)."""
    try:
        members = frozenset(v for v in literal if v is not None)
    except TypeError:  # unhashable members: the general loop
        return lambda s, t, c, i: in_3vl(left(s, t, c, i), literal)
    miss = None if None in literal else False

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        value = left(s, t, c, i)
        if value is None:
            return None
        try:
            return True if value in members else miss
        except TypeError:  # an unhashable value is equal to no hashable member
            return miss

    return pred


@register_python(IsNull)
def _is_null(node: IsNull) -> Predicate:
    read = operand_reader(node.operand)
    if node.negated:
        return lambda s, t, c, i: read(s, t, c, i) is not None
    return lambda s, t, c, i: read(s, t, c, i) is None


@register_python(Related)
def _related(node: Related) -> Predicate:
    scope = _scope_reader(node.scope)
    key = node.name
    where = to_python(node.where)
    is_subject = isinstance(node.where, Same) and node.where.scope == "it"

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        owner = scope(s, t, i)
        try:
            value = read_attribute(owner, key)
        except NotLoaded:
            if not is_subject:
                raise
            return _foreign_key_is_subject(owner, key, s)
        if value is None:
            if is_subject and _unset_on_a_new_object(owner, key):
                # Fix: a new object with only its foreign key set (``Doc(owner_id=1)``) has no
                # related object to read (SQLAlchemy does not load one for it), so
                # ``target.owner == subject`` was False until a flush made it True: the key
                # decides, as for a stored object whose relationship is not loaded.
                return _foreign_key_is_subject(owner, key, s)
            return False
        if hasattr(value, "_sa_instance_state"):  # many-to-one: one related object
            return where(s, t, c, value) is True
        items = value.values() if isinstance(value, Mapping) else value
        return any(where(s, t, c, x) is True for x in items)

    return pred


def _unset_on_a_new_object(owner: Any, key: str) -> bool:
    """``owner`` is new (no row yet) and its relationship ``key`` was never set (only its
    foreign key may be)."""
    try:
        state = instance_state(owner)
    except (AttributeError, UnmappedInstanceError):
        return False
    return state.key is None and key not in owner.__dict__


def _foreign_key_is_subject(owner: Any, key: str, subject: Any) -> bool:
    """``owner.<key> == subject`` for an unloaded many-to-one, decided from the foreign key columns
    (as the SQL compiler does with ``owner_id = :pk``); raises NotLoaded for other relationships."""
    state = instance_state(owner)
    prop = state.mapper.relationships[key]
    if prop.uselist or prop.secondary is not None or not prop.local_remote_pairs:
        raise NotLoaded(key)
    try:
        subject_state = instance_state(subject)
    except (AttributeError, UnmappedInstanceError):
        return False
    if subject_state.key is None or subject_state.mapper.base_mapper is not prop.mapper.base_mapper:
        return False
    remote_values = dict(zip(prop.mapper.primary_key, subject_state.key[1], strict=True))
    for local, remote in prop.local_remote_pairs:
        if remote not in remote_values:
            raise NotLoaded(key)  # joins on a non-key column: let SQL decide
        value = read_attribute(owner, state.mapper.get_property_by_column(local).key)
        if value is None or value != remote_values[remote]:
            return False
    return True


@register_python(PythonRule)
def _python_rule(node: PythonRule) -> Predicate:
    fn = node.fn

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        # the Authorizer's session travels in the context; the function gets the caller's only
        return bool(fn(s, t, **{k: v for k, v in c.items() if k != SESSION_KEY}))

    return pred


def _related_objects(value: Any) -> Any:
    """The objects a relationship value holds: one, none or a collection's members."""
    if value is None:
        return ()
    if hasattr(value, "_sa_instance_state"):
        return (value,)
    return value.values() if isinstance(value, Mapping) else value


@register_python(Reroot)
def _reroot(node: Reroot) -> Predicate:
    scope = _scope_reader(node.scope)
    key = node.name
    rule = to_python(node.rule)

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        related = read_attribute(scope(s, t, i), key)
        return any(rule(s, x, c, None) is True for x in _related_objects(related))

    return pred


@register_python(Ancestors)
def _ancestors(node: Ancestors) -> Predicate:
    rule = to_python(node.rule)
    parent = node.parent

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        seen: set[int] = set()
        node_ = t
        while node_ is not None and id(node_) not in seen:  # a cycle is walked once
            seen.add(id(node_))
            if rule(s, node_, c, None) is True:
                return True
            node_ = parent_of(node_, parent, c)
        return False

    return pred


def parent_of(obj: Any, parent: str, context: Mapping[str, Any]) -> Any:
    """``obj.<parent>`` for a self-referential many-to-one, without a query per level.

    When the relationship is not loaded, the parent is looked up by its foreign key in the
    session's identity map. If it is not there, :class:`NotLoaded` carries a statement loading
    every ancestor of ``obj`` at once (one recursive query): the Authorizer runs it and walks
    again, so a walk costs at most one query."""
    try:
        return read_attribute(obj, parent)
    except NotLoaded:
        pass
    state = instance_state(obj)
    prop = state.mapper.relationships[parent]
    by_remote = {
        remote: read_attribute(obj, state.mapper.get_property_by_column(local).key)
        for local, remote in prop.local_remote_pairs
    }
    if any(v is None for v in by_remote.values()):
        return None
    key = prop.mapper.identity_key_from_primary_key(
        tuple(by_remote[c] for c in prop.mapper.primary_key)
    )
    session = state.session
    if session is not None:
        found = session.identity_map.get(key)
        if found is not None:
            return found
    prefetched = ANCESTORS_PREFETCHED.get()
    if prefetched is not None and (key == prefetched[0] or state.key in prefetched[1]):
        return None  # the prefetch loaded every ancestor there is: this parent has no row
    prefetch = ancestors_statement(prop, list(by_remote.items()))
    raise NotLoaded(parent, prefetch=prefetch, start=key)


def ancestors_statement(prop: Any, start: list[tuple[Any, Any]]) -> Any:
    """``SELECT`` of every ancestor (ORM entities) from the parent whose key is ``start``, up a
    self-referential many-to-one ``prop``; a cycle ends the recursion (``UNION``)."""
    mapper = prop.mapper
    if len(mapper.primary_key) != 1 or len(prop.local_remote_pairs) != 1:
        return None
    (local, remote), (_, value) = prop.local_remote_pairs[0], start[0]
    table = mapper.local_table
    up = sa.select(table.c[remote.key].label("id"), table.c[local.key].label("parent"))
    tree = up.where(table.c[remote.key] == value).cte("bastion_ancestors", recursive=True)
    step = table.alias("bastion_ancestor_step")
    tree = tree.union(
        sa.select(step.c[remote.key], step.c[local.key]).where(step.c[remote.key] == tree.c.parent)
    )
    pk = mapper.get_property_by_column(mapper.primary_key[0]).key
    return sa.select(mapper.class_).where(getattr(mapper.class_, pk).in_(sa.select(tree.c.id)))


@register_python(SqlRule)
def _sql_rule(node: SqlRule) -> Predicate:
    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        raise NotLoaded(f"{node} has no Python form")  # the Authorizer asks the database

    return pred


@register_python(Same)
def _same(node: Same) -> Predicate:
    scope = _scope_reader(node.scope)
    return lambda s, t, c, i: same_object(scope(s, t, i), s)


def same_object(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are the same object or the same database row."""
    if a is b:
        return a is not None
    if a is None or b is None:
        return False
    try:
        ka, kb = instance_state(a).key, instance_state(b).key
    except (AttributeError, UnmappedInstanceError):
        return False
    return ka is not None and ka[:2] == (kb[:2] if kb is not None else None)
