"""``AsyncAuthorizer``: the Authorizer's methods, awaited on an ``AsyncSession``.

One core, two thin drivers (httpx's ``Client``/``AsyncClient`` pattern): the rules, plans, compiled
statements and Python predicates are the synchronous :class:`~bastion.Authorizer`'s. Building a
filter does no I/O, so ``filter``/``who_can`` return their ``Select`` directly, to be awaited with
``await session.execute(...)``. A ``check`` first runs the compiled Python predicate without any
I/O (``IO_FORBIDDEN``); only when it needs the database does it run the same synchronous code
through SQLAlchemy's ``AsyncSession.run_sync`` (the same statements, sent by the async driver).

Works with ``aiosqlite`` and ``asyncpg`` (extra ``async``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from bastion.authorizer import (
    Authorizer,
    FilterExplanation,
    _require_context,
    _statement_and_entity,
    is_deleted,
)
from bastion.enforcement import QUERY_SCOPE_KEY
from bastion.errors import InvalidArgument
from bastion.grants.models import GrantModels
from bastion.grants.store import GrantStore, Scope
from bastion.policy import Policy
from bastion.rules.explain import Explanation
from bastion.rules.to_python import IO_FORBIDDEN, SESSION_KEY, NotLoaded

__all__ = ["AsyncAuthorizer", "AsyncGrantStore"]


class AsyncAuthorizer:
    """Answer ``check``/``authorize``/``filter``/... for one policy through an ``AsyncSession``."""

    def __init__(
        self,
        policy: Policy,
        session: AsyncSession,
        *,
        union_branches: bool = True,
        inline_loaded: bool = True,
    ) -> None:
        if not isinstance(session, AsyncSession):
            raise InvalidArgument(f"AsyncAuthorizer needs an AsyncSession, got {session!r}")
        self.policy = policy
        self.session = session
        #: the synchronous core, over the AsyncSession's own Session
        self.sync = Authorizer(
            policy,
            session.sync_session,
            union_branches=union_branches,
            inline_loaded=inline_loaded,
        )

    # checks ------------------------------------------------------------------------------
    async def check(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> bool:
        """Like :meth:`Authorizer.check`; awaits the database only when the answer needs it."""
        plan = self.sync._lookup(permission, subject, target)
        if plan.inputs.context_names:
            _require_context(plan, context)
        # Fix: a check_only rule (it has no SQL form: sql_error is set) runs the application's
        # own Python, which reads attributes directly; on an expired object that is a lazy load,
        # and outside run_sync it failed with MissingGreenlet instead of raising NotLoaded. Only
        # compiled rules get the I/O-free trial; the others run in run_sync like any query.
        censored = QUERY_SCOPE_KEY in self.sync._session_info and self.sync._censored(plan)
        if plan.sql_error is None and not censored:  # (censored: the database decides)
            trial = {**context, SESSION_KEY: self.sync.session}
            token = IO_FORBIDDEN.set(True)
            try:
                allowed = plan.predicate(subject, target, trial, None) is True
            except NotLoaded:
                pass
            else:
                return allowed and (target is None or not is_deleted(target, self.sync.session))
            finally:
                IO_FORBIDDEN.reset(token)
        return await self.session.run_sync(
            lambda _: self.sync.check(subject, permission, target, **context)
        )

    async def authorize(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> None:
        """Like :meth:`Authorizer.authorize` (raises ``NotAuthorized`` with its explanation)."""
        if not await self.check(subject, permission, target, **context):
            await self.session.run_sync(
                lambda _: self.sync.authorize(subject, permission, target, **context)
            )

    async def check_many(
        self, subject: Any, permission: Hashable, objects: Iterable[Any], /, **context: Any
    ) -> dict[Any, bool]:
        """Like :meth:`Authorizer.check_many`: one query for the undecided objects."""
        items = list(objects)
        return await self.session.run_sync(
            lambda _: self.sync.check_many(subject, permission, items, **context)
        )

    async def allowed_actions(
        self,
        subject: Any,
        objects: Any,
        /,
        actions: Iterable[Hashable] | None = None,
        **context: Any,
    ) -> Any:
        """Like :meth:`Authorizer.allowed_actions`: one query for a page."""
        # (a string is refused by the synchronous call, which must see it as given)
        wanted = actions if actions is None or isinstance(actions, (str, bytes)) else list(actions)
        return await self.session.run_sync(
            lambda _: self.sync.allowed_actions(subject, objects, wanted, **context)
        )

    async def explain(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> Explanation:
        """Like :meth:`Authorizer.explain`."""
        return await self.session.run_sync(
            lambda _: self.sync.explain(subject, permission, target, **context)
        )

    async def explain_filter(
        self, subject: Any, permission: Hashable, query: Any, /, **options: Any
    ) -> FilterExplanation:
        """Like :meth:`Authorizer.explain_filter`."""
        return await self.session.run_sync(
            lambda _: self.sync.explain_filter(subject, permission, query, **options)
        )

    # statements (no I/O) -------------------------------------------------------------------
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
        """Like :meth:`Authorizer.filter`: returns the ``Select`` (await its execution)."""
        # Fix: building a filter reads the subject attributes the rule binds as parameters. On an
        # expired subject (after ``await session.commit()``) that read is a lazy load, which an
        # AsyncSession cannot run here: it failed deep in SQLAlchemy with MissingGreenlet. Refuse
        # it up front, saying what to do; attributes the rule does not read may stay expired.
        _, found = _statement_and_entity(query, entity)
        plan = self.policy.plan(permission, type(subject), sa_inspect(found).mapper.class_)
        # Fix: only expired attributes were refused; a column never loaded (load_only(),
        # deferred()) is a lazy load too, and still failed with MissingGreenlet.
        state = sa_inspect(subject, raiseerr=False)
        unloaded: set[str] = set()
        if state is not None and getattr(state, "key", None) is not None:
            unloaded = set(state.unloaded) & set(plan.inputs.subject_attributes)
        if unloaded:
            who = f"{type(subject).__name__} {state.identity}"  # not repr(): it may load too
            advice = (
                "it is detached: load it in this session first (`await session.get(...)`)"
                if state.detached
                else "expired after a commit, or not loaded (load_only, deferred): "
                "`await session.refresh(subject)` first, load those columns, or use "
                "expire_on_commit=False"
            )
            raise InvalidArgument(
                f"filter() reads {', '.join(sorted(unloaded))} of the subject ({who}), which "
                f"would need a query here; {advice}"
            )
        return self.sync.filter(subject, permission, query, entity=entity, **context)

    def who_can(
        self,
        permission: Hashable,
        target: Any = None,
        /,
        *,
        subject_type: type | None = None,
        **context: Any,
    ) -> Select[Any]:
        """Like :meth:`Authorizer.who_can`: returns the ``Select`` of subjects."""
        return self.sync.who_can(permission, target, subject_type=subject_type, **context)


class AsyncGrantStore:
    """:class:`~bastion.grants.GrantStore` on an ``AsyncSession``: the same units of work,
    awaited (each one runs the synchronous store through ``run_sync``)."""

    def __init__(
        self, session: AsyncSession, models: GrantModels, *, actor: str | None = None
    ) -> None:
        self.session = session
        self.models = models
        self.actor = actor

    def _store(self, sync_session: Any) -> GrantStore:
        return GrantStore(sync_session, self.models, actor=self.actor)

    async def create_permission(self, token: str, description: str = "", **kw: Any) -> Any:
        return await self.session.run_sync(
            lambda s: self._store(s).create_permission(token, description, **kw)
        )

    async def create_bundle(self, label: str, permissions: Iterable[str] = (), **kw: Any) -> Any:
        tokens = list(permissions)
        return await self.session.run_sync(
            lambda s: self._store(s).create_bundle(label, tokens, **kw)
        )

    async def create_group(self, label: str, **kw: Any) -> Any:
        return await self.session.run_sync(lambda s: self._store(s).create_group(label, **kw))

    async def rename(self, kind: str, old: str, new: str, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).rename(kind, old, new, **kw))

    async def delete(self, kind: str, name: str, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).delete(kind, name, **kw))

    async def add_to_bundle(self, bundle: str, *tokens: str, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).add_to_bundle(bundle, *tokens, **kw))

    async def remove_from_bundle(self, bundle: str, *tokens: str, **kw: Any) -> None:
        await self.session.run_sync(
            lambda s: self._store(s).remove_from_bundle(bundle, *tokens, **kw)
        )

    async def grant(
        self,
        holder: Any,
        *,
        scope: Scope = None,
        valid_from: datetime | None = None,
        expires_at: datetime | None = None,
        **kw: Any,
    ) -> None:
        await self.session.run_sync(
            lambda s: self._store(s).grant(
                holder, scope=scope, valid_from=valid_from, expires_at=expires_at, **kw
            )
        )

    async def revoke(self, holder: Any, *, scope: Scope = None, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).revoke(holder, scope=scope, **kw))

    async def revoke_scope(self, scope: Scope, **kw: Any) -> int:
        return await self.session.run_sync(lambda s: self._store(s).revoke_scope(scope, **kw))

    async def add_member(self, group: str, user: Any, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).add_member(group, user, **kw))

    async def remove_member(self, group: str, user: Any, **kw: Any) -> None:
        await self.session.run_sync(lambda s: self._store(s).remove_member(group, user, **kw))

    async def effective_permissions(self, user: Any) -> list[tuple[str, tuple[str, str], str]]:
        return await self.session.run_sync(lambda s: self._store(s).effective_permissions(user))

    async def audit_log(self, limit: int = 100) -> list[Any]:
        return await self.session.run_sync(lambda s: self._store(s).audit_log(limit))
