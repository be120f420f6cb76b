"""Compile a rule to a SQLAlchemy boolean expression over a mapped entity.

``to_sql(rule, entity, subject=..., context=...)`` returns a ``ColumnElement[bool]`` to put in a
``WHERE`` clause: the rows of ``entity`` for which the rule is TRUE. The compiler of each node type
comes from :data:`SQL_COMPILERS` (keyed by node class, MRO lookup; add kinds with
:func:`register_sql`).

Shapes
------
* Subject attributes and context values are known when the filter is built: they are bound as
  parameters, and parts of the rule that read only them are evaluated in Python and folded away
  (``subject.is_admin | (target.owner_id == subject.id)`` is no filter at all for an admin).
* Relationships compile to ``EXISTS`` semijoins (SQLAlchemy's ``any()``/``has()``, which correlate
  explicitly): never a join that multiplies the caller's rows, never ``DISTINCT``, never a change to
  the caller's SELECT list::

      documents.org_id IN (SELECT m.org_id FROM users AS u JOIN memberships AS m ON u.id = m.user_id
                           WHERE u.id = :id)
                                          -- subject.memberships.any(it.org_id == target.org_id)
      EXISTS (SELECT 1 FROM orgs AS o WHERE o.id = documents.org_id AND o.plan = :plan)
                                                    -- target.org.has(it.plan == "pro")

* Trees (``ancestors``) are one recursive CTE from the rows satisfying the rule down to their
  descendants, and a deferral through a plain many-to-one to such a tree reads only the foreign
  key: the descendants are listed once, not re-run in an ``EXISTS`` per row (SQLite did)::

      WITH RECURSIVE tree(id) AS (SELECT f.id FROM folders AS f WHERE f.owner_id = :id UNION
                                  SELECT s.id FROM folders AS s, tree WHERE s.parent_id = tree.id)
      ... WHERE documents.folder_id IN (SELECT tree.id FROM tree)       -- = ANY(ARRAY(...)) on PG
                                          -- defer("doc.read", attributes="folder", ...) to
                                          -- ancestors(target.parent, target.owner_id == subject.id)

  Each part of the rule that reads the row seeds the CTE with its own ``SELECT`` (its own index);
  a part that reads none (``EXISTS`` of a global grant) is a gate outside the recursion:
  ``UNION ALL SELECT f.id FROM (SELECT 1 WHERE EXISTS (...)) AS gate JOIN folders AS f ON true``.

* Three-valued logic is SQL's own. The compiler tracks *polarity* (the number of ``Not`` above a
  node): where it is positive, UNKNOWN and FALSE lead to the same answer (a row is kept only when
  TRUE), so a relationship whose inner rule equates a related column with a target column may use
  the cheaper, uncorrelated ``target.col IN (SELECT ...)`` form, and ``x AND UNKNOWN`` folds to
  FALSE. Under a ``Not`` the exact ``EXISTS`` form and typed ``NULL`` constants are kept.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import aliased
from sqlalchemy.orm import join as orm_join
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BooleanClauseList,
    ColumnElement,
    Grouping,
    Tuple,
)
from sqlalchemy.sql.selectable import CTE

from bastion.errors import DuplicateName, InvalidArgument, MissingContext, RuleNotTranslatable
from bastion.rules.constructs import KeyIn, RowsIn, key_in, rows_in
from bastion.rules.nodes import (
    Ancestors,
    And,
    Attr,
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
from bastion.rules.to_python import OPERATORS, in_3vl, to_python

__all__ = [
    "ROW",
    "SQL_COMPILERS",
    "SYMBOLIC",
    "RuleInputs",
    "SqlEnv",
    "SqlValue",
    "exists_through",
    "register_sql",
    "rule_inputs",
    "same_rows",
    "scoped_alias",
    "sql_clause",
    "to_sql",
]

#: A compiled node: a Python truth value (folded) or a SQL boolean expression.
SqlValue = Union[bool, None, ColumnElement[bool]]  # noqa: UP007 - a runtime alias on 3.10


class _Symbolic:
    """'Any subject': used when a rule is compiled at registration (values become parameters)."""

    def __repr__(self) -> str:
        return "SYMBOLIC"


SYMBOLIC: Any = _Symbolic()


class _Row:
    """'The subject is a row' (who_can): its values are columns of ``SqlEnv.subject_entity``."""

    def __repr__(self) -> str:
        return "ROW"


ROW: Any = _Row()
_counter = itertools.count()


@dataclass(frozen=True)
class SqlEnv:
    """What a node compiler needs: the entities in scope, the subject, the context, the polarity."""

    target: Any
    subject: Any
    context: Mapping[str, Any]
    subject_type: type | None = None
    it: Any = None
    positive: bool = True
    depth: int = 0  #: how many relationship subqueries enclose the node
    extra: dict[str, Any] = field(default_factory=dict)
    #: "row mode" (who_can): the subject is a row of this entity, not a known instance
    subject_entity: Any = None
    #: write a loaded subject collection's values into the SQL (see :func:`_inline_loaded`)
    inline_loaded: bool = True

    @property
    def symbolic(self) -> bool:
        return self.subject is SYMBOLIC

    @property
    def row(self) -> bool:
        """True when the subject is a row of ``subject_entity`` (the rule read backwards)."""
        return self.subject_entity is not None

    def entity(self, scope: str) -> Any:
        entity = self.target if scope == "target" else self.it
        if entity is None:
            raise RuleNotTranslatable(f"{scope}", f"'{scope}' is not available in this rule")
        return entity


_ALIASES: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], Any]] = weakref.WeakKeyDictionary()


def scoped_alias(mapper: Any, role: str, depth: int) -> Any:
    """A reusable ``aliased(mapper)`` for one role at one subquery depth.

    Building an alias and adapting its columns costs more than running a small query; reusing
    them makes building a filter cheap. Sibling subqueries may share an alias (each has its own
    scope); nested ones never do, because the depth is part of the key (a shared alias would be
    correlated with the enclosing query instead of standing for its own rows).
    """
    pool = _ALIASES.setdefault(mapper, {})
    key = (role, depth)
    alias = pool.get(key)
    if alias is None:
        alias = pool[key] = aliased(
            mapper, name=f"bastion_{role}_{mapper.local_table.name}_{depth}"
        )
    return alias


#: node class -> compiler(node, env) -> SqlValue
SQL_COMPILERS: dict[type[Rule], Callable[[Any, SqlEnv], SqlValue]] = {}


def register_sql(
    node_type: type[Rule], *, replace: bool = False
) -> Callable[[Callable[[Any, SqlEnv], SqlValue]], Callable[[Any, SqlEnv], SqlValue]]:
    """Decorator registering the SQL compiler of ``node_type``; refuses to overwrite silently."""

    def decorate(fn: Callable[[Any, SqlEnv], SqlValue]) -> Callable[[Any, SqlEnv], SqlValue]:
        if node_type in SQL_COMPILERS and not replace:
            raise DuplicateName("SQL compiler for", node_type.__name__, "is already registered")
        SQL_COMPILERS[node_type] = fn
        return fn

    return decorate


def compile_sql(rule: Rule, env: SqlEnv) -> SqlValue:
    """Compile one node (dispatching on its class) to a folded value or a SQL expression."""
    for cls in type(rule).__mro__:
        fn = SQL_COMPILERS.get(cls)
        if fn is not None:
            return fn(rule, env)
    raise RuleNotTranslatable(rule, f"no SQL compiler for {type(rule).__name__} nodes")


def sql_clause(value: SqlValue) -> ColumnElement[bool]:
    """Turn a compiled value into a WHERE-able expression (``true``, ``false``, typed ``NULL``)."""
    if value is True:
        return sa.true()
    if value is False:
        return sa.false()
    if value is None:
        return sa.cast(sa.null(), sa.Boolean)
    return value


def to_sql(
    rule: Rule,
    entity: Any,
    subject: Any = SYMBOLIC,
    context: Mapping[str, Any] | None = None,
    *,
    subject_type: type | None = None,
    inline_loaded: bool = True,
) -> ColumnElement[bool]:
    """Compile ``rule`` to a boolean SQL expression over ``entity`` (a mapped class or alias).

    ``subject`` is the subject instance (its values are bound as parameters); the default
    :data:`SYMBOLIC` compiles with placeholder parameters, as registration does to validate a rule.
    ``inline_loaded``: write the subject's loaded collections in as values (see
    :func:`_inline_loaded`); False keeps the subqueries.
    """
    env = SqlEnv(
        entity,
        subject,
        context or {},
        subject_type or _type_of(subject),
        inline_loaded=inline_loaded,
    )
    return sql_clause(compile_sql(rule, env))


def _type_of(subject: Any) -> type | None:
    return None if subject is SYMBOLIC or subject is None else type(subject)


# ---------------------------------------------------------------------------------------------
# the inputs of a compiled shape


@dataclass(frozen=True)
class RuleInputs:
    """Everything outside the database that a rule's SQL depends on: with equal inputs, the
    compiled clause is equal, so it can be cached and reused (SQLAlchemy clauses are immutable)."""

    subject_attributes: tuple[str, ...]
    context_names: tuple[str, ...]
    subject_identity: bool  #: the rule compares with / joins from the subject's primary key
    cacheable: bool = True  #: False when a node's SQL depends on more than these inputs
    #: ``(relationship, attributes of its objects)`` per ``subject.<rel>.any(...)``: a loaded
    #: collection's values are written into the SQL (:func:`_inline_loaded`), so they key it
    subject_collections: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def key(self, subject: Any, context: Mapping[str, Any]) -> Hashable | None:
        """A hashable key of the inputs' values for this call, or None if one is unhashable."""
        if not self.cacheable:
            return None
        values: list[Any] = [type(subject)]
        for name in self.subject_attributes:
            values.append(_freeze(getattr(subject, name, None) if subject is not None else None))
        for name in self.context_names:
            values.append(_freeze(context.get(name, _MISSING)))
        if self.subject_identity:
            state = sa_inspect(subject, raiseerr=False) if subject is not None else None
            values.append(None if state is None else state.key)
        for name, attrs in self.subject_collections:
            members = _loaded_members(subject, name)
            values.append(
                None
                if members is None
                else tuple(
                    tuple(_freeze(m.__dict__.get(a, _MISSING)) for a in attrs) for m in members
                )
            )
        key = tuple(values)
        try:
            hash(key)
        except TypeError:
            return None
        return key


