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
relationship loads (lazy, ``selectinload``, ``joinedload``), ``count()``, ``select()``, the legacy
``Query`` and Flask-SQLAlchemy's ``db.session`` (``authorize_queries(db.session, ...)`` restricts
the session of the current request, see below).

**Aliases.** ``with_loader_criteria(Document, clause)`` is installed with ``include_aliases=False``
on purpose: bastion's own subqueries (an ``OR`` split into branches, deferral to a related
object, trees) select from aliases of the same classes, named ``bastion_*``, and restricting
those again would add the session's action to rules that defer to another action. Instead, the
caller's statement is walked before the criteria are added, and every ``aliased()`` protected
entity found in it (in the SELECT list, **only in a join**, in a subquery) gets its own
``with_loader_criteria(alias, clause_for_alias)``: the clause compiled against that alias, put by
SQLAlchemy where it puts the class's (the ``WHERE``, or the ``ON`` of a join, so an outer join
keeps its outer rows). Aliases named ``bastion_*`` are taken to be bastion's and skipped.

Not covered, because they are not ORM entities: Core selects of a ``Table`` (``select(
documents_table)``) and ``text()``. ``Session.get`` answers from the identity map without a
query when the object is already loaded: load through the restricted session from the start (or
``populate_existing``). A protected model without a rule for the action, or a subject of a type
the policy has no rule for (``None`` included), yields no rows (fail closed).

``authorized_sessionmaker(policy, get_subject, get_action)`` builds sessions that do this for
whoever ``get_subject()`` returns at query time (e.g. from the request). Bastion's own queries
(checks, grants) are not restricted, and ``with unrestricted(reason=...)`` or the execution
option ``bastion_unrestricted=True`` lifts the restriction for one block or statement.

**asyncio.** The same two calls take an ``AsyncSession``: ``authorize_queries(async_session,
...)`` and ``authorized_async_sessionmaker(policy, get_subject, get_action, bind=async_engine)``
(an ``async_sessionmaker``). SQLAlchemy's asyncio ORM runs the synchronous ``Session`` underneath
(``AsyncSession.sync_session``, built from ``sync_session_class``) and fires *its* events, so the
restriction is installed there. ``get_subject``/``get_action`` stay plain functions: SQLAlchemy
runs the ORM in a greenlet that shares the awaiting task's ``contextvars`` context, so a
``ContextVar`` set per request or task (``get_subject=current_user.get``) gives each concurrent
task its own subject. An ``async def`` getter is refused (``InvalidArgument``): its coroutine
could not be awaited there.

Flask-SQLAlchemy: ``db.session`` is a ``scoped_session``; ``authorize_queries(db.session, ...)``
restricts the session of the current scope (Flask-SQLAlchemy 3: the app context, i.e. the
request), so call it at the start of each request (``before_request``). Flask-SQLAlchemy
removes that session at the end of the request, and with it the restriction. ``Model.query``
and ``db.session.query`` use the same session.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    scoped_session,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.orm.interfaces import ORMOption
from sqlalchemy.sql import visitors

from bastion.authorizer import Authorizer
from bastion.enforcement import (
    INTERNAL,
    QUERY_SCOPE_KEY,
    UNRESTRICTED_OPTION,
    is_unrestricted,
    mark_authorized,
)
from bastion.enforcement import is_async_session as _is_async_session
from bastion.enforcement import is_async_session_class as _is_async_session_class
from bastion.errors import InvalidArgument
from bastion.policy import Policy

if TYPE_CHECKING:  # imported on use: SQLAlchemy's asyncio extension needs greenlet
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = [
    "QueryScope",
    "authorize_queries",
    "authorized_async_sessionmaker",
    "authorized_sessionmaker",
]

#: the prefix of the aliases bastion's compilers make (``rules.to_sql.scoped_alias``)
_OWN_ALIAS_PREFIX = "bastion_"

_AnySession = TypeVar("_AnySession", Session, "AsyncSession", "scoped_session[Session]")


def _read() -> Hashable:
    return "read"


