"""Flask integration: the ``Bastion`` extension (extra ``flask``).

It follows Flask's extension guide: ``Bastion(app, ...)``, or ``Bastion(...)`` then
``bastion.init_app(app)`` in an app factory; the extension is ``app.extensions["bastion"]``; its
settings are ``BASTION_*`` config keys, read at request time; what belongs to one request (the
``Authorizer`` over the request's session, the subject, a page's answers) lives on ``g``::

    bastion = Bastion(policy=policy, session=db)  # Flask-SQLAlchemy's db, or a callable
    bastion.init_app(app)

Who is asking
-------------
The subject is Flask-Login's ``current_user`` when it is authenticated, ``None`` (nobody) when it
is anonymous. ``@bastion.subject_loader`` registers a function that returns it instead (an API
token's owner; an ``Anonymous()`` object with rules of its own, for visitors who may do
something); it runs at most once per request. ``None`` is never authorized: the guards below
answer *not authenticated* for it, ``can`` answers False.

The session
-----------
``session=`` gives the SQLAlchemy ``Session`` of the current request, the one the views use: a
callable (``scoped_session``, ``lambda: g.db_session``) or Flask-SQLAlchemy's ``db``
(``db.session``). Omitted, the app's Flask-SQLAlchemy extension is used. The ``Authorizer`` over
that session is made when a request first needs it (:func:`current_authorizer`); bastion never
commits, rolls back or closes the session.

Protecting views
----------------
The three ways of KegBouncer's README, answered by the policy::

    if current_user_has_permissions("reports.view"):
        ...


    @app.get("/reports")
    @requires_permissions("reports.view")  # functions and methods
    def reports(): ...


    class AuditView(ProtectedView):  # a MethodView: every HTTP method is guarded
        requires_permission = "grants.audit"

One object: ``@requires_permission_on("doc.edit", Document)`` loads the ``Document`` whose
primary key is the route's URL variable (``id_param=``; by default the only one) and passes it
to the view as ``document`` (``arg=``); inside a view, ``get_authorized(Document, doc_id,
"doc.edit")`` does the same. A list: ``authorized(Document, "doc.read")`` is the filtered
``Select`` (compose it, paginate it, count it).

Statuses
--------
==================================  ===============================================================
nobody logged in (subject None)     ``BASTION_UNAUTHENTICATED_STATUS`` (401), or a redirect to the
                                    endpoint ``BASTION_LOGIN_VIEW`` with ``?next=`` when it is set
a permission is missing             ``BASTION_FORBIDDEN_STATUS`` (403)
the object does not exist           404
the object exists, access denied    403; 404 with ``BASTION_NOT_FOUND_ON_DENY = True`` or
                                    ``conceal=True``, so that ids cannot be probed
==================================  ===============================================================

Nobody logged in is answered first, whether the object exists or not, so a visitor learns nothing
about ids. The default answers a denial with 403: the user learns that the object exists, which
suits ids that are not secret (a user who may read a document but not edit it gets 403 on the
edit page either way). ``BASTION_NOT_FOUND_ON_DENY`` makes a denial look exactly like a missing
object. ``@bastion.unauthenticated_handler`` and ``@bastion.forbidden_handler`` (which receives
the ``NotAuthorized``, whose ``.explanation`` says why) replace the first two answers with your
own response, as Flask-Login's ``unauthorized_handler``. A ``NotAuthorized`` raised in a view
(``current_authorizer().authorize(...)``) is answered the same way (an error handler); responses
go through Flask's ``errorhandler(401/403/404)`` pages.

Templates
---------
``can(permission, obj=None)`` and ``allowed_actions(objects, actions=None)`` are template globals.
``allowed_actions`` answers a whole page in one query per class (:meth:`Authorizer.
allowed_actions`) and remembers the answers for the request, so ``can`` in the page's loop asks
nothing more::

    {% set _ = allowed_actions(documents, ["doc.edit", "doc.delete"]) %}
    {% for doc in documents %}
      {% if can("doc.edit", doc) %}<a href="...">Edit</a>{% endif %}
    {% endfor %}

Tests
-----
``login_as(client, user)`` makes a test client's requests come from ``user`` (``None``: nobody),
from now on or for a ``with`` block. It needs ``app.testing``; it puts the user in the WSGI
environ (a key no HTTP client can set), where bastion reloads it through the request's session,
and, for apps with Flask-Login, in the session cookie as Flask-Login's ``FlaskLoginClient`` does,
so that ``current_user`` agrees.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, overload

import flask
import flask_login  # type: ignore[import-untyped]
import sqlalchemy as sa
from flask import current_app, g, has_request_context, request
from flask.views import MethodView
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from werkzeug.exceptions import HTTPException

from bastion.authorizer import Authorizer, is_deleted
from bastion.enforcement import enforcement
from bastion.errors import BastionError, InvalidArgument, NotAuthorized, UnmappedClass
from bastion.integrations._keys import coerce_key
from bastion.policy import Policy

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from flask.typing import ResponseReturnValue

__all__ = [
    "SUBJECT_ENVIRON_KEY",
    "Bastion",
    "ConfigurationError",
    "ProtectedView",
    "abort_forbidden",
    "abort_unauthenticated",
    "allowed_actions",
    "authorized",
    "can",
    "current_authorizer",
    "current_subject",
    "current_user_has_permissions",
    "get_authorized",
    "logged_in_user",
    "login_as",
    "requires_permission_on",
    "requires_permissions",
]

#: The WSGI environ key :func:`login_as` sets (honoured only when ``app.testing``).
SUBJECT_ENVIRON_KEY = "bastion.subject"

#: The config keys and their defaults (``app.config.setdefault`` in ``init_app``).
DEFAULTS: dict[str, Any] = {
    "BASTION_UNAUTHENTICATED_STATUS": 401,
    "BASTION_FORBIDDEN_STATUS": 403,
    "BASTION_LOGIN_VIEW": None,
    "BASTION_NOT_FOUND_ON_DENY": False,
    # enforcement coverage per request: None (off), "raise" or "warn"; loads of protected
    # models need ``install_enforcement(...)`` on the app's session class (see bastion.enforcement)
    "BASTION_ENFORCE": None,
}

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")
_UNSET: Any = object()


class ConfigurationError(BastionError, RuntimeError):
    """The app is not set up for what was asked: no ``Bastion`` on it, no session, no way to
    know the subject, a view whose URL variables do not say which object to load."""


class Bastion:
    """The Flask extension: ``Bastion(app, policy=..., session=...)`` or ``init_app(app)``."""

    def __init__(
        self, app: flask.Flask | None = None, *, policy: Policy | None = None, session: Any = None
    ) -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidArgument(f"Bastion(policy=) takes a Policy, got {policy!r}")
        #: the policy every request is authorized against
        self.policy = policy
        self._get_session = _session_getter(session)
        self._subject_loader: Callable[[], Any] | None = None
        self._unauthenticated: Callable[[], ResponseReturnValue] | None = None
        self._forbidden: Callable[[NotAuthorized], ResponseReturnValue] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register on ``app``: config defaults, ``app.extensions["bastion"]``, the template
        globals ``can``/``allowed_actions`` and the error handler for ``NotAuthorized``."""
        self.required_policy()
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions["bastion"] = self
        app.add_template_global(can, "can")
        app.add_template_global(allowed_actions, "allowed_actions")
        app.register_error_handler(NotAuthorized, _handle_not_authorized)
        app.before_request(_open_enforcement)
        app.teardown_request(_close_enforcement)

    # registration decorators (Flask-Login's style) --------------------------------------------
    def subject_loader(self, loader: Callable[[], Any]) -> Callable[[], Any]:
        """Register the function that returns the request's subject (``None``: nobody)."""
        self._subject_loader = loader
        return loader

    def unauthenticated_handler(
        self, handler: Callable[[], ResponseReturnValue]
    ) -> Callable[[], ResponseReturnValue]:
        """Register the response for requests from nobody (instead of 401 / the login view)."""
        self._unauthenticated = handler
        return handler

    def forbidden_handler(
        self, handler: Callable[[NotAuthorized], ResponseReturnValue]
    ) -> Callable[[NotAuthorized], ResponseReturnValue]:
        """Register the response for a denial; it receives the ``NotAuthorized``."""
        self._forbidden = handler
        return handler

    def required_policy(self) -> Policy:
        """The policy (``ConfigurationError`` if none was given)."""
        if self.policy is None:
            raise ConfigurationError("Bastion needs a policy: Bastion(app, policy=...)")
        return self.policy

    # the current request -----------------------------------------------------------------------
    def session(self) -> Session:
        """The SQLAlchemy session of the current request."""
        return self._get_session()

    def authorizer(self) -> Authorizer:
        """The request's ``Authorizer`` (made on first use, kept on ``g``)."""
        data = _request_data()
        if data.authorizer is None:
            data.authorizer = Authorizer(self.required_policy(), self.session())
        return data.authorizer

    def subject(self) -> Any:
        """Who is asking: the loader's answer, or Flask-Login's authenticated user, or None."""
        data = _request_data()
        if data.subject is not _UNSET:
            return data.subject
        override = _UNSET
        if has_request_context() and current_app.testing:
            override = request.environ.get(SUBJECT_ENVIRON_KEY, _UNSET)
        if override is not _UNSET:
            data.subject = self._reload(override)
        elif self._subject_loader is not None:
            data.subject = self._subject_loader()
        else:
            return logged_in_user()  # Flask-Login caches it on g, and login_user() updates it
        return data.subject

    def _reload(self, subject: Any) -> Any:
        """A test's subject, loaded again through the request's session when it is mapped."""
        state = sa_inspect(subject, raiseerr=False) if subject is not None else None
        if state is None or state.key is None:
            return subject
        return self.session().get(state.mapper.class_, state.key[1])