_MISSING = object()


def _freeze(value: Any) -> Any:
    """A cache-key part for one input value, with its type: ``True == 1 == 1.0`` in Python,
    but their clauses differ (fix: after ``filter(org=1)``, ``filter(org=True)`` reused its
    clause instead of being refused as the check refuses it)."""
    if isinstance(value, (list, set, frozenset, tuple)):
        return (type(value), tuple(map(_freeze, value)))
    return (type(value), value)


def rule_inputs(rule: Rule) -> RuleInputs:
    """Collect the subject attributes, context names and identity uses of ``rule``."""
    attrs: dict[str, None] = {}
    names: dict[str, None] = {}
    identity = False
    cacheable = True
    collections: dict[str, dict[str, None]] = {}
    stack = [rule]
    while stack:
        node = stack.pop()
        stack.extend(node.children())
        identity = identity or node.reads_subject_identity()
        cacheable = cacheable and node.sql_depends_only_on_inputs()
        for operand in node.operands():
            if isinstance(operand, Context):
                names[operand.name] = None
            elif isinstance(operand, Attr) and operand.scope == "subject":
                attrs[operand.name] = None
        if isinstance(node, Related) and node.scope == "subject":
            read = collections.setdefault(node.name, {})
            read.update(dict.fromkeys(_it_attributes(node.where)))
    return RuleInputs(
        tuple(attrs),
        tuple(names),
        identity,
        cacheable,
        tuple((name, tuple(read)) for name, read in collections.items()),
    )


