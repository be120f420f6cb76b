"""``Authorizer``: a policy applied through one SQLAlchemy ``Session``.

Life of a check
---------------
``check(user, "doc.read", doc)`` looks up the compiled :class:`~bastion.policy.Plan` for
``("doc.read", User, Document)`` (a dict hit after the first call) and runs its Python predicate on
the loaded objects. The predicate reads attributes from instance ``__dict__`` only; if one it needs
is not loaded, it raises ``NotLoaded`` and the check becomes **one** query for that primary key::

    SELECT EXISTS (SELECT 1 FROM documents WHERE documents.id = :pk AND <the compiled rule>)

so a check never triggers N lazy loads. Only ``True`` allows: FALSE and UNKNOWN deny.

Life of a filter
----------------
``filter(user, "doc.read", Document)`` (or a ``Select``) compiles the same plan with
:func:`bastion.rules.to_sql` for this subject and adds it to the statement's ``WHERE``. A rule
that is an OR of several branches (``public | owner | member of the org``) becomes one
``IN (... UNION ALL ...)`` over the primary key, so each branch can use its own index instead of a
full scan::

    WHERE documents.id IN (SELECT d.id FROM documents AS d WHERE d.is_public = true
                           UNION ALL SELECT d.id FROM documents AS d WHERE d.owner_id = :id
                           UNION ALL SELECT d.id FROM documents AS d WHERE d.org_id IN (...))

The caller's SELECT list, joins, ordering and limits are untouched; ``count()`` works on the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from bastion.errors import InvalidArgument, NotAuthorized, RuleNotTranslatable, UnmappedClass
from bastion.policy import Plan, Policy
from bastion.rules.nodes import Or
from bastion.rules.to_python import LAZY_LOADS_ALLOWED, SESSION_KEY, NotLoaded
from bastion.rules.to_sql import SqlEnv, compile_sql, scoped_alias, sql_clause
from bastion.rules.validate import mapper_of

__all__ = ["Authorizer"]

_T = TypeVar("_T")
#: compiled filter clauses kept per plan (oldest dropped first)
_CACHE_SIZE = 512


class Authorizer:
    """Answer ``check``/``authorize``/``filter`` for one policy through one session."""

    def __init__(self, policy: Policy, session: Session, *, union_branches: bool = True) -> None:
        if not isinstance(policy, Policy):
            raise InvalidArgument(f"Authorizer needs a Policy, got {policy!r}")
        self.policy = policy
        self.session = session
        # The policy's plans by (permission, subject type, type(target)): ``type(None)`` for no
        # target, so the hot path needs no branch. Shared with the policy, which clears it.
        self._plans = policy.plans_by_call_key
        #: compile a top-level OR to ``pk IN (branch UNION ALL branch ...)`` (index friendly)
        self.union_branches = union_branches

    # checks ------------------------------------------------------------------------------
    def check(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> bool:
        """May ``subject`` do ``permission`` (on ``target``)? Python when loaded, else one query."""
        try:  # the hot path: one dict lookup of the compiled plan
            plan = self._plans[(permission, type(subject), type(target))]
        except (KeyError, TypeError):
            plan = self._plan(permission, subject, target)
        context[SESSION_KEY] = self.session
        try:
            return plan.predicate(subject, target, context, None) is True
        except NotLoaded as missing:
            if missing.prefetch is not None:  # e.g. a folder's ancestors: load them, walk again
                self.session.execute(missing.prefetch).all()
                try:
                    return plan.predicate(subject, target, context, None) is True
                except NotLoaded:
                    pass
            if plan.sql_error is None:
                return self.check_in_database(plan, subject, target, context)
        # No SQL form (check_only): load what is missing the ordinary way.
        token = LAZY_LOADS_ALLOWED.set(True)
        try:
            return plan.predicate(subject, target, context, None) is True
        finally:
            LAZY_LOADS_ALLOWED.reset(token)

    def _plan(self, permission: Hashable, subject: Any, target: Any) -> Plan:
        target_type = None if target is None else type(target)
        plan = self.policy.plan(permission, type(subject), target_type)  # validates, may raise
        self._plans[(permission, type(subject), type(target))] = plan
        return plan

    def authorize(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> None:
        """Like :meth:`check`, but raise :class:`~bastion.NotAuthorized` when denied."""
        if not self.check(subject, permission, target, **context):
            raise NotAuthorized(subject, permission, target)

    def check_in_database(
        self, plan: Plan, subject: Any, target: Any, context: Mapping[str, Any]
    ) -> bool:
        """Answer a check with one ``SELECT EXISTS`` (used when the Python path lacks data)."""
        if target is None:
            clause = self._cached_clause(plan, None, subject, context, union=False)
            return bool(self.session.execute(sa.select(clause)).scalar())
        state = sa_inspect(target)
        if state.key is None:
            raise InvalidArgument(
                f"{target!r} is not persistent, and the rule for {plan.permission!r} needs the "
                "database (a SQL-only rule): flush it first"
            )
        entity = state.mapper.class_
        pk = [
            getattr(entity, state.mapper.get_property_by_column(c).key)
            for c in state.mapper.primary_key
        ]
        criteria = [col == value for col, value in zip(pk, state.key[1], strict=True)]
        clause = self._cached_clause(plan, entity, subject, context, union=False)
        query = sa.select(sa.exists().where(*criteria, clause))
        return bool(self.session.execute(query).scalar())

    # filters -----------------------------------------------------------------------------
    @overload
    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: type[_T],
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> Select[tuple[_T]]: ...

    @overload
    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: Select[Any],
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> Select[Any]: ...

    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: Any,
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> Select[Any]:
        """Narrow ``query`` (a mapped class or ``Select``) to rows ``subject`` may ``permission``.

        ``entity`` names the entity (class or alias) to filter when the statement's first column
        is not it. Returns a new ``Select``; compose it with ``where``/``join``/``order_by``/
        ``limit``/``offset`` or count it.
        """
        stmt, entity = _statement_and_entity(query, entity)
        cls = sa_inspect(entity).mapper.class_
        plan = self.policy.plan(permission, type(subject), cls)
        if plan.sql_error is not None:
            raise RuleNotTranslatable(
                plan.rule, f"{permission!r} cannot be filtered in SQL: {plan.sql_error}"
            )
        return stmt.where(self.filter_clause(plan, entity, subject, context))

    def filter_clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool]:
        """The ``WHERE`` expression of :meth:`filter` for ``entity`` (union shape if enabled)."""
        union = self.union_branches and isinstance(plan.rule, Or)
        return self._cached_clause(plan, entity, subject, context, union=union)

    def _cached_clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any], *, union: bool
    ) -> ColumnElement[bool]:
        """Build the clause, or reuse the one built for equal inputs (clauses are immutable)."""
        key = plan.inputs.key(subject, context)
        if key is not None:
            key = (entity, union, key)
            cached = plan.sql_cache.get(key)
            if cached is not None:
                return cached  # type: ignore[no-any-return]
        clause = None
        if union:
            clause = self._union_clause(plan.rule, entity, subject, context)  # type: ignore[arg-type]
        if clause is None:
            clause = self._clause(plan, entity, subject, context)
        if key is not None:
            if len(plan.sql_cache) >= _CACHE_SIZE:
                plan.sql_cache.pop(next(iter(plan.sql_cache)))
            plan.sql_cache[key] = clause
        return clause

    def _clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool]:
        env = SqlEnv(entity, subject, context, type(subject))
        return sql_clause(compile_sql(plan.rule, env))

    def _union_clause(
        self, rule: Or, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool] | None:
        mapper = sa_inspect(entity).mapper
        branch_entity = scoped_alias(mapper, "branch", 0)
        env = SqlEnv(branch_entity, subject, context, type(subject))
        branches = []
        for item in rule.items:
            value = compile_sql(item, env)
            if value is True:
                return sa.true()
            if value is not False and value is not None:  # UNKNOWN/FALSE branches select nothing
                branches.append(value)
        if len(branches) < 2:
            return None
        keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        selects = [sa.select(*(getattr(branch_entity, k) for k in keys)).where(b) for b in branches]
        union = sa.union_all(*selects)
        outer = [getattr(entity, k) for k in keys]
        left = outer[0] if len(outer) == 1 else sa.tuple_(*outer)
        return left.in_(union)


def _statement_and_entity(query: Any, entity: Any) -> tuple[Select[Any], Any]:
    if isinstance(query, type):
        if mapper_of(query) is None:
            raise UnmappedClass(query)
        return sa.select(query), entity if entity is not None else query
    if not isinstance(query, Select):
        raise InvalidArgument(f"filter() takes a mapped class or a Select, got {query!r}")
    if entity is None:
        descriptions = query.column_descriptions
        entity = descriptions[0].get("entity") if descriptions else None
        if entity is None:
            raise InvalidArgument(
                "cannot tell which entity to filter in this Select: pass entity=Model"
            )
    elif mapper_of(entity) is None:
        raise UnmappedClass(entity)
    return query, entity
