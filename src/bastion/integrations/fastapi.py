"""FastAPI integration: dependencies and one exception handler (extra ``fastapi``).

Configure once, with the two dependencies the application already has (who is asking, and the
request's session)::

    bastion = Bastion(policy, get_subject=current_user, get_session=get_session)
    bastion.install(app)  # NotAuthorized -> 401 / 403 JSON


    @app.patch("/posts/{post_id}")
    async def edit(
        post: Annotated[Post, Depends(bastion.require("post.edit", Post, id_param="post_id"))],
    ): ...  # post is loaded by primary key and authorized: 404 if missing, 403 if denied


    @app.get("/reports")
    async def reports(user: Annotated[User, Depends(bastion.require("reports.view"))]): ...


    @app.get("/posts")
    async def index(
        stmt: Annotated[Select[Post], Depends(bastion.authorized(Post, "post.read"))],
        session: Annotated[AsyncSession, Depends(get_session)],
    ):
        return (await session.scalars(stmt.order_by(Post.id).limit(50))).all()

The dependencies are ordinary FastAPI dependencies with real signatures, so FastAPI resolves
``get_subject`` and ``get_session`` once per request (the endpoint and the guard share one
session) and the OpenAPI schema shows what they read: the typed path parameter of ``id_param``
(declared once, even when the endpoint declares it too) and whatever ``get_subject`` reads (a
header, a cookie, a security scheme).

Sessions: ``get_session`` may give a ``Session`` or an ``AsyncSession`` (decided per request).
An ``AsyncSession`` is driven by :class:`~bastion.asyncio.AsyncAuthorizer`; a ``Session``'s
database work runs in FastAPI's thread pool, never on the event loop.

Status codes: ``get_subject`` returning ``None`` is *not authenticated* (401); a missing object is
404; a denial raises :class:`~bastion.NotAuthorized`, which the handler installed by
:meth:`Bastion.install` (or :func:`install_exception_handler`) turns into 403 JSON, or 401 when
the error has no subject. ``require(..., conceal=True)`` answers a denial with the same 404 as a
missing object, so that ids cannot be probed. An anonymous visitor who may still do something is
a subject too: return an ``Anonymous()`` object from ``get_subject`` and write rules for it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from typing import Annotated, Any, TypeVar, overload

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.sql import Select
from starlette.concurrency import run_in_threadpool

from bastion.authorizer import Authorizer
from bastion.enforcement import enforcement
from bastion.errors import InvalidArgument, NotAuthorized
from bastion.integrations._keys import coerce_key
from bastion.policy import Policy
from bastion.rules.validate import mapper_of

__all__ = ["Bastion", "EnforcementMiddleware", "install_exception_handler"]

_M = TypeVar("_M")
_S = TypeVar("_S", bound=Select[Any])
_Dependency = Callable[..., Coroutine[Any, Any, _M]]

# Names of the guards' own parameters: prefixed so that they cannot clash with an ``id_param``.
_SUBJECT, _SESSION, _CONTEXT = "bastion_subject", "bastion_session", "bastion_context"


class Bastion:
    """One policy, the app's subject and session dependencies, and the guards built from them.

    ``get_subject`` and ``get_session`` are FastAPI dependencies (functions, generators, classes;
    they may have dependencies of their own). ``explain=True`` adds the top line of the decision
    trace to 403 responses (``"reason"``): useful in development, a disclosure in production.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        get_subject: Callable[..., Any],
        get_session: Callable[..., Any],
        explain: bool = False,
        union_branches: bool = True,
        inline_loaded: bool = True,
    ) -> None:
        if not isinstance(policy, Policy):
            raise InvalidArgument(f"Bastion needs a Policy, got {policy!r}")
        self.policy = policy
        self.get_subject = get_subject
        self.get_session = get_session
        #: add the explanation's reason to 403 responses
        self.explain = explain
        self.union_branches = union_branches
        self.inline_loaded = inline_loaded

        async def get_authorizer(**values: Any) -> Any:
            return self.authorizer_for(values[_SESSION])

        #: dependency giving an ``Authorizer`` (or ``AsyncAuthorizer``) on the request's session
        self.get_authorizer: Callable[..., Coroutine[Any, Any, Any]] = _with_signature(
            get_authorizer, [_depends(_SESSION, get_session)]
        )

    def install(self, app: FastAPI, *, enforce: str | None = None) -> None:
        """Install the ``NotAuthorized`` handler on ``app`` (with this object's ``explain``).

        ``enforce="raise"`` (or ``"warn"``) opens an enforcement scope around every request
        (:mod:`bastion.enforcement`): with ``install_enforcement(...)`` on the app's session
        class, a load of a protected model that no check or filter covered fails."""
        install_exception_handler(app, explain=self.explain)
        if enforce is not None:
            app.add_middleware(EnforcementMiddleware, mode=enforce)

    def authorizer_for(self, session: Any) -> Any:
        """An ``AsyncAuthorizer`` for an ``AsyncSession``, an ``Authorizer`` for a ``Session``."""
        if _is_async(session):
            from bastion.asyncio import AsyncAuthorizer

            return AsyncAuthorizer(
                self.policy,
                session,
                union_branches=self.union_branches,
                inline_loaded=self.inline_loaded,
            )
        return Authorizer(
            self.policy,
            session,
            union_branches=self.union_branches,
            inline_loaded=self.inline_loaded,
        )

    # guards --------------------------------------------------------------------------------
    @overload
    def require(
        self,
        permission: Hashable,
        /,
        *,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[Any]: ...

    @overload
    def require(
        self,
        permission: Hashable,
        model: type[_M],
        /,
        *,
        id_param: str,
        id_type: Any = None,
        options: Sequence[Any] = (),
        conceal: bool = False,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[_M]: ...

    def require(
        self,
        permission: Hashable,
        model: type[Any] | None = None,
        /,
        *,
        id_param: str | None = None,
        id_type: Any = None,
        options: Sequence[Any] = (),
        conceal: bool = False,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[Any]:
        """A dependency that authorizes ``permission``.

        Without a model, it checks the object-less permission and gives the subject. With a
        model, it loads ``session.get(model, <path parameter id_param>, options=options)`` (404
        if there is no such row) and authorizes the permission on it, giving the object.
        ``id_type`` overrides the path parameter's type (default: the primary key column's
        Python type). ``context`` holds the rule's ``ctx`` values: a mapping, or a dependency
        returning one (to read them from the request)."""
        self.policy.require_permission(permission)
        if model is None:
            if id_param is not None or conceal or options:
                raise InvalidArgument("id_param=, options= and conceal= need a model")
            return self._require_subject(permission, context)
        return self._require_object(permission, model, id_param, id_type, options, conceal, context)

    def _require_subject(
        self, permission: Hashable, context: Mapping[str, Any] | Callable[..., Any] | None
    ) -> _Dependency[Any]:
        async def require_permission(**values: Any) -> Any:
            subject = _present(values[_SUBJECT], permission)
            session = values[_SESSION]
            await self._authorize(session, subject, permission, None, _context(values, context))
            return subject

        return _with_signature(require_permission, self._parameters(context))

    def _require_object(
        self,
        permission: Hashable,
        model: type[Any],
        id_param: str | None,
        id_type: Any,
        options: Sequence[Any],
        conceal: bool,
        context: Mapping[str, Any] | Callable[..., Any] | None,
    ) -> _Dependency[Any]:
        id_param, key_type = _key_parameter(model, id_param)
        key_type = key_type if id_type is None else id_type
        options = tuple(options)

        async def require_object(**values: Any) -> Any:
            subject = _present(values[_SUBJECT], permission)
            session = values[_SESSION]
            obj = await _get(session, model, values[id_param], options)
            if obj is None:
                raise HTTPException(status_code=404)
            try:
                await self._authorize(session, subject, permission, obj, _context(values, context))
            except NotAuthorized:
                if conceal:  # the same answer as a missing row
                    raise HTTPException(status_code=404) from None
                raise
            return obj

        key = inspect.Parameter(
            id_param,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[key_type, Path(description=f"{model.__name__} primary key")],
        )
        return _with_signature(require_object, [key, *self._parameters(context)])

    @overload
    def authorized(
        self,
        query: type[_M],
        permission: Hashable,
        /,
        *,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[Select[_M]]: ...

    @overload
    def authorized(
        self,
        query: _S,
        permission: Hashable,
        /,
        *,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[_S]: ...

    def authorized(
        self,
        query: Any,
        permission: Hashable,
        /,
        *,
        context: Mapping[str, Any] | Callable[..., Any] | None = None,
    ) -> _Dependency[Any]:
        """A dependency giving ``filter(subject, permission, query)``: the ``Select`` (of a
        model, or the given statement) narrowed to the rows the subject may ``permission``.
        Building it does no I/O; execute it on the request's session."""
        self.policy.require_permission(permission)

        async def authorized_query(**values: Any) -> Any:
            subject = _present(values[_SUBJECT], permission)
            session = values[_SESSION]
            authz = self.authorizer_for(session)
            ctx = _context(values, context)
            if _is_async(session):
                return authz.filter(subject, permission, query, **ctx)
            # Fix: on a sync session, building the filter may read the subject's expired
            # attributes (a query): that ran on the event loop; in the thread pool, as require()
            return await run_in_threadpool(authz.filter, subject, permission, query, **ctx)

        return _with_signature(authorized_query, self._parameters(context))

    # helpers -------------------------------------------------------------------------------
    def _parameters(
        self, context: Mapping[str, Any] | Callable[..., Any] | None
    ) -> list[inspect.Parameter]:
        parameters = [_depends(_SUBJECT, self.get_subject), _depends(_SESSION, self.get_session)]
        if callable(context):
            parameters.append(_depends(_CONTEXT, context))
        return parameters

    async def _authorize(
        self,
        session: Any,
        subject: Any,
        permission: Hashable,
        target: Any,
        context: Mapping[str, Any],
    ) -> None:
        authz = self.authorizer_for(session)
        if _is_async(session):
            await authz.authorize(subject, permission, target, **context)
        else:
            await run_in_threadpool(authz.authorize, subject, permission, target, **context)


class EnforcementMiddleware:
    """ASGI middleware: one enforcement scope per HTTP request (``mode``: raise or warn)."""

    def __init__(self, app: Any, mode: str = "raise") -> None:
        if mode not in ("raise", "warn"):
            raise InvalidArgument(f"mode is 'raise' or 'warn', not {mode!r}")
        self.app = app
        self.mode = mode

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        with enforcement(self.mode):
            await self.app(scope, receive, send)


def install_exception_handler(app: FastAPI, *, explain: bool = False) -> None:
    """Answer :class:`~bastion.NotAuthorized` with JSON: 401 ``{"detail": "Not authenticated"}``
    when it has no subject, else 403 ``{"detail": "Forbidden", "permission": ...}`` (plus
    ``"reason"``, the explanation's top line, when ``explain`` is true)."""

    async def not_authorized(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, NotAuthorized):  # registered for this class only
            raise exc
        if exc.subject is None:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        body: dict[str, Any] = {"detail": "Forbidden", "permission": str(exc.permission)}
        if explain and exc.explanation is not None:
            body["reason"] = exc.explanation.reason
        return JSONResponse(body, status_code=403)

    app.add_exception_handler(NotAuthorized, not_authorized)


# -- internals -------------------------------------------------------------------------------


def _is_async(session: Any) -> bool:
    # An AsyncSession implies that sqlalchemy.ext.asyncio is imported; not importing it here
    # keeps sync-only applications free of its greenlet requirement.
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(session, module.AsyncSession)


async def _get(session: Any, model: type[Any], key: Any, options: tuple[Any, ...]) -> Any:
    bind = session.get_bind(mapper=sa_inspect(model).mapper)
    key = coerce_key(model, key, bind.dialect.name)  # (a key out of range: 404, not a 500)
    if key is None:
        return None
    if _is_async(session):
        return await session.get(model, key, options=options)
    return await run_in_threadpool(session.get, model, key, options=options)


def _present(subject: Any, permission: Hashable) -> Any:
    """The subject, or a subject-less ``NotAuthorized`` (401) when nobody is authenticated."""
    if subject is None:
        raise NotAuthorized(None, permission)
    return subject


def _context(
    values: Mapping[str, Any], context: Mapping[str, Any] | Callable[..., Any] | None
) -> Mapping[str, Any]:
    if context is None:
        return {}
    if callable(context):
        return dict(values[_CONTEXT])
    return context


def _key_parameter(model: type[Any], id_param: str | None) -> tuple[str, Any]:
    """``id_param``, validated, and the Python type of ``model``'s one primary key column."""
    mapper = mapper_of(model)
    if mapper is None:
        raise InvalidArgument(f"require(): {model!r} is not a mapped class")
    if not id_param or not id_param.isidentifier() or id_param.startswith("bastion_"):
        raise InvalidArgument(
            f"require(): id_param= must name the path parameter, got {id_param!r}"
        )
    if len(mapper.primary_key) != 1:
        raise InvalidArgument(
            f"require(): {model.__name__} has a composite primary key; load it in your own "
            "dependency and call authorize()"
        )
    try:
        return id_param, mapper.primary_key[0].type.python_type
    except NotImplementedError:
        return id_param, str


def _depends(name: str, dependency: Callable[..., Any]) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Any, Depends(dependency)]
    )


def _with_signature(
    fn: Callable[..., _M], parameters: list[inspect.Parameter]
) -> Callable[..., _M]:
    # FastAPI reads a dependency's parameters from inspect.signature(), which honours
    # __signature__: the guard declares exactly the parameters it needs, by their real names.
    fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return fn