def _it_attributes(rule: Rule) -> list[str]:
    """The attributes of ``it`` that ``rule`` reads (nested relationships included: a superset
    is enough for a cache key)."""
    found = [o.name for o in rule.operands() if isinstance(o, Attr) and o.scope == "it"]
    for child in rule.children():
        found += _it_attributes(child)
    return found


# ---------------------------------------------------------------------------------------------
# operands

_Kind = str  # "value" (a Python value) or "sql" (a column / SQL expression)


def _param(name: str, **kw: Any) -> Any:
    return sa.bindparam(f"{name}_{next(_counter)}", **kw)


def operand_sql(operand: Operand, env: SqlEnv, *, expanding: bool = False) -> tuple[_Kind, Any]:
    """An operand as ``("value", python_value)`` or ``("sql", expression)``."""
    if isinstance(operand, Literal):
        return "value", operand.value
    if isinstance(operand, Context):
        if env.symbolic:
            return "sql", _param(f"ctx_{operand.name}", expanding=expanding)
        try:
            return "value", env.context[operand.name]
        except KeyError:
            raise MissingContext(operand.name) from None
    if operand.scope == "subject":
        if env.row:
            return "sql", _subject_column(env, operand.name)
        if env.symbolic:
            return "sql", _param(f"subject_{operand.name}", expanding=expanding)
        return "value", getattr(
            env.subject, operand.name, None
        ) if env.subject is not None else None
    entity = env.entity(operand.scope)
    return "sql", getattr(entity, operand.name)


def _subject_column(env: SqlEnv, name: str) -> Any:
    mapper = sa_inspect(env.subject_entity).mapper
    if name not in mapper.column_attrs:
        raise RuleNotTranslatable(
            f"subject.{name}",
            f"{mapper.class_.__name__}.{name} is not a mapped column: who_can() cannot read the "
            "rule from the subject's side",
        )
    return getattr(env.subject_entity, name)


_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SQL_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _typed_value(expr: Any, value: Any) -> Any:
    # An explicit bind parameter: ``col == None`` would silently become ``IS NULL``.
    return sa.literal(value, type_=getattr(expr, "type", None))


# ---------------------------------------------------------------------------------------------
# compilers


@register_sql(Const)
def _const(node: Const, env: SqlEnv) -> SqlValue:
    return node.value


def _junction(node: And | Or, env: SqlEnv) -> SqlValue:
    is_and = isinstance(node, And)
    absorbing, identity = (False, True) if is_and else (True, False)
    exprs: list[ColumnElement[bool]] = []
    unknown = False
    for item in node.items:
        value = compile_sql(item, env)
        if value is absorbing:
            return absorbing
        if value is None:
            unknown = True
        elif value is not identity:
            exprs.append(value)  # type: ignore[arg-type]
    if unknown:
        if env.positive and is_and:
            return False  # x AND UNKNOWN is never TRUE
        if not exprs:
            return None
        if not env.positive:
            exprs.append(sql_clause(None))
    if not exprs:
        return identity
    if len(exprs) == 1:
        return exprs[0]
    return sa.and_(*exprs) if is_and else sa.or_(*exprs)


register_sql(And)(_junction)
register_sql(Or)(_junction)


@register_sql(Not)
def _not(node: Not, env: SqlEnv) -> SqlValue:
    value = compile_sql(node.item, replace(env, positive=not env.positive))
    if value is None:
        return None
    if isinstance(value, bool):
        return not value
    return sa.not_(value)


@register_sql(Compare)
def _compare(node: Compare, env: SqlEnv) -> SqlValue:
    (lk, lv), (rk, rv) = operand_sql(node.left, env), operand_sql(node.right, env)
    op = node.op
    if lk == "value" and rk == "value":
        return None if lv is None or rv is None else OPERATORS[op](lv, rv)
    if lk == "value":  # put the SQL side on the left
        (lk, lv), (rk, rv), op = (rk, rv), (lk, lv), _FLIPPED[op]
    if rk == "value":
        if rv is None:
            return None  # a comparison with NULL is UNKNOWN for every row
        rv = _typed_value(lv, rv)
    return _SQL_OPERATORS[op](lv, rv)  # type: ignore[no-any-return]