@dataclass
class QueryScope:
    """Who the session's queries are for, and for which action."""

    policy: Policy
    get_subject: Callable[[], Any]
    get_action: Callable[[], Hashable]
    context: Mapping[str, Any] = field(default_factory=dict)


def authorize_queries(
    session: _AnySession, policy: Policy, subject: Any, action: Hashable = "read", **context: Any
) -> _AnySession:
    """Restrict every ORM ``SELECT`` of ``session`` to what ``subject`` may ``action``.

    ``session`` is a ``Session``, an ``AsyncSession`` (restricted through its ``sync_session``)
    or a ``scoped_session`` such as Flask-SQLAlchemy's ``db.session`` (its current session).
    Returns ``session``."""
    scope = QueryScope(policy, lambda: subject, lambda: action, context)
    _install(_sync_session(session), scope)
    return session


def authorized_sessionmaker(
    policy: Policy,
    get_subject: Callable[[], Any],
    get_action: Callable[[], Hashable] = _read,
    **kwargs: Any,
) -> sessionmaker[Session]:
    """A ``sessionmaker`` whose sessions restrict every query to what ``get_subject()`` may
    ``get_action()`` (both called when a query runs). ``kwargs`` go to ``sessionmaker``; its
    ``class_`` (a ``Session`` subclass) is the base of the sessions' class."""
    base = _session_class(kwargs.pop("class_", Session), "class_")
    scope = QueryScope(policy, get_subject, get_action)
    return sessionmaker(class_=_authorized_class(base, scope), **kwargs)


