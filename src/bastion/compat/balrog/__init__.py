"""balrog 1.1.0's public API, backed by :mod:`bastion.roles`.

Code written for balrog runs by changing ``import balrog`` to ``from bastion.compat import
balrog`` (and ``from balrog.exceptions import ...`` to ``from bastion.compat.balrog.exceptions
import ...``: balrog's modules ``exceptions``, ``permission``, ``policy`` and ``role`` are here
too). Names, signatures and behaviour are balrog's:

* ``Policy(roles, get_identity, get_role)`` with ``.roles`` and ``.permissions`` dicts (a
  permission's first declaration wins), ``get_identity(*args, **kwargs)``,
  ``get_role(identity, *args, **kwargs)`` (``RoleNotFound(name)`` for an unknown name),
  ``check(permission, *args, **kwargs)`` and ``filter(permission, objects, *args, **kwargs)``.
  Both first check the permission exists, **only if the policy has any permissions at all**
  (``PermissionNotFound``), then call ``get_identity(*args, **kwargs)``, then
  ``get_role(identity, *args, **kwargs)``, then ``role.check(identity, permission, *args,
  **kwargs)`` / ``role.filter(identity, permission, objects, *args, **kwargs)``.
* ``Role(name, permissions)``: ``.check`` is False for a permission the role lacks; ``.filter``
  raises ``PermissionNotFound()`` for it (bastion's native ``Role.filter`` returns nothing instead).
* ``Permission(name)``: ``check`` is True and ``filter`` returns the objects unchanged, unless
  overridden. As an extension, ``Permission(name, when=rule)`` carries a bastion rule, applied by
  ``check`` in Python and by ``filter`` in SQL.
* Exceptions ``Error``, ``PermissionNotFound``, ``RoleNotFound`` (also bastion errors).

The one intended difference: where balrog used ``assert`` against duplicate role names and
duplicate permissions within a role (silently skipped under ``python -O``), this module raises
``Error`` with balrog's message.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from bastion import errors
from bastion import roles as _roles

__all__ = ["Error", "Permission", "PermissionNotFound", "Policy", "Role", "RoleNotFound"]
__version__ = "1.1.0"


class Error(errors.BastionError):
    """Base exception class: every balrog error extends it."""


class PermissionNotFound(Error, errors.PermissionNotFound):
    """Permission is not found (also :class:`bastion.PermissionNotFound`)."""

    def __init__(self, *args: object) -> None:
        Exception.__init__(self, *args)
        self.permission = args[0] if args else None
        self.known = ()


class RoleNotFound(Error, errors.RoleNotFound):
    """No role has the name returned by ``get_role`` (also :class:`bastion.RoleNotFound`)."""

    def __init__(self, *args: object) -> None:
        Exception.__init__(self, *args)
        self.role = args[0] if args else None
        self.known = ()


class Permission(_roles.Permission):
    """Permission that an identity can have: ``check`` True, ``filter`` pass-through."""

    def __init__(self, name: Hashable, when: object = None) -> None:
        # balrog accepted any name; only bastion rules need it to be a valid permission name.
        # Fix: the rule was set as the attribute ``rule``, which broke balrog subclasses that
        # define a method ``rule`` or an ``__init__`` not calling this one (balrog's set only
        # ``name``); bastion keeps it under a private name (see bastion.roles.Permission).
        self.name = name
        if when is not None:
            self._rule = _roles.Permission(name, when).rule


class Role(_roles.Role):
    """Role, a set of permissions that an identity can have access to."""

    def __init__(self, name: Any, permissions: Iterable[Permission]) -> None:
        self.name = name
        self.permissions: dict[Hashable, _roles.Permission] = {}
        for permission in permissions:
            if permission.name in self.permissions:
                raise Error(
                    f"The permission `{permission.name}` is already registered within this role."
                )
            self.permissions[permission.name] = permission

    def check(self, identity: Any, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
        try:
            held = self.permissions[permission]
        except KeyError:
            return False
        return held.check(identity, *args, **kwargs)

    def filter(
        self, identity: Any, permission: Hashable, objects: Any, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            held = self.permissions[permission]
        except KeyError:
            raise PermissionNotFound() from None
        return held.filter(identity, objects, *args, **kwargs)

    @property
    def python_only(self) -> bool:
        """True when a subclass overrides ``check`` or ``filter`` (e.g. an admin role)."""
        cls = type(self)
        return cls.check is not Role.check or cls.filter is not Role.filter


class Policy:
    """Controls the access of a certain actor to a certain action on a resource."""

    def __init__(
        self,
        roles: Iterable[Role],
        get_identity: Callable[..., Any],
        get_role: Callable[..., Any],
    ) -> None:
        self._get_identity = get_identity
        self._get_role = get_role
        self.roles: dict[Any, Role] = {}
        self.permissions: dict[Hashable, _roles.Permission] = {}
        for role in roles:
            if role.name in self.roles:
                raise Error(f"The role `{role.name}` is already registered.")
            self.roles[role.name] = role
            for name, permission in role.permissions.items():
                if name not in self.permissions:
                    self.permissions[name] = permission

    def _check_permission(self, permission: Hashable) -> None:
        if self.permissions and permission not in self.permissions:
            error = PermissionNotFound(
                f"Permission {permission} was not found in the list of all permissions."
            )
            # balrog's message as the only argument; bastion's attributes for bastion callers
            error.permission, error.known = permission, tuple(self.permissions)
            raise error

    def get_identity(self, *args: Any, **kwargs: Any) -> Any:
        """The currently authenticated identity, from the ``get_identity`` callback."""
        return self._get_identity(*args, **kwargs)

    def get_role(self, identity: Any, *args: Any, **kwargs: Any) -> Role:
        """The identity's role; ``RoleNotFound(name)`` when no role has that name."""
        name = self._get_role(identity, *args, **kwargs)
        try:
            return self.roles[name]
        except KeyError:
            raise RoleNotFound(name) from None

    def check(self, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
        """True if the identity's role has ``permission``."""
        self._check_permission(permission)
        identity = self.get_identity(*args, **kwargs)
        role = self.get_role(identity, *args, **kwargs)
        return role.check(identity, permission, *args, **kwargs)

    def filter(self, permission: Hashable, objects: Any, *args: Any, **kwargs: Any) -> Any:
        """``objects`` filtered by the identity's role's permission."""
        self._check_permission(permission)
        identity = self.get_identity(*args, **kwargs)
        role = self.get_role(identity, *args, **kwargs)
        return role.filter(identity, permission, objects, *args, **kwargs)

    def role_policy(self, *, name: str = "balrog") -> _roles.RolePolicy:
        """These roles as a native :class:`bastion.roles.RolePolicy`, to register them in a
        :class:`bastion.Policy` (``.register(policy, subject=User, role=subject.role)``) and get
        SQL filtering through :class:`bastion.Authorizer`."""
        native = _roles.RolePolicy([], self._get_identity, self._get_role, name=name)
        native.roles = dict(self.roles)
        native.permissions = dict(self.permissions)
        return native