@register_sql(In)
def _in(node: In, env: SqlEnv) -> SqlValue:
    lk, lv = operand_sql(node.left, env)
    vk, vs = operand_sql(node.values, env, expanding=True)
    if vk == "sql":
        return lv.in_(vs) if lk == "sql" else sa.literal(lv).in_(vs)
    if vs is None:
        return None
    values = tuple(vs)
    if lk == "value":
        return in_3vl(lv, values)
    if not values:
        return False
    return lv.in_(values)  # type: ignore[no-any-return]


@register_sql(IsNull)
def _is_null(node: IsNull, env: SqlEnv) -> SqlValue:
    kind, value = operand_sql(node.operand, env)
    if kind == "value":
        return (value is not None) if node.negated else (value is None)
    return value.is_not(None) if node.negated else value.is_(None)  # type: ignore[no-any-return]


def _relationship(entity: Any, name: str) -> Any:
    attr = getattr(entity, name, None)
    prop = getattr(attr, "property", None)
    if prop is None or not hasattr(prop, "mapper") or not hasattr(prop, "uselist"):
        raise RuleNotTranslatable(name, f"{name!r} is not a relationship of {entity!r}")
    return attr


@register_sql(Related)
def _related(node: Related, env: SqlEnv) -> SqlValue:
    if node.scope == "subject" and not env.row:
        return _related_from_subject(node, env)
    owner = env.subject_entity if node.scope == "subject" else env.entity(node.scope)
    attr = _relationship(owner, node.name)
    if env.positive and isinstance(node.where, Same) and node.where.scope == "it":
        direct = _is_subject_direct(attr, env)
        if direct is not None:
            return direct
    related = scoped_alias(attr.property.mapper, "it", env.depth + 1)
    # Inside EXISTS only TRUE rows count: the inner rule has positive polarity.
    body = compile_sql(node.where, replace(env, it=related, positive=True, depth=env.depth + 1))
    if body is False or body is None:
        return False
    return exists_through(attr, related, body)


def exists_through(attr: Any, alias: Any, body: Any) -> ColumnElement[bool]:
    """``attr.of_type(alias).has(body)`` (or ``.any(body)``): EXISTS through the relationship
    ``attr`` to ``alias``, with ``body`` a condition on the alias (``True``: any related row).

    Fix: when the relationship leads to a single-table-inheritance subclass, SQLAlchemy's
    ``has()``/``any()`` on ``of_type(alias)`` add the subclass's discriminator criterion
    *unaliased* (seen on 2.0 and 2.1): an extra cartesian FROM, and on a self-referential table
    (an adjacency list) a condition on the enclosing row that silently denies. For those targets
    the EXISTS is built from the ORM join's ON clauses, which are adapted correctly."""
    uselist = attr.property.uselist
    if not sa_inspect(alias).mapper.single:
        if body is True:
            return attr.any() if uselist else attr.has()  # type: ignore[no-any-return]
        via = attr.of_type(alias)
        return via.any(body) if uselist else via.has(body)  # type: ignore[no-any-return]
    join: Any = orm_join(attr.parent.entity, alias, attr.of_type(alias))
    froms, onclauses = [alias], [join.onclause]
    if attr.property.secondary is not None:  # (owner JOIN secondary ON ...) JOIN alias ON ...
        froms.append(join.left.right)
        onclauses.append(join.left.onclause)
    stmt = sa.select(sa.literal(1)).select_from(*froms).where(*onclauses)
    if body is not True:
        stmt = stmt.where(body)
    return stmt.correlate_except(*froms).exists()


def _is_subject_direct(attr: Any, env: SqlEnv) -> SqlValue | None:
    """``target.owner == subject`` on a many-to-one as ``owner_id = :pk`` (sargable, no EXISTS).

    Only in positive polarity: a NULL foreign key makes this UNKNOWN where EXISTS says FALSE."""
    if env.symbolic or env.row or attr.property.uselist or env.subject is None:
        return None
    state = sa_inspect(env.subject, raiseerr=False)
    if state is None or state.key is None:
        return False if state is None else None
    prop = attr.property
    if state.mapper.base_mapper is not prop.mapper.base_mapper or prop.secondary is not None:
        return False if prop.secondary is None else None
    remote_values = dict(zip(prop.mapper.primary_key, state.key[1], strict=True))
    if not all(remote in remote_values for _, remote in prop.local_remote_pairs):
        return None  # joins on a non-key column: keep EXISTS
    entity = attr.parent.entity if hasattr(attr.parent, "entity") else attr.class_
    local_mapper = sa_inspect(entity).mapper
    return sa.and_(
        *(
            getattr(entity, local_mapper.get_property_by_column(local).key)
            == sa.literal(remote_values[remote], type_=local.type)
            for local, remote in prop.local_remote_pairs
        )
    )


def _subject_key(env: SqlEnv) -> tuple[Any, list[Any]]:
    """The subject's mapper and primary-key values (parameters when symbolic)."""
    cls = env.subject_type
    if cls is None or sa_inspect(cls, raiseerr=False) is None:
        raise RuleNotTranslatable(
            "subject",
            f"the subject type {cls!r} is not a mapped class: its relationships have no SQL",
        )
    mapper: Any = sa_inspect(cls)
    if env.symbolic:
        return mapper, [_param("subject_pk") for _ in mapper.primary_key]
    state = sa_inspect(env.subject)
    if state.key is None:
        raise InvalidArgument(
            f"the subject {env.subject!r} is not persistent: its relationships cannot be queried"
        )
    return mapper, list(state.key[1])


