"""KegBouncer's ``keg_bouncer.auth``: protect Flask views with the user's KegBouncer permissions.

The three ways of KegBouncer's README, with its names, arguments and answers::

    from bastion.compat.keg_bouncer.auth import (
        ProtectedBaseView,
        current_user_has_permissions,
        requires_permissions,
    )

    if current_user_has_permissions("launch-missiles"):  # 1. in an ``if``
        launch_missiles()


    @requires_permissions("launch-missiles")  # 2. a function or a method
    def launch_missiles(target=Enemy()): ...


    class LaunchMissilesView(ProtectedBaseView):  # 3. every HTTP method of a view
        requires_permission = "launch-missiles"

As in KegBouncer, the user is Flask-Login's ``current_user``, its permissions are its own
``has_permissions(*tokens)`` (``bastion.compat.keg_bouncer.model.mixins.UserMixin``: the tokens
of its user groups and their bundles), and a request from nobody is answered 401, one lacking a
permission 403. ``ProtectedBaseView`` is a Keg ``BaseView`` when Keg is installed (Keg calls its
``check_auth`` before the method), and otherwise a Flask ``MethodView`` that does the same.

Differences from KegBouncer
---------------------------
* The answers go through bastion's Flask integration
  (:func:`bastion.integrations.flask.abort_unauthenticated` / ``abort_forbidden``): with no
  ``Bastion`` extension on the app, or with its defaults, they are KegBouncer's 401 and 403;
  when the app sets ``BASTION_LOGIN_VIEW``, ``BASTION_*_STATUS`` or registers bastion's handlers,
  these views follow that configuration like the rest of the app.
* ``functools.wraps`` instead of ``wrapt`` (one dependency fewer; functions and methods alike).
* Without Flask-Login set up on the app, a request raises ``ConfigurationError`` instead of an
  ``AttributeError`` from inside Flask-Login.

To decide with a bastion policy instead (rules, roles, scoped grants, objects), use
:mod:`bastion.integrations.flask`, whose functions have the same names.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from bastion.errors import NotAuthorized
from bastion.integrations.flask import (
    ProtectedView,
    abort_forbidden,
    abort_unauthenticated,
    logged_in_user,
)

__all__ = ["ProtectedBaseView", "current_user_has_permissions", "requires_permissions"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def current_user_has_permissions(*tokens: Any) -> bool:
    """Returns True IFF the current session belongs to an authenticated user who has all of the
    given permission tokens."""
    user = logged_in_user()
    return user is not None and bool(user.has_permissions(*tokens))


def requires_permissions(*tokens: Any) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorates a view function and ensures that it is only accessed when the current user has
    all of the given permissions.

    :param tokens: any number of required permission tokens."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            _check(tokens)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _check(tokens: tuple[Any, ...]) -> None:
    user = logged_in_user()
    if user is None:
        abort_unauthenticated()
    if not user.has_permissions(*tokens):
        abort_forbidden(NotAuthorized(user, tokens[0] if len(tokens) == 1 else tokens))


def _base_view() -> type[Any]:
    """Keg's ``BaseView`` when Keg is installed; otherwise a ``MethodView`` that calls
    ``check_auth`` before the HTTP method, as Keg's does."""
    try:
        keg_web = importlib.import_module("keg.web")
    except ImportError:
        return ProtectedView
    return keg_web.BaseView  # type: ignore[no-any-return]


class ProtectedBaseView(_base_view()):  # type: ignore[misc]
    """A Keg BaseView which requires that requests be made by an authenticated user with a
    given permission token.

    This class protects *all* HTTP methods with the same permission requirements. Requests from
    nobody receive a 401, requests from a user without the permission a 403.

    Subclasses should set the following member either on the class or the instance:

        * `requires_permission` (str): The permission token that a requesting user must possess.
    """

    require_authentication = True  # as KegBouncer (Keg's BaseView does not read it)

    requires_permission: Any = None

    def check_auth(self, *args: Any, **kwargs: Any) -> None:
        _check((self.requires_permission,))
