"""Enforcement coverage: make forgetting to authorize a loud error in development and tests.

Inside ``with enforcement():`` (one per request or test; the Flask and FastAPI integrations can
open it for you), every ORM ``SELECT`` that loads a *protected* model (one the policy has rules
for) must come after a ``check``/``authorize``/``filter``/... of that model by an ``Authorizer``
(or through an authorized session). Otherwise :class:`UnauthorizedLoad` is raised (or, with
``mode="warn"``, a warning is issued) naming the model and the line of *your* code that ran the
query. ``with unrestricted(reason="...")`` is the explicit escape hatch; the reason is logged on
the ``bastion`` logger at WARNING.

Install the hook once per engine-level session factory: ``install_enforcement(Session, policy)``
(a ``Session`` class, a ``sessionmaker`` or one session).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import traceback
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState

from bastion.errors import BastionError, InvalidArgument

__all__ = [
    "INTERNAL",
    "QUERY_SCOPE_KEY",
    "UNRESTRICTED_OPTION",
    "EnforcementScope",
    "UnauthorizedLoad",
    "enforcement",
    "install_enforcement",
    "mark_authorized",
    "unrestricted",
]

logger = logging.getLogger("bastion")

#: Execution option set on the queries bastion itself runs (checks, pages, grants): they are
#: authorization, not data access, and are neither restricted nor reported.
INTERNAL = "bastion_internal"
#: ``Session.info`` key of an authorized session's query scope (``bastion.sessions``): its
#: queries are restricted, so they are authorized loads.
QUERY_SCOPE_KEY = "bastion.query_scope"
#: Execution option lifting an authorized session's restriction for one statement.
UNRESTRICTED_OPTION = "bastion_unrestricted"


class UnauthorizedLoad(BastionError):
    """A protected model was loaded in an enforcement scope without any check or filter."""

    def __init__(self, model: type, location: str) -> None:
        self.model = model
        self.location = location
        super().__init__(
            f"{model.__name__} loaded at {location} without a check or filter: authorize it "
            "(Authorizer.check/filter, an authorized session) or wrap the code in "
            "bastion.unrestricted(reason=...)"
        )


@dataclass
class EnforcementScope:
    """What a scope has seen: the models authorized so far, the loads reported."""

    mode: str = "raise"
    authorized: set[type] = field(default_factory=set)
    violations: list[UnauthorizedLoad] = field(default_factory=list)


_SCOPE: ContextVar[EnforcementScope | None] = ContextVar("bastion_enforcement", default=None)
_UNRESTRICTED: ContextVar[str | None] = ContextVar("bastion_unrestricted", default=None)


@contextlib.contextmanager
def enforcement(mode: str = "raise") -> Iterator[EnforcementScope]:
    """Open an enforcement scope (``mode``: ``"raise"`` or ``"warn"``)."""
    if mode not in ("raise", "warn"):
        raise InvalidArgument(f"mode is 'raise' or 'warn', not {mode!r}")
    scope = EnforcementScope(mode)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def unrestricted(reason: str) -> Iterator[None]:
    """Load protected models without authorization, on purpose; ``reason`` is logged."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidArgument("unrestricted() needs a reason")
    logger.warning("bastion: unrestricted data access: %s (at %s)", reason, _call_site())
    token = _UNRESTRICTED.set(reason)
    try:
        yield
    finally:
        _UNRESTRICTED.reset(token)


def is_unrestricted() -> bool:
    """True inside ``unrestricted(...)``."""
    return _UNRESTRICTED.get() is not None


def mark_authorized(model: Any) -> None:
    """Record that ``model`` was authorized in the current scope (called by the Authorizer)."""
    scope = _SCOPE.get()
    if scope is not None and isinstance(model, type):
        scope.authorized.add(model)