def _related_from_subject(node: Related, env: SqlEnv) -> SqlValue:
    if env.subject is None:
        return False  # no subject, no related rows
    if env.positive and env.inline_loaded and not env.symbolic and not env.row:
        inlined = _inline_loaded(node, env)
        if inlined is not None:
            return inlined
    mapper, pk_values = _subject_key(env)
    me = scoped_alias(mapper, "subject", env.depth + 1)
    attr = _relationship(me, node.name)
    related = scoped_alias(attr.property.mapper, "it", env.depth + 1)
    pk_match = sa.and_(
        *(
            getattr(me, mapper.get_property_by_column(c).key) == v
            for c, v in zip(mapper.primary_key, pk_values, strict=True)
        )
    )
    if env.positive:
        pk_by_column = dict(zip(mapper.primary_key, pk_values, strict=True))
        keyed = _keyed_by_subject(attr, related, pk_by_column)
        shaped = _as_in(node, env, me, attr, related, pk_match, keyed)
        if shaped is not None:
            return shaped
    body = compile_sql(node.where, replace(env, it=related, positive=True, depth=env.depth + 1))
    if body is False or body is None:
        return False
    single = sa_inspect(related).mapper.single
    inner = attr.of_type(related).any() if body is True and not single else None
    inner = exists_through(attr, related, body) if inner is None else inner
    stmt = sa.select(sa.literal(1)).select_from(me).where(pk_match, inner)
    return stmt.correlate_except(me).exists()


#: the most objects a loaded subject collection may hold to be written into the SQL
INLINE_MAX = 100
#: rule nodes a collection's own condition may use to be decided in Python per object
_INLINE_NODES = (Const, And, Or, Not, Compare, In, IsNull)
_KEEP: dict[Rule, Any] = {}


def _loaded_members(subject: Any, name: str) -> list[Any] | None:
    """The objects of ``subject.<name>`` if that collection is loaded and holds at most
    :data:`INLINE_MAX` of them, else None."""
    loaded = getattr(subject, "__dict__", None)
    if loaded is None or name not in loaded:
        return None
    members = loaded[name]
    if not isinstance(members, (list, set, frozenset, tuple)) or len(members) > INLINE_MAX:
        return None
    return list(members)


def _inline_loaded(node: Related, env: SqlEnv) -> SqlValue | None:
    """``target.col IN (v1, v2, ...)`` for ``subject.<rel>.any(it.x == target.col & <cond>)``
    when the subject's collection is loaded: its objects' ``x`` values (those meeting
    ``<cond>``, decided in Python, NULLs left out) written into the statement instead of a
    subquery. The filter then is as the subject's check sees it, and SQLite can answer an OR of
    such branches with one index per branch (a subquery in an OR made it scan the table).
    Positive polarity only (a NULL then makes no difference); None when the collection, or an
    attribute an object needs, is not loaded, or ``<cond>`` reads more than the object, the
    subject and the context. The values are part of the clause's cache key
    (:attr:`RuleInputs.subject_collections`)."""
    members = _loaded_members(env.subject, node.name)
    if members is None:
        return None
    for it_attr, target_attr, rest in _it_target_equalities(node):
        if not all(_about_it_only(r) for r in rest):
            return None
        keep = _keep_predicate(rest[0] if len(rest) == 1 else And(rest)) if rest else None
        values: dict[Any, None] = {}
        for member in members:
            loaded = member.__dict__
            if it_attr.name not in loaded:
                return None
            if keep is not None:
                try:
                    if keep(env.subject, None, env.context, member) is not True:
                        continue
                except Exception:  # noqa: BLE001 - not decidable in Python: keep the subquery
                    return None
            value = loaded[it_attr.name]
            if value is not None:
                values[value] = None
        if not values:
            return False
        return getattr(env.entity("target"), target_attr.name).in_(list(values))  # type: ignore[no-any-return]
    return None


def _about_it_only(rule: Rule) -> bool:
    """Does ``rule`` read only ``it``, the subject and the context, through plain nodes?"""
    if not isinstance(rule, _INLINE_NODES):
        return False
    if any(isinstance(o, Attr) and o.scope == "target" for o in rule.operands()):
        return False
    return all(_about_it_only(child) for child in rule.children())


def _keep_predicate(rule: Rule) -> Any:
    found = _KEEP.get(rule)
    if found is None:
        if len(_KEEP) >= 256:
            _KEEP.clear()
        found = _KEEP[rule] = to_python(rule)
    return found


def _keyed_by_subject(attr: Any, related: Any, pk_by_column: dict[Any, Any]) -> Any:
    """For a one-to-many from the subject keyed on its primary key (``memberships.user_id``),
    the condition selecting the subject's related rows *without joining the subject's table*
    (``memberships.user_id = :id``); None for other relationship shapes."""
    prop = attr.property
    pairs = prop.local_remote_pairs
    if prop.secondary is not None or not pairs or any(loc not in pk_by_column for loc, _ in pairs):
        return None
    mapper = prop.mapper
    return sa.and_(
        *(
            getattr(related, mapper.get_property_by_column(remote).key) == pk_by_column[local]
            for local, remote in pairs
        )
    )


