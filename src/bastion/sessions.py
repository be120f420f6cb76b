"""Sessions that authorize every query: list code cannot forget the filter.

::

    session = Session(engine)
    authorize_queries(session, policy, subject=current_user, action="read")
    session.scalars(select(Document)).all()  # only the documents current_user may read
    session.get(Document, 7)  # None if not allowed
    document.comments  # relationship loads are filtered too

Every ORM ``SELECT`` run through the session gets, for each protected model (a target class of
the policy's rules), the same clause ``Authorizer.filter`` would add, through SQLAlchemy's
``do_orm_execute`` event and ``with_loader_criteria``: it reaches entities in joins and in
relationship loads, entities selected through ``aliased()``, ``select()``, the legacy ``Query``
and Flask-SQLAlchemy's ``db.session``. Not covered: an ``aliased()`` entity that appears only in a
join (not in the SELECT list) — filter such a query with ``Authorizer.filter(..., entity=alias)``.
``Session.get`` answers from the identity map without a query when the object is already loaded:
load through the restricted session from the start (or ``populate_existing``).
A protected model without a rule for the action yields no rows (fail closed).

``authorized_sessionmaker(policy, get_subject, get_action)`` builds sessions that do this for
whoever ``get_subject()`` returns at query time (e.g. from the request). Bastion's own queries
(checks, grants) are not restricted, and ``with unrestricted(reason=...)`` or the execution
option ``bastion_unrestricted=True`` lifts the restriction for one block or statement.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from bastion.authorizer import Authorizer
from bastion.enforcement import INTERNAL, is_unrestricted, mark_authorized
from bastion.errors import InvalidArgument
from bastion.policy import Policy

__all__ = ["QueryScope", "authorize_queries", "authorized_sessionmaker"]

_INFO_KEY = "bastion.query_scope"
UNRESTRICTED_OPTION = "bastion_unrestricted"


@dataclass
class QueryScope:
    """Who the session's queries are for, and for which action."""

    policy: Policy
    get_subject: Callable[[], Any]
    get_action: Callable[[], Hashable]
    context: Mapping[str, Any] = field(default_factory=dict)


def authorize_queries(
    session: Session, policy: Policy, subject: Any, action: Hashable = "read", **context: Any
) -> Session:
    """Restrict every ORM ``SELECT`` of ``session`` to what ``subject`` may ``action``."""
    return _install(session, QueryScope(policy, lambda: subject, lambda: action, context))


def authorized_sessionmaker(
    policy: Policy,
    get_subject: Callable[[], Any],
    get_action: Callable[[], Hashable] = lambda: "read",
    **kwargs: Any,
) -> sessionmaker[Session]:
    """A ``sessionmaker`` whose sessions restrict every query to what ``get_subject()`` may
    ``get_action()`` (both called when a query runs). ``kwargs`` go to ``sessionmaker``."""
    scope = QueryScope(policy, get_subject, get_action)
    base: type[Session] = kwargs.pop("class_", Session)

    class AuthorizedSession(base):  # type: ignore[valid-type, misc]
        """A session whose ORM queries are restricted for ``get_subject()``."""

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            _install(self, scope)

    return sessionmaker(class_=AuthorizedSession, **kwargs)


def _install(session: Session, scope: QueryScope) -> Session:
    if not isinstance(session, Session):
        raise InvalidArgument(f"authorize_queries() takes a Session, got {session!r}")
    first = _INFO_KEY not in session.info
    session.info[_INFO_KEY] = scope
    if first:
        sa.event.listen(session, "do_orm_execute", _restrict)
    return session


def _restrict(state: ORMExecuteState) -> None:
    if not state.is_select or is_unrestricted():
        return
    options = state.execution_options
    if options.get(INTERNAL) or options.get(UNRESTRICTED_OPTION):
        return
    scope: QueryScope | None = state.session.info.get(_INFO_KEY)
    if scope is None:
        return
    subject, action = scope.get_subject(), scope.get_action()
    authz = Authorizer(scope.policy, state.session)
    protected = {r.target_type for r in scope.policy.rules() if r.target_type is not None}
    context = dict(scope.context)
    for cls in protected:  # also entities only in FROM (count(), joins): criteria for each
        plan = scope.policy.plan(action, type(subject), cls)
        clause = authz.filter_clause(plan, cls, subject, context)
        # include_aliases=False: bastion's own subqueries use aliases of the same classes, and
        # restricting those would recurse. The caller's aliases are handled below.
        state.statement = state.statement.options(with_loader_criteria(cls, clause))
        mark_authorized(cls)
    for alias in _caller_aliases(state.statement, protected):
        cls = sa_inspect(alias).mapper.class_
        plan = scope.policy.plan(action, type(subject), cls)
        state.statement = state.statement.where(  # type: ignore[attr-defined]
            authz.filter_clause(plan, alias, subject, context)
        )


def _caller_aliases(statement: Any, protected: set[type]) -> list[Any]:
    """Aliased protected entities the statement selects (``select(aliased(Document))``)."""
    found = []
    for description in getattr(statement, "column_descriptions", ()):
        entity = description.get("entity")
        info = sa_inspect(entity, raiseerr=False) if entity is not None else None
        if info is None or not getattr(info, "is_aliased_class", False):
            continue
        name = getattr(info, "name", "") or ""
        if name.startswith("bastion_") or entity in found:
            continue  # bastion's own aliases
        if any(issubclass(info.mapper.class_, p) for p in protected):
            found.append(entity)
    return found