@dataclass
class _RequestData:
    request: Any
    authorizer: Authorizer | None = None
    subject: Any = _UNSET
    #: ``can`` answers learnt by ``allowed_actions``: (subject id, permission, identity key)
    answers: dict[tuple[Any, ...], bool] = field(default_factory=dict)


def _request_data() -> _RequestData:
    # Kept on g, and tied to the request: an app context held open across several requests
    # (a test's ``with app.app_context()``) must not carry one request's subject into the next.
    current = request._get_current_object() if has_request_context() else None  # type: ignore[attr-defined]
    data: _RequestData | None = g.get("_bastion")
    if data is None or data.request is not current:
        data = g._bastion = _RequestData(current)
    return data


def _extension() -> Bastion:
    extension = current_app.extensions.get("bastion")
    if extension is None:
        raise ConfigurationError(
            f"Bastion is not set up on the app {current_app.name!r}: Bastion(app) or init_app(app)"
        )
    return extension  # type: ignore[no-any-return]


def _session_getter(session: Any) -> Callable[[], Session]:
    if session is None:
        return _flask_sqlalchemy_session
    if isinstance(session, Session):
        raise ConfigurationError(
            "Bastion(session=) takes a callable that returns the request's session (or "
            "Flask-SQLAlchemy's db), not one Session shared by every request"
        )
    if callable(session):
        return session  # type: ignore[no-any-return]
    if callable(getattr(session, "session", None)):  # Flask-SQLAlchemy's db: db.session()
        return lambda: session.session()
    raise InvalidArgument(
        f"Bastion(session=) takes a callable or Flask-SQLAlchemy's db: {session!r}"
    )