def _it_target_equalities(
    node: Related,
) -> Iterator[tuple[Attr, Attr, tuple[Rule, ...]]]:
    """Each ``it.x == target.y`` (either way round) among the ANDed items of ``node.where``:
    ``(it.x, target.y, the other items)``."""
    items = node.where.items if isinstance(node.where, And) else (node.where,)
    for n, item in enumerate(items):
        if not (isinstance(item, Compare) and item.op == "=="):
            continue
        left, right = item.left, item.right
        if isinstance(right, Attr) and right.scope == "it":
            left, right = right, left
        if (
            isinstance(left, Attr)
            and isinstance(right, Attr)
            and left.scope == "it"
            and right.scope == "target"
        ):
            yield left, right, items[:n] + items[n + 1 :]


def _as_in(
    node: Related,
    env: SqlEnv,
    me: Any,
    attr: Any,
    related: Any,
    pk_match: Any,
    keyed: Any = None,
) -> SqlValue | None:
    """``target.col IN (SELECT it.col ...)`` when the inner rule equates a related and a target
    column (positive polarity only: NULLs then make no difference)."""
    for it_attr, target_attr, others in _it_target_equalities(node):
        rest = And(others) if others else None
        inner_env = replace(env, it=related, positive=True, depth=env.depth + 1)
        where = compile_sql(rest, inner_env) if rest is not None else True
        if where is False or where is None:
            return False
        column = getattr(related, it_attr.name)
        if keyed is not None:  # the related rows by their foreign key: no join
            sub = sa.select(column).where(keyed)
        else:
            sub = sa.select(column).select_from(me).join(attr.of_type(related)).where(pk_match)
        if where is not True:
            sub = sub.where(where)
        # key_in: ``= ANY(ARRAY(...))`` on PostgreSQL, an InitPlan that bitmap scans can use
        return key_in(
            getattr(env.entity("target"), target_attr.name), sub.correlate_except(me, related)
        )
    return None


@register_sql(Reroot)
def _reroot(node: Reroot, env: SqlEnv) -> SqlValue:
    if node.scope == "subject":
        raise RuleNotTranslatable(node, "deferral starts from the target or a related object")
    attr = _relationship(env.entity(node.scope), node.name)
    mapper = attr.property.mapper
    depth = env.depth + 1
    alias = scoped_alias(mapper, "target", depth)
    # Inside, ``target`` is the related object; only TRUE rows count (positive polarity).
    body = compile_sql(node.rule, replace(env, target=alias, it=None, positive=True, depth=depth))
    if body is False or body is None:
        return False
    shortcut = _through_foreign_key(attr, alias, body, env)
    if shortcut is not None:
        return shortcut
    return exists_through(attr, alias, body)


def _through_foreign_key(attr: Any, alias: Any, body: Any, env: SqlEnv) -> SqlValue | None:
    """``documents.folder_id IN (SELECT id FROM tree)`` instead of ``EXISTS (SELECT 1 FROM folders
    AS f WHERE f.id = documents.folder_id AND f.id IN (SELECT id FROM tree))``.

    The EXISTS is a correlated subquery per outer row: SQLite re-ran the descendants CTE inside
    it (W4: 70x the hand-written CTE). When the related object's rule is only "its key is among
    these keys of existing rows" (:class:`RowsIn`, what ``ancestors()`` returns) and the
    many-to-one joins exactly ``local = that key``, the related row need not be read: the key
    list is computed once and the outer table is read through its foreign-key index
    (:func:`key_in`: ``= ANY(ARRAY(...))`` on PostgreSQL, which otherwise hashes the list and scans
    every row). The keys are of existing rows, so a dangling foreign key still finds nothing. A
    NULL foreign key makes ``IN`` UNKNOWN where EXISTS is FALSE: the same in positive polarity;
    under a ``NOT`` the key is required to be non-NULL explicitly."""
    if not isinstance(body, RowsIn) or body.entity is not alias:
        return None
    local = _plain_foreign_key(attr, body.entity_key)
    if local is None:
        return None
    owner = attr.parent.entity if hasattr(attr.parent, "entity") else attr.class_
    column = getattr(owner, sa_inspect(owner).mapper.get_property_by_column(local).key)
    found = key_in(column, body.select)
    return found if env.positive else sa.and_(column.is_not(None), found)


def _plain_foreign_key(attr: Any, remote_key: str) -> Any:
    """The local column of a many-to-one whose join is exactly ``local = remote.<remote_key>``
    (no secondary table, no extra join criteria, no single-table-inheritance discriminator on
    the related side), else None."""
    prop = attr.property
    if prop.uselist or prop.secondary is not None or prop.mapper.single:
        return None
    if len(prop.local_remote_pairs) != 1:
        return None
    local, remote = prop.local_remote_pairs[0]
    if prop.mapper.get_property_by_column(remote).key != remote_key:
        return None
    join = prop.primaryjoin
    if not isinstance(join, BinaryExpression) or join.operator is not operators.eq:
        return None
    sides = (_bare(join.left), _bare(join.right))
    if sides not in ((_bare(local), _bare(remote)), (_bare(remote), _bare(local))):
        return None
    return local


def _bare(column: Any) -> Any:
    """A column without the ORM's annotations (a relationship's join and its pairs carry them)."""
    return column._deannotate()