def install_enforcement(target: Any, policy: Any) -> None:
    """Check every ORM ``SELECT`` run through ``target`` (a Session class, a sessionmaker or
    a session) against the current enforcement scope; ``policy`` says which models are
    protected (the target classes of its rules).

    asyncio: pass an ``AsyncSession`` (its ``sync_session`` is checked), or the ``Session``
    subclass given as ``sync_session_class`` to ``AsyncSession``/``async_sessionmaker``: the
    async ORM fires the events of that synchronous session."""
    target = _sync_target(target)

    def check(state: ORMExecuteState) -> None:
        scope = _SCOPE.get()
        if scope is None or not state.is_select or is_unrestricted():
            return
        if state.execution_options.get(INTERNAL) or _restricted_by_session(state):
            return
        protected = {r.target_type for r in policy.rules() if r.target_type is not None}
        for mapper in state.all_mappers:
            cls = mapper.class_
            if not any(issubclass(cls, p) for p in protected):
                continue
            if any(issubclass(cls, a) for a in scope.authorized):
                continue
            error = UnauthorizedLoad(cls, _call_site())
            scope.violations.append(error)
            if scope.mode == "raise":
                raise error
            warnings.warn(str(error), stacklevel=2)

    sa.event.listen(target, "do_orm_execute", check)


def _restricted_by_session(state: ORMExecuteState) -> bool:
    """Whether an authorized session will restrict this statement. Its own listener runs
    after a listener installed on the session class, so it has not marked the models yet."""
    if QUERY_SCOPE_KEY not in state.session.info:
        return False
    return not state.execution_options.get(UNRESTRICTED_OPTION)


def _sync_target(target: Any) -> Any:
    """The synchronous event target for ``target``. SQLAlchemy refuses events on the async
    classes with its own error; an ``async_sessionmaker`` or ``AsyncSession`` class is refused
    here saying what to pass instead (listening on ``Session`` itself would check every
    session of the process)."""
    classes = _async_classes()
    if classes is None:  # no asyncio extension: no async session or maker can exist
        return target
    async_session, async_maker = classes
    if isinstance(target, async_session):
        return target.sync_session
    if isinstance(target, async_maker) or (
        isinstance(target, type) and issubclass(target, async_session)
    ):
        raise InvalidArgument(
            "install_enforcement() takes an AsyncSession, or the Session subclass passed as "
            f"sync_session_class= to async_sessionmaker/AsyncSession, not {target!r}"
        )
    return target


_LIBRARY = (
    "/sqlalchemy/",
    "/bastion/",
    "/contextlib.py",
    "/threading.py",
    "/asyncio/",
    "/greenlet/",
    "/starlette/",
    "/fastapi/",
    "/anyio/",
)


def _parent_greenlet_frames() -> list[tuple[str, int, str]]:
    """The stack of the greenlet that awaits this one (SQLAlchemy's asyncio runs ORM code in a
    child greenlet: the application's ``await session...`` line is in the parent's stack)."""
    try:
        greenlet = importlib.import_module("greenlet")
    except ImportError:  # pragma: no cover - asyncio always has greenlet
        return []
    parent = greenlet.getcurrent().parent
    frame = getattr(parent, "gr_frame", None)
    stack = []
    while frame is not None:
        stack.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return stack[::-1]


def _call_site() -> str:
    """The innermost frame of the application (not SQLAlchemy, bastion or the stdlib). Under
    asyncio the ORM runs in a greenlet whose stack does not hold the awaiting code: then the
    current task's coroutine frames are searched."""
    frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_stack()[:-1]]
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        frames = _parent_greenlet_frames() + frames
    for filename, lineno, name in reversed(frames):
        path = filename.replace("\\", "/")
        if not any(part in path for part in _LIBRARY):
            return f"{filename}:{lineno} in {name}"
    return "<unknown>"


def _async_classes() -> tuple[Any, Any] | None:
    """``(AsyncSession, async_sessionmaker)``, or None when SQLAlchemy's asyncio extension
    cannot be imported (it needs greenlet: the ``async`` extra). Imported on use so that
    ``import bastion`` needs SQLAlchemy only; without it no async session can exist."""
    try:
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    except ImportError:
        return None
    return AsyncSession, async_sessionmaker


def is_async_session(value: Any) -> bool:
    classes = _async_classes()
    return classes is not None and isinstance(value, classes[0])


def is_async_session_class(value: Any) -> bool:
    classes = _async_classes()
    return classes is not None and isinstance(value, type) and issubclass(value, classes[0])
