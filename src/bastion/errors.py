"""bastion's exceptions: one tree, rooted at :class:`BastionError`.

Every error the library raises on purpose is a subclass of ``BastionError``; catching it catches
them all. Errors raised while a policy is *built* (registration) derive from ``PolicyError``; errors
caused by the arguments of a call derive from ``InvalidArgument``; a denial raised by
``Authorizer.authorize`` is ``NotAuthorized``::

    BastionError
    ├── PolicyError                      the policy is misconfigured (raised at registration)
    │   ├── PermissionNotFound           unknown permission (a LookupError; raised by calls too)
    │   ├── InvalidName                  a permission name with quotes, ';', spaces, controls...
    │   ├── RoleNotFound                 a role name no role has (also a LookupError)
    │   ├── DuplicateRule                the same rule registered twice without replace=True
    │   ├── DuplicateName                two roles, or two permissions in a role, with one name
    │   ├── UnusedPermission             declared permissions that no role holds
    │   ├── UnmappedClass                a target class that SQLAlchemy does not map
    │   ├── UnknownAttribute             a rule names an attribute the class does not have
    │   └── RuleNotTranslatable          a rule that cannot be compiled both to Python and to SQL
    ├── InvalidArgument                  a wrong argument to a call or a builder (a TypeError)
    │   └── MissingContext               a rule reads ``ctx.name``; the call did not pass ``name=``
    └── NotAuthorized                    ``authorize`` denied: carries subject, permission, target

Four more, each a direct subclass of ``BastionError``, live beside the code that raises them:
``bastion.UnauthorizedLoad`` (enforcement coverage: a protected model loaded without a check),
``bastion.grants.GrantConflict`` (a grant change lost to a concurrent transaction),
``bastion.integrations.flask.ConfigurationError`` (the Flask extension is misconfigured; also a
RuntimeError) and ``bastion.compat.keg_bouncer.model.entities.NotBound`` (KegBouncer's entities
used before they are bound to a base; also an ImportError).

Errors carry their context as attributes (``permission``, ``rule``, ``reason`` ...) so that logs and
callers can inspect them without parsing messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BastionError",
    "DuplicateName",
    "DuplicateRule",
    "InvalidArgument",
    "InvalidName",
    "MissingContext",
    "NotAuthorized",
    "PermissionNotFound",
    "PolicyError",
    "RoleNotFound",
    "RuleNotTranslatable",
    "UnknownAttribute",
    "UnmappedClass",
    "UnusedPermission",
]


class BastionError(Exception):
    """Root of every error bastion raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take their context as constructor arguments; rebuild from the message and
        # the attributes instead, so that errors pickle and copy (multiprocessing, task queues).
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[BastionError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class PolicyError(BastionError):
    """The policy is misconfigured; raised when the policy is built, never as a wrong answer."""


class PermissionNotFound(PolicyError, LookupError):
    """A permission that the policy does not declare."""

    def __init__(self, permission: object, known: tuple[object, ...] = ()) -> None:
        self.permission = permission
        self.known = known
        hint = f"; declared: {', '.join(map(repr, known[:10]))}" if known else ""
        super().__init__(f"unknown permission {permission!r}{hint}")


class InvalidName(PolicyError, ValueError):
    """A name (permission, rule) that bastion refuses: empty, or with unsafe characters."""

    def __init__(self, kind: str, name: object, reason: str) -> None:
        self.kind = kind
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {kind} name {name!r}: {reason}")


class RoleNotFound(PolicyError, LookupError):
    """``get_role`` returned a name that no role of the policy has."""

    def __init__(self, role: object, known: tuple[object, ...] = ()) -> None:
        self.role = role
        self.known = known
        hint = f"; roles: {', '.join(map(repr, known[:10]))}" if known else ""
        super().__init__(f"unknown role {role!r}{hint}")


class DuplicateName(PolicyError, ValueError):
    """Two roles of a policy, or two permissions of a role, share a name."""

    def __init__(self, kind: str, name: object, reason: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} {reason}")


class UnusedPermission(PolicyError):
    """Declared permissions that no role holds (a typo in a role, or a permission to remove)."""

    def __init__(self, permissions: list[object]) -> None:
        self.permissions = permissions
        super().__init__(f"no role holds {', '.join(map(repr, permissions))}")


class DuplicateRule(PolicyError):
    """The same rule (same permission, subject, target and name) registered twice."""

    def __init__(self, key: object, name: str) -> None:
        self.key = key
        self.name = name
        super().__init__(
            f"rule {name!r} is already registered for {key}; pass replace=True to replace it"
        )


class UnmappedClass(PolicyError, TypeError):
    """A class used as a rule target (or traversed by a rule) that SQLAlchemy does not map."""

    def __init__(self, cls: object) -> None:
        self.cls = cls
        super().__init__(f"{cls!r} is not a class mapped by SQLAlchemy")


class UnknownAttribute(PolicyError, AttributeError):
    """A rule names an attribute that the class does not have (or not of the needed kind)."""

    def __init__(self, cls: object, attribute: str, reason: str = "") -> None:
        self.cls = cls
        self.attribute = attribute
        self.reason = reason
        name = getattr(cls, "__name__", repr(cls))
        super().__init__(f"{name}.{attribute}: {reason or 'no such attribute'}")


class RuleNotTranslatable(PolicyError):
    """A rule that cannot be compiled both to an in-process check and to a SQL filter."""

    def __init__(self, rule: object, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"rule {rule} cannot be compiled both ways: {reason}")


class InvalidArgument(BastionError, TypeError):
    """A call received an argument of the wrong type (e.g. an unmapped object as target)."""


class MissingContext(InvalidArgument, KeyError):
    """A rule reads a context value (``ctx.name``) that the call did not pass."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the rule needs the context value {name!r}: pass {name}=... to the call")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class NotAuthorized(BastionError):
    """``authorize`` denied the action. Carries who asked, for what, on which object."""

    def __init__(
        self, subject: Any, permission: object, target: Any = None, *, explanation: Any = None
    ) -> None:
        self.subject = subject
        self.permission = permission
        self.target = target
        #: the decision trace (``bastion.rules.explain.Explanation``), when it could be built
        self.explanation = explanation
        on = f" on {target!r}" if target is not None else ""
        super().__init__(f"{subject!r} may not {permission!r}{on}")