@register_sql(Ancestors)
def _ancestors(node: Ancestors, env: SqlEnv) -> SqlValue:
    entity = env.entity("target")
    mapper = sa_inspect(entity).mapper
    prop = mapper.relationships.get(node.parent)
    if prop is None or prop.mapper.base_mapper is not mapper.base_mapper or prop.uselist:
        raise RuleNotTranslatable(node, f"{node.parent!r} is not a many-to-one to the same class")
    if len(mapper.primary_key) != 1 or len(prop.local_remote_pairs) != 1:
        raise RuleNotTranslatable(node, "trees need a single-column primary and foreign key")
    depth = env.depth + 1
    # The tree's rows are the target's and those ``parent`` leads to, as in the Python walk:
    # with single-table inheritance an alias of ``Invoice`` added ``kind IN ('invoice',
    # 'receipt')`` and lost an invoice's parent that is a plain Document. Fix: an alias of the
    # class ``parent`` leads to (``Folder``) lost the target itself when it is a sibling class
    # (a ``File`` under folders: ``kind IN ('folder')``), and every answer in SQL was False.
    # The nearest class both are: ``Node``.
    mapper = next(m for m in prop.mapper.iterate_to_root() if mapper.isa(m))
    base = scoped_alias(mapper, "tree", depth)
    body = compile_sql(node.rule, replace(env, target=base, it=None, positive=True, depth=depth))
    if body is False or body is None:
        return False
    if body is True:
        return True  # every object satisfies the rule itself
    (local, remote) = prop.local_remote_pairs[0]
    pk_key = mapper.get_property_by_column(remote).key
    fk_key = mapper.get_property_by_column(local).key
    if env.row:
        return _ancestors_of_row(entity, mapper, base, body, (pk_key, fk_key), depth)
    key = getattr(base, pk_key)
    table = sa_inspect(base).selectable
    per_row: list[Any] = []
    constant: list[Any] = []
    for part in _disjuncts(body):
        (per_row if _reads(part, table) else constant).append(part)
    keys: list[Any] = []
    if per_row:
        # Down from the objects satisfying the rule to all their descendants; UNION (not ALL)
        # drops rows already found, so a cycle in the data ends the recursion.
        tree = _tree_seed(key, per_row).cte(recursive=True)
        step = scoped_alias(mapper, "tree_step", depth)
        tree = tree.union(
            sa.select(getattr(step, pk_key)).where(getattr(step, fk_key) == tree.c.id)
        )
        keys.append(sa.select(tree.c.id))
    if constant:
        # A part that reads no row (``EXISTS (global grant)``) holds for every object itself:
        # outside the recursion (in its seed, PostgreSQL counted all the rows as seeds, estimated
        # millions of rows and spent 100 ms compiling the query with JIT).
        keys.append(_gated(key, base, sa.or_(*constant)))
    return rows_in(entity, pk_key, keys[0] if len(keys) == 1 else sa.union_all(*keys))


def _tree_seed(key: Any, parts: list[Any]) -> sa.Select[Any]:
    """The keys of the rows satisfying one of ``parts`` (the disjuncts of the rule that read the
    row): one ``SELECT`` per part, so that each uses its own index (``id IN (scoped grants) OR
    EXISTS (SELECT 1 FROM members WHERE folder_id = id ...)`` can use none and scans every row).
    A row is in the seed when some part is TRUE, which is when their OR is TRUE (the recursive
    UNION drops duplicates)."""
    parts = [_plain_in(part) for part in parts]
    if len(parts) == 1:
        return sa.select(key.label("id")).where(parts[0])
    seed = sa.union_all(*(sa.select(key.label("id")).where(part) for part in parts))
    found = seed.subquery("bastion_tree_seed")
    return sa.select(found.c.id)


def _plain_in(clause: Any) -> Any:
    """``clause`` with its :func:`key_in` sets spelled ``IN (SELECT ...)`` on every database.

    In a recursive query's seed, PostgreSQL estimates ``IN (SELECT ...)`` from the statistics of
    the subject's rows (a couple of grants) but ``= ANY(ARRAY(...))`` by a default guess; the
    larger guess made it walk each level of the tree with a hash join over every folder (W4: 5×
    the hand-written query instead of 1×)."""

    def replace(element: Any, **kw: Any) -> Any:
        if isinstance(element, KeyIn) and not isinstance(element.column, Tuple):
            return element.column.in_(element.select)
        return None

    if not any(isinstance(e, KeyIn) for e in sa.sql.visitors.iterate(clause)):
        return clause  # nothing to respell: keep the clause (and any CTE in it) as it is
    opts: dict[str, Any] = {}
    return sa.sql.visitors.replacement_traverse(clause, opts, replace)


def _gated(key: Any, base: Any, condition: Any) -> sa.Select[Any]:
    """Every key when ``condition`` (which reads no row: ``EXISTS (global grant)``) is TRUE.

    ``SELECT id FROM folders WHERE EXISTS (...)`` scanned every folder on SQLite, testing the
    (cached) condition per row: 1.3 ms of W4's 0.2 ms. Joined to a one-row gate, the condition
    is decided first and an empty gate reads no folder (PostgreSQL: a one-time filter)::

        SELECT f.id FROM (SELECT 1 AS open WHERE EXISTS (...)) AS gate JOIN folders AS f ON 1
    """
    gate = sa.select(sa.literal(1).label("open")).where(condition).subquery("bastion_tree_gate")
    return sa.select(key.label("id")).select_from(gate).join(base, sa.true())


