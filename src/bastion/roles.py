"""Static roles declared in code (balrog lineage), compiled into the rule algebra.

A role is a named set of permissions, declared in code, versioned and tested with it; an identity
has exactly one role in a given context (so two contradicting roles never both apply)::

    read, comment = Permission("article.read"), Permission("article.comment")
    edit_own = Permission("article.edit", when=target.author_id == subject.id)

    roles = RolePolicy(
        [
            Role("anonymous", [read]),
            Role("user", [read, comment]),
            Role("author", [read, comment, edit_own]),
        ],
        get_identity=lambda request: request.user,  # who asks (balrog-style entry point)
        get_role=lambda user, request: user.role,  # their role in this context
    )
    roles.check("article.comment", request)  # balrog-style: identity and role looked up

Inside the engine, "the subject's role grants P" is a rule node, :class:`RoleGrant`, so roles
combine with every other rule and are filtered in SQL::

    policy = Policy()
    roles.register(policy, subject=User, target=Article, role=subject.role)
    authz.filter(user, "article.edit", Article)  # WHERE users' role 'author' AND author_id = :id

:class:`RoleGrant` compiles to Python as a set lookup (the role names that hold P, plus the roles
whose permission carries a rule) and to SQL as ``role IN ('user', 'author')`` (or, when the role
is a subject attribute, folds to TRUE/FALSE while the filter is built). A role whose ``check`` is
overridden, or a permission whose ``check``/``filter`` is overridden, is Python-only: such a role
grant cannot be compiled to SQL, so registering it raises ``RuleNotTranslatable`` unless you pass
``check_only=True`` (then ``filter`` on those permissions raises instead of guessing).

A role name that no role has (e.g. a stale value in a column) grants nothing; the balrog-style
entry points raise ``RoleNotFound`` for it, as balrog does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Query
from sqlalchemy.sql import Select

from bastion.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
    RoleNotFound,
    RuleNotTranslatable,
    UnusedPermission,
)
from bastion.policy import Policy, validate_permission_name
from bastion.rules.dsl import AttrExpr, as_rule
from bastion.rules.explain import Explanation, explain_rule, register_explainer
from bastion.rules.nodes import (
    And,
    Attr,
    Compare,
    Context,
    In,
    Literal,
    Operand,
    Or,
    Rule,
    junction,
)
from bastion.rules.to_python import (
    LAZY_LOADS_ALLOWED,
    SESSION_KEY,
    UNMAPPED_TYPES,
    Predicate,
    operand_reader,
    read_attribute,
    register_python,
    to_python,
)
from bastion.rules.to_sql import SqlEnv, SqlValue, compile_sql, operand_sql, register_sql, to_sql

__all__ = ["Permission", "Role", "RoleGrant", "RolePolicy"]


class Permission:
    """A permission a role holds.

    By default holding it is enough (``check`` is True and ``filter`` returns the objects). Give it
    a declarative rule (``when=target.author_id == subject.id``) to hold it only where the rule is
    TRUE, in Python and in SQL; or subclass and override :meth:`check` / :meth:`filter` for
    Python-only logic (whitelists, context such as ``ip=``).
    """

    #: the rule, read by bastion through this private name (``rule`` is its read-only view): a
    #: subclass that never calls ``__init__`` has none, and one may name a method ``rule``
    #: (balrog's ``Permission`` had neither the attribute nor the argument)
    _rule: Rule | None = None

    def __init__(self, name: Hashable, when: object = None) -> None:
        self.name = validate_permission_name(name)
        self._rule = None if when is None else as_rule(when)

    @property
    def rule(self) -> Rule | None:
        """The declarative rule given as ``when=`` (None: holding the permission is enough)."""
        return self._rule

    def check(self, identity: Any, *args: Any, **kwargs: Any) -> bool:
        """Does this permission apply to ``identity`` (extra arguments as given to the call)?"""
        if self._rule is None:
            return True
        target = args[0] if args else None
        token = LAZY_LOADS_ALLOWED.set(True)
        try:
            return to_python(self._rule)(identity, target, kwargs, None) is True
        finally:
            LAZY_LOADS_ALLOWED.reset(token)

    def filter(self, identity: Any, objects: Any, *args: Any, **kwargs: Any) -> Any:
        """``objects`` narrowed to what ``identity`` may reach: a ``Select``/``Query`` gets the
        rule as SQL, an iterable is filtered in Python; without a rule, ``objects`` unchanged."""
        if self._rule is None:
            return objects
        return apply_rule(self._rule, identity, objects, kwargs)

    @property
    def python_only(self) -> bool:
        """True when ``check`` or ``filter`` is overridden: no SQL form."""
        cls = type(self)
        return cls.check is not Permission.check or cls.filter is not Permission.filter

    def __repr__(self) -> str:
        when = "" if self._rule is None else f", when={self._rule}"
        return f"Permission({self.name!r}{when})"


class Role:
    """A named set of permissions. Subclass and override :meth:`check` for special roles (an admin
    that may do everything); such a role has no SQL form."""

    def __init__(self, name: str, permissions: Iterable[Permission | Hashable] = ()) -> None:
        if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 200:
            raise InvalidName("role", name, "use 1-200 printable characters")
        self.name = name
        self.permissions: dict[Hashable, Permission] = {}
        for item in permissions:
            permission = item if isinstance(item, Permission) else Permission(item)
            if permission.name in self.permissions:
                raise DuplicateName(
                    "permission", permission.name, f"already registered within role {name!r}"
                )
            self.permissions[permission.name] = permission

    def check(self, identity: Any, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
        """True if this role holds ``permission`` and the permission's own check passes."""
        try:
            held = self.permissions[permission]
        except (KeyError, TypeError):
            return False
        return held.check(identity, *args, **kwargs)

    def filter(
        self, identity: Any, permission: Hashable, objects: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """``objects`` narrowed by the role's permission; nothing if the role lacks it."""
        held = self.permissions.get(permission)
        if held is None:
            return empty_like(objects)
        return held.filter(identity, objects, *args, **kwargs)

    @property
    def python_only(self) -> bool:
        """True when ``check`` or ``filter`` is overridden: no SQL form."""
        cls = type(self)
        return cls.check is not Role.check or cls.filter is not Role.filter

    def __repr__(self) -> str:
        return f"Role({self.name!r}, {list(self.permissions)!r})"


class RolePolicy:
    """A set of roles, with balrog's ``get_identity``/``get_role`` entry points.

    Validated when built: duplicate role names (``DuplicateName``); with ``permissions=`` given,
    roles naming undeclared permissions (``PermissionNotFound``) and declared permissions that no
    role holds (``UnusedPermission``). Several role policies may coexist.
    """

    def __init__(
        self,
        roles: Iterable[Role],
        get_identity: Callable[..., Any] | None = None,
        get_role: Callable[..., Any] | None = None,
        *,
        permissions: Iterable[Hashable] | None = None,
        name: str = "roles",
    ) -> None:
        self.name = name
        self._get_identity = get_identity
        self._get_role = get_role
        self.roles: dict[str, Role] = {}
        self.permissions: dict[Hashable, Permission] = {}
        for role in roles:
            if not isinstance(role, Role):
                raise InvalidArgument(f"RolePolicy takes Role objects, got {role!r}")
            if role.name in self.roles:
                raise DuplicateName("role", role.name, "already registered in this policy")
            self.roles[role.name] = role
            for pname, permission in role.permissions.items():
                self.permissions.setdefault(pname, permission)
        if permissions is not None:
            self._validate_declared([validate_permission_name(p) for p in permissions])

    def _validate_declared(self, declared: list[Hashable]) -> None:
        for role in self.roles.values():
            for pname in role.permissions:
                if pname not in declared:
                    raise PermissionNotFound(pname, tuple(declared))
        unused = [p for p in declared if p not in self.permissions]
        if unused:
            raise UnusedPermission(unused)
        self.permissions = {p: self.permissions[p] for p in declared}

    # balrog-style entry points -------------------------------------------------------------
    def get_identity(self, *args: Any, **kwargs: Any) -> Any:
        """Who is asking: ``get_identity(*args, **kwargs)``."""
        if self._get_identity is None:
            raise InvalidArgument(f"{self.name}: no get_identity was configured")
        return self._get_identity(*args, **kwargs)

    def get_role(self, identity: Any, *args: Any, **kwargs: Any) -> Role:
        """The identity's role in this context; ``RoleNotFound`` for an unknown role name."""
        if self._get_role is None:
            raise InvalidArgument(f"{self.name}: no get_role was configured")
        name = self._get_role(identity, *args, **kwargs)
        try:
            return self.roles[name]
        except (KeyError, TypeError):
            raise RoleNotFound(name, tuple(self.roles)) from None

    def require_permission(self, permission: object) -> Hashable:
        """``permission`` if some role holds it, else ``PermissionNotFound``."""
        try:
            known = permission in self.permissions
        except TypeError:
            raise InvalidArgument(f"a permission must be hashable, got {permission!r}") from None
        if not known:
            raise PermissionNotFound(permission, tuple(self.permissions))
        return permission

    def check(self, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
        """Look up the identity and its role, then ``role.check(identity, permission, ...)``.
        Every extra argument reaches ``get_identity``, ``get_role`` and ``Role.check`` unchanged."""
        self.require_permission(permission)
        identity = self.get_identity(*args, **kwargs)
        role = self.get_role(identity, *args, **kwargs)
        return role.check(identity, permission, *args, **kwargs)

    def filter(self, permission: Hashable, objects: Any, *args: Any, **kwargs: Any) -> Any:
        """``objects`` narrowed for the current identity: its role's permission filters them
        (a ``Select``/``Query`` in SQL); a role without the permission gives nothing."""
        self.require_permission(permission)
        identity = self.get_identity(*args, **kwargs)
        role = self.get_role(identity, *args, **kwargs)
        return role.filter(identity, permission, objects, *args, **kwargs)

    # the engine ----------------------------------------------------------------------------
    def grants(self, role: object, permission: Hashable, *, many: bool = False) -> RoleGrant:
        """The rule "the role read from ``role`` grants ``permission``".

        ``role`` is an attribute (``subject.role``, ``it.role`` of a membership row, ``ctx.role``);
        ``many=True`` when it holds a collection of role names (any of them may grant).
        """
        self.require_permission(permission)
        if not isinstance(role, AttrExpr):
            raise InvalidArgument(f"role= takes an attribute such as subject.role, got {role!r}")
        return RoleGrant(self, permission, role.node, many)

    def register(
        self,
        policy: Policy,
        *,
        subject: type,
        role: object,
        target: type | None = None,
        many: bool = False,
        check_only: bool = False,
    ) -> None:
        """Declare every permission of these roles in ``policy`` and allow each where the role
        read from ``role`` grants it. A Python-only role or permission raises
        ``RuleNotTranslatable`` unless ``check_only=True`` (then only those permissions are
        check-only). Nothing is registered if anything fails."""
        rules = {p: self.grants(role, p, many=many) for p in self.permissions}
        sql_free = {p for p, r in rules.items() if r.python_only_roles()}
        if sql_free and not check_only:
            names = ", ".join(sorted(map(repr, sql_free)))
            raise RuleNotTranslatable(
                rules[next(iter(sql_free))],
                f"overridden Role/Permission check or filter methods have no SQL form "
                f"(permissions {names}); pass check_only=True to allow check() only",
            )
        staged = policy.copy()  # all or nothing: build on a copy, then adopt it
        staged.declare(*rules)
        for p, rule in rules.items():
            staged.allow(
                p,
                subject=subject,
                target=target,
                when=rule,
                name=f"roles:{self.name}",
                check_only=p in sql_free,
            )
        policy.adopt(staged)

    def __repr__(self) -> str:
        return f"<RolePolicy {self.name!r}: roles {list(self.roles)}>"


# ---------------------------------------------------------------------------------------------
# the rule node


@dataclass(frozen=True, eq=False)
class RoleGrant(Rule):
    """The role named by ``role`` (a role name, or a collection of them when ``many``) grants
    ``permission`` in ``roles``. Compares by identity of the role policy (roles are code)."""

    roles: RolePolicy
    permission: Hashable
    role: Operand
    many: bool = False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RoleGrant)
            and other.roles is self.roles
            and (other.permission, other.role, other.many)
            == (self.permission, self.role, self.many)
        )

    def __hash__(self) -> int:
        return hash((id(self.roles), self.permission, self.role, self.many))

    def operands(self) -> tuple[Operand, ...]:
        return (self.role,)

    def children(self) -> tuple[Rule, ...]:
        return tuple(self.conditional().values())

    def holders(self) -> frozenset[str]:
        """Roles that hold the permission outright."""
        return frozenset(
            name
            for name, role in self.roles.roles.items()
            if not role.python_only
            and self.permission in role.permissions
            and role.permissions[self.permission]._rule is None
            and not role.permissions[self.permission].python_only
        )

    def conditional(self) -> dict[str, Rule]:
        """Roles that hold the permission where a rule holds: role name -> rule."""
        found: dict[str, Rule] = {}
        for name, role in self.roles.roles.items():
            held = role.permissions.get(self.permission)
            if (
                not role.python_only
                and held is not None
                and not held.python_only
                and held._rule is not None
            ):
                found[name] = held._rule
        return found

    def python_only_roles(self) -> dict[str, Role]:
        """Roles whose answer for the permission needs Python (overridden methods)."""
        return {
            name: role
            for name, role in self.roles.roles.items()
            if role.python_only
            or (
                self.permission in role.permissions
                and role.permissions[self.permission].python_only
            )
        }

    def expand(self, role: Operand) -> Rule:
        """The same rule in core nodes, for a single role value: ``role IN (holders)`` OR, per
        conditional role, ``role == name AND its rule``."""
        items: list[Rule] = [In(role, Literal(tuple(sorted(self.holders()))))]
        for name, rule in self.conditional().items():
            items.append(junction(And, Compare(role, "==", Literal(name)), rule))
        return Or(tuple(items))

    def __str__(self) -> str:
        many = ", many=True" if self.many else ""
        return f"{self.roles.name}.grants({self.role}, {self.permission!r}{many})"