def _flask_sqlalchemy_session() -> Session:
    extension = current_app.extensions.get("sqlalchemy")
    if extension is None:
        raise ConfigurationError(
            "Bastion has no session: pass session= (a callable, or Flask-SQLAlchemy's db)"
        )
    return extension.session()  # type: ignore[no-any-return]


# who is asking -------------------------------------------------------------------------------
def current_subject() -> Any:
    """The subject of the current request (``None``: nobody)."""
    return _extension().subject()


def current_authorizer() -> Authorizer:
    """The ``Authorizer`` of the current request, over its session."""
    return _extension().authorizer()


def logged_in_user() -> Any:
    """Flask-Login's ``current_user`` itself (not the proxy) when authenticated, else None."""
    if not has_request_context():
        return None
    if not hasattr(current_app, "login_manager"):
        raise ConfigurationError(
            "no subject: set up Flask-Login (LoginManager(app)) or register @bastion.subject_loader"
        )
    user = flask_login.current_user._get_current_object()
    if user is None or not user.is_authenticated:
        return None
    return user


# answers -------------------------------------------------------------------------------------
def abort_unauthenticated() -> NoReturn:
    """Answer "nobody is logged in": the registered handler's response, a redirect to
    ``BASTION_LOGIN_VIEW``, or ``BASTION_UNAUTHENTICATED_STATUS`` (401)."""
    extension = current_app.extensions.get("bastion")
    if extension is not None and extension._unauthenticated is not None:
        flask.abort(flask.make_response(extension._unauthenticated()))
    login_view = current_app.config.get("BASTION_LOGIN_VIEW")
    if login_view:
        flask.abort(flask.redirect(flask.url_for(login_view, next=_here())))
    flask.abort(current_app.config.get("BASTION_UNAUTHENTICATED_STATUS", 401))