def _reads(clause: Any, table: Any) -> bool:
    """Whether ``clause`` (subqueries included) names a column of ``table``.

    CTEs are not entered: they cannot be correlated (SQLAlchemy renders them at the top of the
    statement), and the grants' CTE is most of the tree to walk."""
    stack = [clause]
    while stack:
        element = stack.pop()
        if getattr(element, "table", None) is table:
            return True
        if not isinstance(element, CTE):
            stack.extend(element.get_children())
    return False


def _disjuncts(clause: Any) -> list[Any]:
    """The operands of a (nested) top-level SQL ``OR``; ``[clause]`` for anything else."""
    while isinstance(clause, Grouping):
        clause = clause.element
    if isinstance(clause, BooleanClauseList) and clause.operator is operators.or_:
        return [part for item in clause.clauses for part in _disjuncts(item)]
    return [clause]


def _ancestors_of_row(
    entity: Any, mapper: Any, base: Any, body: Any, keys: tuple[str, str], depth: int
) -> SqlValue:
    """:class:`Ancestors` when the subject is a row (``who_can``): the rule may read that row.

    A CTE cannot be correlated: the descendants CTE above, with ``users.level`` in its body, got
    its own ``FROM users`` (a cross join: "some user satisfies it", so everyone was allowed), and
    ``subject.memberships.any()`` in it was a "missing FROM-clause entry" on PostgreSQL. Here the
    CTE is the (object, ancestor) closure, which reads no outer row; the rule is applied in a
    correlated ``EXISTS`` over it. UNION (not ALL) ends the recursion on a cycle.
    """
    pk_key, fk_key = keys
    link = scoped_alias(mapper, "tree_link", depth)
    closure = sa.select(
        getattr(link, pk_key).label("node"), getattr(link, pk_key).label("above")
    ).cte(recursive=True)
    step = scoped_alias(mapper, "tree_step", depth)
    closure = closure.union(
        sa.select(closure.c.node, getattr(step, fk_key)).where(
            getattr(step, pk_key) == closure.c.above, getattr(step, fk_key).is_not(None)
        )
    )
    found = (
        sa.select(sa.literal(1))
        .select_from(closure)
        .join(base, getattr(base, pk_key) == closure.c.above)
        .where(closure.c.node == getattr(entity, pk_key), body)
    )
    return found.correlate_except(closure, base).exists()


@register_sql(SqlRule)
def _sql_rule(node: SqlRule, env: SqlEnv) -> SqlValue:
    if env.row:
        raise RuleNotTranslatable(node, "a SQL-only rule takes a subject instance: no who_can()")
    if env.symbolic:
        return True  # the function needs a real subject: it is called when filtering
    entity = env.entity("target")
    mapper = sa_inspect(entity).mapper
    keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
    alias = scoped_alias(mapper, "sql_rule", env.depth + 1)
    query = sa.select(*(getattr(alias, k) for k in keys))
    narrowed = node.fn(query, bearer=env.subject, target=alias, permission=node.permission)
    if not isinstance(narrowed, sa.Select):
        raise RuleNotTranslatable(node, f"the function returned {narrowed!r}, not a Select")
    outer = [getattr(entity, k) for k in keys]
    left = outer[0] if len(outer) == 1 else sa.tuple_(*outer)
    # correlate(None): the function's select stands alone. Auto-correlation would drop a table
    # it names (e.g. ``memberships``) whenever the caller's query also has it, silently turning
    # the rule into a condition on the caller's row.
    return left.in_(narrowed.correlate(None))


@register_sql(PythonRule)
def _python_rule(node: PythonRule, env: SqlEnv) -> SqlValue:
    raise RuleNotTranslatable(node, "a Python callable has no SQL form")


def same_rows(a: Any, b: Any) -> SqlValue:
    """Two entities (aliases) are the same row: same class hierarchy, equal primary keys."""
    ma, mb = sa_inspect(a).mapper, sa_inspect(b).mapper
    if ma.base_mapper is not mb.base_mapper:
        return False
    return sa.and_(
        *(
            getattr(a, ma.get_property_by_column(c).key)
            == getattr(b, mb.get_property_by_column(c).key)
            for c in ma.base_mapper.primary_key
        )
    )


@register_sql(Same)
def _same(node: Same, env: SqlEnv) -> SqlValue:
    if env.subject is None:
        return False
    if node.scope == "subject":
        # The subject is itself (as in Python). ``env.entity("subject")`` would be ``it``:
        # compared with ``it`` inside ``.any()``, or refused outside one.
        return True
    if env.row:
        return same_rows(env.entity(node.scope), env.subject_entity)
    entity = env.entity(node.scope)
    info = sa_inspect(entity)
    mapper = getattr(info, "mapper", info)
    subject_mapper = sa_inspect(env.subject_type, raiseerr=False) if env.subject_type else None
    if subject_mapper is None or subject_mapper.base_mapper is not mapper.base_mapper:
        if env.symbolic and subject_mapper is None:
            raise RuleNotTranslatable(node, "the subject type must be a mapped class")
        return False  # a subject of another class is never this object
    if env.symbolic:
        values: list[Any] = [_param("subject_pk") for _ in mapper.primary_key]
    else:
        key = sa_inspect(env.subject).key
        if key is None:
            return False  # a transient subject is no row
        values = list(key[1])
    return sa.and_(
        *(
            getattr(entity, mapper.get_property_by_column(c).key) == v
            for c, v in zip(mapper.primary_key, values, strict=True)
        )
    )