@register_python(RoleGrant)
def _role_grant_python(node: RoleGrant) -> Predicate:
    read = operand_reader(node.role)
    holders = node.holders()
    conditional = {name: to_python(rule) for name, rule in node.conditional().items()}
    custom = node.python_only_roles()
    permission = node.permission
    # A NULL role name gets SQL's answer for ``NULL IN (holders) OR (NULL = 'r' AND rule) ...``:
    # UNKNOWN, or FALSE when no role holds the permission outright and every rule is FALSE.
    # Plain ``None`` would differ from the filter under a ``Not``.
    null_name = to_python(node.expand(Literal(None)))

    def one(name: Any, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        if name is None:
            return null_name(s, t, c, i)
        try:
            if name in holders:
                return True
            pred = conditional.get(name)
            role = custom.get(name) if pred is None else None
        except TypeError:  # an unhashable "role name" is no role
            return False
        if pred is not None:
            return pred(s, t, c, i)
        if role is not None:
            args = () if t is None else (t,)
            # the caller's context, unchanged: not the Authorizer's internal session entry
            extra = {k: v for k, v in c.items() if k != SESSION_KEY}
            return bool(role.check(s, permission, *args, **extra))
        return False

    if not node.many:
        return lambda s, t, c, i: one(read(s, t, c, i), s, t, c, i)
    if not conditional and not custom:
        if isinstance(node.role, Attr) and node.role.scope == "subject":
            return _any_subject_holder(node.role.name, holders, one)
        return _any_holder(read, holders, one)

    def any_of(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        names = read(s, t, c, i)
        if names is None:
            return None
        result: bool | None = False
        for name in names:
            v = one(name, s, t, c, i)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return any_of


def _any_holder(read: Any, holders: frozenset[str], one: Any) -> Predicate:
    """``many=True`` with plain roles only: one set operation (the common, hot case)."""

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        return _names_hold(read(s, t, c, i), holders, one, s, t, c, i)

    return pred


def _any_subject_holder(key: str, holders: frozenset[Any], one: Any) -> Predicate:
    """:func:`_any_holder` for ``subject.<key>``, the attribute read inlined: this predicate is
    the whole of a W1 check, and a reader call per check cost a third of it."""
    unmapped = UNMAPPED_TYPES
    # A name among these is a holder or NULL: most checks deny, and they do so with this one
    # set operation (no separate ``None in names`` scan).
    deciding = holders | {None}

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool | None:
        if type(s) in unmapped:
            names = getattr(s, key, None)
        else:
            try:
                names = s.__dict__[key]
            except (KeyError, AttributeError):
                names = read_attribute(s, key)  # raises NotLoaded rather than lazy loading
        if names is None:
            return None
        try:
            if deciding.isdisjoint(names):
                return False
            return True if not holders.isdisjoint(names) else None
        except TypeError:
            return _names_hold(names, holders, one, s, t, c, i)

    return pred


def _names_hold(
    names: Any, holders: frozenset[str], one: Any, s: Any, t: Any, c: Mapping[str, Any], i: Any
) -> bool | None:
    """Three-valued "some role name in ``names`` holds": UNKNOWN for no collection or a NULL
    name (as SQL's ``NULL IN (...)``), the per-name loop for unhashable names."""
    if names is None:
        return None
    try:
        if not holders.isdisjoint(names):
            return True
        return None if None in names else False
    except TypeError:  # unhashable names: the general loop
        found = [one(n, s, t, c, i) for n in names]
        return True if True in found else (None if None in found else False)


@register_sql(RoleGrant)
def _role_grant_sql(node: RoleGrant, env: SqlEnv) -> SqlValue:
    if node.python_only_roles():
        raise RuleNotTranslatable(
            node, f"roles {sorted(node.python_only_roles())} override check/filter in Python"
        )
    kind, value = operand_sql(node.role, env)
    if kind == "sql" and not node.many:
        return compile_sql(node.expand(node.role), env)
    if kind == "sql":
        if not (env.symbolic and _is_call_input(node.role)):
            # A column holding a collection would otherwise compile to TRUE: fail closed.
            raise RuleNotTranslatable(
                node,
                "many=True reads the role names from the subject or the context "
                "(subject.roles, ctx.roles); a column holding a collection has no SQL form",
            )
        # At registration (symbolic subject) the collection is a parameter; when the filter is
        # built it is a value. Check that the conditional rules compile.
        for rule in node.conditional().values():
            compile_sql(rule, env)
        return True
    if node.many and value is None:
        return None  # no collection at all: UNKNOWN, as in Python (and as ``x IN NULL``)
    names = (value,) if not node.many else tuple(value)
    return compile_sql(Or(tuple(node.expand(Literal(n)) for n in names)), env)


def _is_call_input(operand: Operand) -> bool:
    """A value known when the filter is built: a subject attribute or a context value."""
    return isinstance(operand, Context) or (
        isinstance(operand, Attr) and operand.scope == "subject"
    )


# ---------------------------------------------------------------------------------------------
# applying a rule to a collection (Permission.filter)


def empty_like(objects: Any) -> Any:
    """The empty result of the same kind as ``objects`` (``Select``/``Query``/list)."""
    if isinstance(objects, Select):
        return objects.where(sa.false())
    if isinstance(objects, Query):
        return objects.filter(sa.false())
    return []


def apply_rule(rule: Rule, identity: Any, objects: Any, context: Mapping[str, Any]) -> Any:
    """Narrow ``objects`` by ``rule`` for ``identity``: SQL for a ``Select``/``Query`` (the rule's
    target is the statement's first entity), Python for an iterable of loaded objects."""
    if isinstance(objects, (Select, Query)):
        descriptions = objects.column_descriptions
        entity = descriptions[0].get("entity") if descriptions else None
        if entity is None:
            raise InvalidArgument("cannot tell which entity to filter in this statement")
        clause = to_sql(rule, entity, identity, context)
        return objects.where(clause) if isinstance(objects, Select) else objects.filter(clause)
    predicate = to_python(rule)
    token = LAZY_LOADS_ALLOWED.set(True)
    try:
        return [o for o in objects if predicate(identity, o, context, None) is True]
    finally:
        LAZY_LOADS_ALLOWED.reset(token)


@register_explainer(RoleGrant)
def _explain_role(node: RoleGrant, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    outcome = to_python(node)(s, t, c, i)
    names = operand_reader(node.role)(s, t, c, i)
    shown = names if node.many else [names]
    holders, conditional = node.holders(), node.conditional()
    custom = node.python_only_roles()
    parts = []
    named: list[Any] = []
    for name in shown or []:
        try:
            hash(name)
        except TypeError:
            # Fix: an unhashable "role name" (a list passed as ctx.role) raised TypeError here,
            # where check and filter answer: it is no role
            parts.append(f"{name!r} is no role of {node.roles.name}")
            continue
        named.append(name)
        if name in holders:
            parts.append(f"role {name!r} holds {node.permission!r}")
        elif name in conditional:
            parts.append(f"role {name!r} holds {node.permission!r} where {conditional[name]}")
        elif name in custom:
            # Fix: a role whose check is overridden (Python-only) was said not to hold the
            # permission when its check allowed it
            parts.append(f"role {name!r} decides in Python ({type(custom[name]).__name__}.check)")
        elif name in node.roles.roles:
            parts.append(f"role {name!r} does not hold {node.permission!r}")
        else:
            parts.append(f"{name!r} is no role of {node.roles.name}")
    children = [explain_rule(conditional[n], s, t, c, i) for n in named if n in conditional]
    reason = "; ".join(parts) or f"no role ({node.role} is empty)"
    return Explanation(str(node), outcome, reason, children, "RoleGrant")