def abort_forbidden(error: NotAuthorized) -> NoReturn:
    """Answer a denial: the registered handler's response, or ``BASTION_FORBIDDEN_STATUS``."""
    extension = current_app.extensions.get("bastion")
    if extension is not None and extension._forbidden is not None:
        flask.abort(flask.make_response(extension._forbidden(error)))
    flask.abort(current_app.config.get("BASTION_FORBIDDEN_STATUS", 403))


def _here() -> str:
    """The current URL, relative (a ``next=`` that cannot point to another site)."""
    query = request.query_string.decode("latin-1")
    path = request.script_root + request.path
    return f"{path}?{query}" if query else path


def _handle_not_authorized(error: NotAuthorized) -> Any:
    try:
        if error.subject is None:
            abort_unauthenticated()
        # Fix: a denial on an object raised in a view answered 403 even with
        # BASTION_NOT_FOUND_ON_DENY, telling a denied id from a missing one
        if error.target is not None and current_app.config.get("BASTION_NOT_FOUND_ON_DENY"):
            flask.abort(404)
        abort_forbidden(error)
    except HTTPException as http:  # let the app's errorhandler(401/403) pages answer
        return current_app.handle_user_exception(http)


# the three ways of KegBouncer ----------------------------------------------------------------
def current_user_has_permissions(*permissions: Hashable, **context: Any) -> bool:
    """True iff someone is logged in and holds every one of ``permissions`` (no object)."""
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        return False
    authz = extension.authorizer()
    return all(authz.check(subject, p, **context) for p in permissions)


def _require(permissions: Iterable[Hashable], context: dict[str, Any]) -> Any:
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        abort_unauthenticated()
    authz = extension.authorizer()
    for permission in permissions:
        try:
            authz.authorize(subject, permission, **context)
        except NotAuthorized as error:
            abort_forbidden(error)
    return subject