def authorized_async_sessionmaker(
    policy: Policy,
    get_subject: Callable[[], Any],
    get_action: Callable[[], Hashable] = _read,
    **kwargs: Any,
) -> async_sessionmaker[AsyncSession]:
    """:func:`authorized_sessionmaker` for asyncio: an ``async_sessionmaker`` whose sessions
    restrict every query to what ``get_subject()`` may ``get_action()``, both plain functions
    called when a query runs, in the awaiting task's context (a ``ContextVar``'s ``get`` fits).

    ``kwargs`` go to ``async_sessionmaker`` (``bind``, ``expire_on_commit``, ``class_``...);
    ``sync_session_class`` (a ``Session`` subclass) is the base of the synchronous sessions
    that run underneath, which is where the restriction lives."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker  # the `async` extra

    base = _session_class(kwargs.pop("sync_session_class", Session), "sync_session_class")
    async_class = kwargs.get("class_", AsyncSession)
    if not _is_async_session_class(async_class):
        raise InvalidArgument(
            f"authorized_async_sessionmaker(class_=...) takes an AsyncSession subclass, "
            f"got {async_class!r}"
        )
    scope = QueryScope(policy, get_subject, get_action)
    return async_sessionmaker(sync_session_class=_authorized_class(base, scope), **kwargs)


def _session_class(candidate: Any, name: str) -> type[Session]:
    """``candidate`` if it is a ``Session`` subclass; a clear error otherwise (an
    ``AsyncSession`` class here would build sessions that are never restricted)."""
    if isinstance(candidate, type) and issubclass(candidate, Session):
        return candidate
    hint = ""
    if _is_async_session_class(candidate):
        hint = (
            ": for AsyncSession use authorized_async_sessionmaker()"
            if name == "class_"
            else ": the AsyncSession goes in class_="
        )
    raise InvalidArgument(f"{name} must be a Session subclass, got {candidate!r}{hint}")


def _authorized_class(base: type[Session], scope: QueryScope) -> type[Session]:
    """A subclass of ``base`` whose instances install ``scope`` when they are created."""

    class AuthorizedSession(base):  # type: ignore[valid-type, misc]
        """A session whose ORM queries are restricted for ``get_subject()``."""

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            _install(self, scope)

    return AuthorizedSession


def _sync_session(session: Any) -> Session:
    """The ``Session`` whose events see the queries of ``session``."""
    if _is_async_session(session):
        return session.sync_session  # type: ignore[no-any-return]  # the async ORM fires its events
    if isinstance(session, scoped_session):
        session = session()  # the current scope's session (Flask-SQLAlchemy: the request's)
    if not isinstance(session, Session):
        raise InvalidArgument(
            "authorize_queries() takes a Session, an AsyncSession or a scoped_session, "
            f"got {session!r}"
        )
    return session


def _install(session: Session, scope: QueryScope) -> Session:
    first = QUERY_SCOPE_KEY not in session.info
    session.info[QUERY_SCOPE_KEY] = scope
    if first:
        sa.event.listen(session, "do_orm_execute", _restrict)
    return session


def _active_scope(state: ORMExecuteState) -> QueryScope | None:
    """The scope to apply to this statement, or None (not a SELECT, lifted, bastion's own)."""
    if not state.is_select or is_unrestricted():
        return None
    options = state.execution_options
    if options.get(INTERNAL) or options.get(UNRESTRICTED_OPTION):
        return None
    scope: QueryScope | None = state.session.info.get(QUERY_SCOPE_KEY)
    return scope


def _current_subject(scope: QueryScope) -> Any:
    """``scope.get_subject()``, refusing an awaitable: it runs inside the synchronous ORM
    event (also under asyncio), where an ``async def`` getter's coroutine cannot be awaited;
    letting it through would filter for a coroutine object (no rows) and hide the mistake."""
    subject = scope.get_subject()
    if inspect.isawaitable(subject):
        close = getattr(subject, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited" warning on top of the error
        raise InvalidArgument(
            "get_subject() returned an awaitable: it must be a plain function (it runs inside "
            "SQLAlchemy's synchronous ORM events); read the subject from a ContextVar set by "
            "the request or task instead"
        )
    return subject


#: Set while ``_restrict`` reads the subject and builds a statement's criteria. Fix: the queries
#: that doing so runs itself (the subject's expired attributes refreshed, as after a commit;
#: ``get_subject()`` loading the user) went through ``_restrict`` again, which read the subject
#: again: every query after a commit failed with RecursionError. Those nested loads are
#: bastion's own reading of the subject, not the caller's query: they run unrestricted.
_RESTRICTING: ContextVar[bool] = ContextVar("bastion_restricting", default=False)


def _restrict(state: ORMExecuteState) -> None:
    if _RESTRICTING.get():
        return
    token = _RESTRICTING.set(True)
    try:
        _restrict_statement(state)
    finally:
        _RESTRICTING.reset(token)


def _restrict_statement(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete:
        _refuse_bulk_change(state)
        return
    scope = _active_scope(state)
    if scope is None:
        return
    subject, action = _current_subject(scope), scope.get_action()
    authz = Authorizer(scope.policy, state.session)
    protected = {r.target_type for r in scope.policy.rules() if r.target_type is not None}
    context = dict(scope.context)

    def criteria(entity: Any) -> ORMOption:
        cls = sa_inspect(entity).mapper.class_
        plan = scope.policy.plan(action, type(subject), cls)
        return with_loader_criteria(entity, authz.filter_clause(plan, entity, subject, context))

    # the caller's aliases, read before the criteria below add bastion's own
    aliases = _caller_aliases(state.statement, protected)
    # every protected class, also when only in FROM (count(), joins) or in relationship loads
    options = [criteria(cls) for cls in protected] + [criteria(alias) for alias in aliases]
    state.statement = state.statement.options(*options)
    for cls in protected:
        mark_authorized(cls)


def _refuse_bulk_change(state: ORMExecuteState) -> None:
    """Fail closed on an ORM ``update(Model)``/``delete(Model)`` of a protected model.

    Fix: such a statement ran unrestricted (only SELECTs were restricted), changing rows the
    session's subject may not even read. Restricting it with the session's action would be
    wrong too (the session's action is about reading; changing needs another permission), so it
    raises ``InvalidArgument`` unless lifted (``unrestricted(reason=...)`` or the execution
    option), like any query an authorized session cannot restrict."""
    scope: QueryScope | None = state.session.info.get(QUERY_SCOPE_KEY)
    mapper = state.bind_mapper
    if scope is None or mapper is None or is_unrestricted():
        return
    options = state.execution_options
    if options.get(INTERNAL) or options.get(UNRESTRICTED_OPTION):
        return
    cls = mapper.class_
    protected = {r.target_type for r in scope.policy.rules() if r.target_type is not None}
    if any(issubclass(cls, p) or issubclass(p, cls) for p in protected):
        verb = "UPDATE" if state.is_update else "DELETE"
        raise InvalidArgument(
            f"an authorized session restricts what it reads, not a bulk {verb} of "
            f"{cls.__name__}, which would change rows its subject may not act on: change loaded "
            "objects (checked with authorize()) and flush, or select the allowed keys with "
            f"Authorizer.filter() and run the {verb} on them inside unrestricted(reason=...)"
        )


def _caller_aliases(statement: Any, protected: set[type]) -> list[Any]:
    """The ``aliased()`` protected entities anywhere in ``statement`` (SELECT list, joins,
    subqueries), each once: ``with_loader_criteria`` on the class does not reach them.

    Fails closed (``InvalidArgument``) on a protected table reached through an alias that no
    ORM entity stands for, a Core ``documents.alias()`` or the EXISTS that
    ``Org.documents.of_type(alias).any()`` builds: ``with_loader_criteria`` restricts ORM
    entities only, so that query would otherwise run unrestricted."""
    entities: dict[int, Any] = {}
    bare: list[Any] = []
    for element in visitors.iterate(statement):
        for info in _aliased_inspections(element):
            if _is_caller_alias(info, protected):
                entities.setdefault(id(info), info)
        if type(element) is sa.sql.Alias:
            bare.append(element)
    covered = {info.selectable._deannotate() for info in entities.values()}
    tables = _protected_tables(protected)
    for alias in bare:
        if alias not in covered and alias.element in tables and not _is_own(alias.name):
            raise InvalidArgument(
                f"an authorized session cannot restrict the table {alias.element.name!r} "
                "reached through an alias that no ORM entity stands for (a Core alias, or "
                "relationship.of_type(alias).any()/has()): select, join or filter an aliased() "
                "entity instead, or use the relationship without of_type()"
            )
    return [info.entity for info in entities.values()]


def _protected_tables(protected: set[type]) -> set[Any]:
    """The tables of the protected classes and their subclasses."""
    tables: set[Any] = set()
    for cls in protected:
        mappers: list[Mapper[Any]] = list(sa_inspect(cls).self_and_descendants)
        for mapper in mappers:
            tables.update(mapper.tables)
    return tables


def _is_own(name: Any) -> bool:
    """Whether an alias name is one of bastion's (``rules.to_sql.scoped_alias``)."""
    return str(name or "").startswith(_OWN_ALIAS_PREFIX)


def _is_caller_alias(info: Any, protected: set[type]) -> bool:
    """An alias of a protected class that is not bastion's own (a filter the caller applied
    already holds those: restricting them again would change what the filter means)."""
    if _is_own(getattr(info, "name", None)):
        return False
    return any(issubclass(info.mapper.class_, p) for p in protected)


def _aliased_inspections(element: Any) -> Iterator[Any]:
    """The ``AliasedInsp`` objects one element names. Clause elements carry theirs in the
    ``parententity`` annotation; a join target given as a relationship
    (``.join(Org.documents.of_type(alias))``) is not a clause element that the traversal
    enters, so a SELECT's join entries are read as well."""
    yield from _aliased(getattr(element, "_annotations", {}).get("parententity"))
    for join in getattr(element, "_setup_joins", ()):
        for part in join[:3]:  # target, onclause, left side
            yield from _aliased(getattr(part, "_of_type", None))
            yield from _aliased(part)


def _aliased(thing: Any) -> Iterator[Any]:
    """The ``AliasedInsp`` of ``thing`` (an ``AliasedClass``, its inspection, an annotated
    alias), if it is one."""
    if thing is None:
        return
    info = sa_inspect(thing, raiseerr=False)
    if info is None and hasattr(thing, "_annotations"):
        info = thing._annotations.get("parententity")
    if getattr(info, "is_aliased_class", False):
        yield info