def requires_permissions(
    *permissions: Hashable, **context: Any
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a view (function or method): 401 when nobody is logged in, 403 when one of
    ``permissions`` is not held (both configurable); no permissions: login required."""

    def decorate(view: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(view)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            _require(permissions, context)
            # (an ``async def`` view runs through Flask's ensure_sync, as Flask would run it)
            return current_app.ensure_sync(view)(*args, **kwargs)  # type: ignore[no-any-return]

        return guarded

    return decorate


class ProtectedView(MethodView):
    """A ``MethodView`` whose every HTTP method requires ``requires_permission`` (set on the
    class or the instance). ``check_auth`` runs before the method; override it for more."""

    #: the permission every request to the view must hold
    requires_permission: Hashable | None = None

    def check_auth(self, **kwargs: Any) -> None:
        """Called with the URL variables before the HTTP method's handler."""
        if self.requires_permission is None:
            raise ConfigurationError(f"{type(self).__name__}.requires_permission is not set")
        _require((self.requires_permission,), {})

    def dispatch_request(self, **kwargs: Any) -> ResponseReturnValue:
        self.check_auth(**kwargs)
        return super().dispatch_request(**kwargs)


# one object, a list --------------------------------------------------------------------------
def get_authorized(
    model: type[_T],
    ident: Any,
    permission: Hashable,
    /,
    *,
    conceal: bool | None = None,
    **context: Any,
) -> _T:
    """``session.get(model, ident)``, authorized for ``permission``: 401 when nobody is logged
    in, 404 when there is no such row, 403 when denied (404 when ``conceal``, which defaults to
    ``BASTION_NOT_FOUND_ON_DENY``)."""
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        abort_unauthenticated()
    authz = extension.authorizer()
    dialect = authz.session.get_bind(mapper=sa_inspect(model).mapper).dialect.name
    key = coerce_key(model, ident, dialect)  # (an id that cannot be a key: 404, not a 500)
    obj = None if key is None else authz.session.get(model, key)
    if obj is None:
        flask.abort(404)
    try:
        authz.authorize(subject, permission, obj, **context)
    except NotAuthorized as error:
        if current_app.config.get("BASTION_NOT_FOUND_ON_DENY") if conceal is None else conceal:
            flask.abort(404)  # the same answer as a missing row
        abort_forbidden(error)
    return obj


def requires_permission_on(
    permission: Hashable,
    model: type[Any],
    /,
    *,
    id_param: str | tuple[str, ...] | None = None,
    arg: str | None = None,
    conceal: bool | None = None,
    **context: Any,
) -> Callable[[Callable[..., _R]], Callable[..., _R]]:
    """Decorate a view: load ``model`` by the primary key in the URL variable ``id_param`` (by
    default the route's only one; a tuple for a composite key) with :func:`get_authorized`, and
    pass it as ``arg`` (default: the model's name in snake case) instead of the key."""
    if sa_inspect(model, raiseerr=False) is None:
        raise UnmappedClass(model)
    name = arg or re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()

    def decorate(view: Callable[..., _R]) -> Callable[..., _R]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> _R:
            ident = _pop_ident(view, kwargs, id_param)
            kwargs[name] = get_authorized(model, ident, permission, conceal=conceal, **context)
            return current_app.ensure_sync(view)(*args, **kwargs)  # type: ignore[no-any-return]

        return guarded

    return decorate


def _pop_ident(view: Any, kwargs: dict[str, Any], id_param: str | tuple[str, ...] | None) -> Any:
    if id_param is None:
        if len(kwargs) != 1:
            raise ConfigurationError(
                f"{view.__qualname__}: the route has the URL variables {sorted(kwargs)}; "
                "pass id_param= to requires_permission_on"
            )
        id_param = next(iter(kwargs))
    try:
        if isinstance(id_param, tuple):
            return tuple(kwargs.pop(p) for p in id_param)
        return kwargs.pop(id_param)
    except KeyError as missing:
        raise ConfigurationError(
            f"{view.__qualname__}: the route has no URL variable {missing}"
        ) from None


@overload
def authorized(
    query: type[_T], permission: Hashable, /, *, entity: Any = None, **context: Any
) -> Select[_T]: ...


@overload
def authorized(
    query: Select[Any], permission: Hashable, /, *, entity: Any = None, **context: Any
) -> Select[Any]: ...


def authorized(
    query: Any, permission: Hashable, /, *, entity: Any = None, **context: Any
) -> Select[Any]:
    """``query`` (a model or a ``Select``) narrowed to the rows the subject may ``permission``
    (:meth:`Authorizer.filter`); 401 when nobody is logged in."""
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        abort_unauthenticated()
    return extension.authorizer().filter(subject, permission, query, entity=entity, **context)


# templates -----------------------------------------------------------------------------------
def can(permission: Hashable, obj: Any = None, /, **context: Any) -> bool:
    """May the subject ``permission`` (on ``obj``)? False for nobody. Answers that
    :func:`allowed_actions` learnt for this request are reused."""
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        return False
    key = None if context else _answer_key(subject, permission, obj)
    if key is not None:
        known = _request_data().answers.get(key)
        if known is not None:
            return known
    return extension.authorizer().check(subject, permission, obj, **context)


def allowed_actions(
    objects: Any, actions: Iterable[Hashable] | None = None, /, **context: Any
) -> Any:
    """The permissions the subject holds on ``objects``: a frozenset for one object, ``{primary
    key: frozenset}`` for a list (one query per class for the whole page); ``actions`` defaults
    to every permission with rules for the objects' classes. Remembered for :func:`can`."""
    single = sa_inspect(objects, raiseerr=False) is not None
    items = [objects] if single else list(objects)
    extension = _extension()
    subject = extension.subject()
    if subject is None:
        return frozenset() if single else dict.fromkeys(map(_identity, items), frozenset())
    policy = extension.required_policy()
    if actions is None:
        types = {type(o) for o in items}
        actions = [
            p
            for p in policy.permissions
            if any(policy.rules_for(p, type(subject), t) for t in types)
        ]
    actions = list(actions)
    authz = extension.authorizer()
    found = authz.allowed_actions(subject, items, actions=actions, **context)
    if not context:
        answers = _request_data().answers
        _remember_answers(authz.session, answers)
        for obj in items:
            for action in actions:
                key = _answer_key(subject, action, obj)
                if key is not None:
                    answers[key] = action in found[_identity(obj)]
    return found[_identity(objects)] if single else found


def _identity(obj: Any) -> Any:
    """The key ``Authorizer.check_many``/``allowed_actions`` use: the primary key, a tuple when
    composite."""
    state = sa_inspect(obj)
    values = state.key[1] if state.key is not None else state.mapper.primary_key_from_instance(obj)
    return values[0] if len(values) == 1 else tuple(values)


def _answer_key(subject: Any, permission: Hashable, obj: Any) -> tuple[Any, ...] | None:
    state = sa_inspect(obj, raiseerr=False) if obj is not None else None
    if state is None or state.key is None:
        return None  # only persistent objects have an identity to remember answers by
    # Fix: an answer learnt before the view changed or deleted the object (or its subject)
    # was reused by can(), allowing what the Authorizer now denies. Changed or deleted objects
    # are asked again; a flush, commit or rollback forgets every answer (_remember_answers).
    subject_state = sa_inspect(subject, raiseerr=False)
    if state.modified or (subject_state is not None and subject_state.modified):
        return None
    session = state.session
    if state.was_deleted or (session is not None and is_deleted(obj, session)):
        return None
    return (id(subject), permission, state.key)


#: session.info key: the answers dict of the request that last remembered answers in it
_ANSWERS = "bastion flask answers"


def _remember_answers(session: Session, answers: dict[tuple[Any, ...], bool]) -> None:
    """Forget ``answers`` when ``session`` flushes, commits or rolls back (writes may change
    what the subject may do)."""
    first = _ANSWERS not in session.info
    session.info[_ANSWERS] = answers
    if first:
        for name in ("after_flush", "after_commit", "after_rollback", "after_soft_rollback"):
            sa.event.listen(session, name, _forget_answers)
        sa.event.listen(session, "do_orm_execute", _forget_after_writes)


def _forget_answers(session: Session, *args: Any) -> None:
    answers = session.info.get(_ANSWERS)
    if answers is not None:
        answers.clear()


def _forget_after_writes(state: Any) -> None:
    if not state.is_select:  # UPDATE/DELETE/INSERT statements, text(): may change answers
        _forget_answers(state.session)


# tests ---------------------------------------------------------------------------------------
def login_as(client: FlaskClient, user: Any) -> _LoggedIn:
    """Make ``client``'s requests come from ``user`` (``None``: nobody). Effective at once;
    as a context manager, the previous user comes back when the block ends."""
    app = client.application
    if not app.testing:
        raise ConfigurationError("login_as() needs app.testing = True")
    previous = client.environ_base.get(SUBJECT_ENVIRON_KEY, _UNSET)
    _set_user(client, user)
    return _LoggedIn(client, previous)


def _set_user(client: FlaskClient, user: Any) -> None:
    if user is _UNSET:
        client.environ_base.pop(SUBJECT_ENVIRON_KEY, None)
    else:
        client.environ_base[SUBJECT_ENVIRON_KEY] = user
    if not hasattr(client.application, "login_manager"):
        return
    with client.session_transaction() as session:  # as Flask-Login's FlaskLoginClient does
        if user is None or user is _UNSET or not hasattr(user, "get_id"):
            session.pop("_user_id", None)
            session.pop("_fresh", None)
        else:
            session["_user_id"] = user.get_id()
            session["_fresh"] = True


class _LoggedIn:
    """What :func:`login_as` returns: leaving the ``with`` block restores the previous user."""

    def __init__(self, client: FlaskClient, previous: Any) -> None:
        self.client = client
        self.previous = previous

    def __enter__(self) -> FlaskClient:
        return self.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _set_user(self.client, self.previous)


# enforcement coverage (bastion.enforcement), one scope per request ------------------------------


def _open_enforcement() -> None:
    mode = current_app.config.get("BASTION_ENFORCE")
    if mode:
        scope = enforcement(mode)
        scope.__enter__()
        g._bastion_enforcement = scope


def _close_enforcement(exc: BaseException | None) -> None:
    scope = g.pop("_bastion_enforcement", None)
    if scope is not None:
        scope.__exit__(None, None, None)
