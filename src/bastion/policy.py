"""``Policy``: the permissions an application knows and the rules that grant them.

A policy is an explicit object: build as many as you like, pass them around, nothing is global.
It declares permissions (any hashable: ``str``, an ``Enum`` member ...) and registers rules keyed by
*(permission, subject type, target type)*::

    policy = Policy(["doc.read", "doc.edit", "reports.view"])
    policy.allow(
        "doc.read",
        subject=User,
        target=Document,
        when=target.is_public | (target.owner_id == subject.id),
        name="public or owner",
    )
    policy.allow("reports.view", subject=User, when=subject.is_staff)  # no target: held or not
    policy.allow(
        subject=User, target=Document, when=target.owner_id == subject.id
    )  # all permissions

Rules for the same key combine with OR. When a check or filter looks rules up, the target class's
MRO is walked nearest first, and for each target class the subject class's MRO: the first pair that
has rules for the permission decides (a rule on ``Invoice(Document)`` hides ``Document``'s for the
same permission; with none on ``Invoice``, ``Document``'s apply). No rule at all denies.

Registration fails closed: an undeclared permission raises ``PermissionNotFound``, the same rule
twice raises ``DuplicateRule`` (unless ``replace=True``), and a rule is compiled to Python *and*
to SQL against its classes before it is accepted (``RuleNotTranslatable``, ``UnknownAttribute``,
``UnmappedClass`` otherwise). A failed registration changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bastion.errors import (
    BastionError,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
    RuleNotTranslatable,
    UnmappedClass,
)
from bastion.rules.dsl import AttrExpr, as_rule
from bastion.rules.nodes import ALLOW, Or, PythonRule, Rule
from bastion.rules.simplify import simplify
from bastion.rules.to_python import Predicate, to_python
from bastion.rules.to_sql import SYMBOLIC, RuleInputs, rule_inputs, to_sql
from bastion.rules.validate import mapper_of, validate

__all__ = ["ALL_PERMISSIONS", "Plan", "Policy", "RegisteredRule", "validate_permission_name"]

#: A permission name is letters, digits and ``_ . : - /``, 1 to 200 characters: it may end up in
#: logs, URLs, SQL parameters and CLI arguments, so quotes, ``;``, spaces and control characters
#: are refused.
PERMISSION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}")


class _AllPermissions:
    def __repr__(self) -> str:
        return "ALL_PERMISSIONS"


#: The permission of a rule registered without permissions: it applies to every permission.
ALL_PERMISSIONS: Any = _AllPermissions()


def validate_permission_name(permission: object) -> Hashable:
    """Return ``permission`` if valid, else raise ``InvalidName`` or ``InvalidArgument``."""
    if isinstance(permission, str):
        if not PERMISSION_NAME.fullmatch(permission):
            raise InvalidName(
                "permission",
                permission,
                "use 1-200 letters, digits and _ . : - / (starting with a letter, digit or _)",
            )
        return permission
    if permission is None or isinstance(permission, (bool, float)):
        raise InvalidArgument(f"{permission!r} cannot be a permission")
    try:
        hash(permission)
    except TypeError:
        raise InvalidArgument(f"a permission must be hashable, got {permission!r}") from None
    return permission


@dataclass(frozen=True)
class RegisteredRule:
    """One registered rule: what it grants, to whom, on what, and its condition."""

    permission: Hashable  #: a declared permission, or ALL_PERMISSIONS
    subject_type: type
    target_type: type | None
    rule: Rule
    name: str
    check_only: bool = False  #: registered without a SQL form

    def __str__(self) -> str:
        on = f" on {self.target_type.__name__}" if self.target_type else ""
        who = self.subject_type.__name__
        return f"{self.name!r}: {who} may {self.permission!r}{on} if {self.rule}"


@dataclass(frozen=True)
class Plan:
    """The compiled answer for one (permission, subject type, target type)."""

    permission: Hashable
    subject_type: type
    target_type: type | None
    rules: tuple[RegisteredRule, ...]
    rule: Rule  #: the OR of the rules, simplified
    predicate: Predicate  #: the Python compilation of ``rule``
    #: the subject attributes and context values the rule reads (the inputs of its SQL shape)
    inputs: RuleInputs = field(default_factory=lambda: RuleInputs((), (), False))
    #: why this plan has no SQL form (a ``check_only`` rule), or None when it has one
    sql_error: str | None = None
    #: built SQL clauses by (entity, union?, input values); SQLAlchemy clauses are immutable
    sql_cache: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)


class Policy:
    """Permissions and the rules that grant them. Several policies may coexist."""

    def __init__(self, permissions: Iterable[Hashable] = (), *, name: str = "policy") -> None:
        self.name = name
        self._permissions: dict[Hashable, None] = {}
        self._rules: dict[tuple[type | None, type], list[RegisteredRule]] = {}
        self._plans: dict[tuple[Hashable, type, type | None], Plan] = {}
        #: plans keyed as ``Authorizer.check`` looks them up (``type(None)`` for no target);
        #: cleared with ``_plans`` whenever the policy changes
        self.plans_by_call_key: dict[tuple[Hashable, type, type], Plan] = {}
        self.declare(*permissions)

    # permissions -------------------------------------------------------------------------
    def declare(self, *permissions: Hashable) -> None:
        """Declare permissions (idempotent). All are validated before any is added."""
        checked = [validate_permission_name(p) for p in permissions]
        for p in checked:
            self._permissions.setdefault(p, None)

    @property
    def permissions(self) -> tuple[Hashable, ...]:
        """The declared permissions, in declaration order."""
        return tuple(self._permissions)

    def require_permission(self, permission: object) -> Hashable:
        """Return ``permission`` if declared, else raise ``PermissionNotFound``."""
        try:
            known = permission in self._permissions
        except TypeError:
            raise InvalidArgument(f"a permission must be hashable, got {permission!r}") from None
        if not known:
            raise PermissionNotFound(permission, self.permissions)
        return permission

    # rules -------------------------------------------------------------------------------
    def allow(
        self,
        *permissions: Hashable,
        subject: type = object,
        target: type | None = None,
        when: object = ALLOW,
        name: str | None = None,
        replace: bool = False,
        check_only: bool = False,
    ) -> list[RegisteredRule]:
        """Register ``when`` as granting ``permissions`` to ``subject`` instances on ``target``.

        No permissions: the rule grants every permission on ``target``. No target: the rule says
        whether the subject holds the permission at all (it may read ``subject`` and ``ctx`` only).
        Returns the registered rules (one per permission). Raises a ``PolicyError`` and changes
        nothing if any permission is unknown or the rule cannot be compiled both ways.

        ``check_only=True`` accepts a rule with no SQL form (a Python callable
        ``fn(subject, target, **context)``): ``check`` works, and ``filter`` on these permissions
        raises ``RuleNotTranslatable`` instead of returning a partial list.
        """
        subject_type, target_type = _check_types(subject, target)
        perms = [self.require_permission(p) for p in permissions] or [ALL_PERMISSIONS]
        if not permissions and target_type is None:
            raise InvalidArgument("a rule without permissions must name a target type")
        if check_only and callable(when) and not isinstance(when, (Rule, AttrExpr)):
            rule: Rule = PythonRule(when, getattr(when, "__qualname__", repr(when)))
        else:
            rule = as_rule(when)
        rule_name = _rule_name(name, rule)
        compile_both_ways(rule, subject_type, target_type, sql=not check_only)
        bucket = self._rules.get((target_type, subject_type), [])
        records = [
            RegisteredRule(p, subject_type, target_type, rule, rule_name, check_only) for p in perms
        ]
        for record in records:
            clash = [r for r in bucket if (r.permission, r.name) == (record.permission, rule_name)]
            if clash and not replace:
                raise DuplicateRule((record.permission, subject_type, target_type), rule_name)
        kept = [r for r in bucket if (r.permission, r.name) not in {(p, rule_name) for p in perms}]
        self._rules[(target_type, subject_type)] = kept + records
        self._plans.clear()
        self.plans_by_call_key.clear()
        return records

    def copy(self) -> Policy:
        """An independent policy with the same permissions and rules."""
        clone = Policy(self.permissions, name=self.name)
        clone._rules = {key: list(bucket) for key, bucket in self._rules.items()}
        return clone

    def adopt(self, other: Policy) -> None:
        """Take the permissions and rules of ``other`` (a copy changed as one unit of work)."""
        self._permissions = dict(other._permissions)
        self._rules = {key: list(bucket) for key, bucket in other._rules.items()}
        self._plans.clear()
        self.plans_by_call_key.clear()

    def rules(self) -> tuple[RegisteredRule, ...]:
        """Every registered rule, in registration order per (target, subject)."""
        return tuple(r for bucket in self._rules.values() for r in bucket)

    def rules_for(
        self, permission: Hashable, subject_type: type, target_type: type | None
    ) -> tuple[RegisteredRule, ...]:
        """The rules deciding ``permission`` (nearest target class, then nearest subject class)."""
        targets: Iterable[type | None] = target_type.__mro__ if target_type is not None else (None,)
        for t in targets:
            for s in subject_type.__mro__:
                bucket = self._rules.get((t, s))
                if bucket:
                    found = tuple(
                        r
                        for r in bucket
                        if r.permission == permission or r.permission is ALL_PERMISSIONS
                    )
                    if found:
                        return found
        return ()

    def plan(self, permission: Hashable, subject_type: type, target_type: type | None) -> Plan:
        """The compiled rule for a key (cached until the policy changes)."""
        key = (permission, subject_type, target_type)
        try:
            return self._plans[key]
        except KeyError:
            pass
        except TypeError:
            raise InvalidArgument(f"a permission must be hashable, got {permission!r}") from None
        self.require_permission(permission)
        if target_type is not None and mapper_of(target_type) is None:
            raise UnmappedClass(target_type)
        records = self.rules_for(permission, subject_type, target_type)
        combined = simplify(Or(tuple(r.rule for r in records)))
        plan = Plan(
            permission,
            subject_type,
            target_type,
            records,
            combined,
            to_python(combined),
            rule_inputs(combined),
            _sql_error(combined, records, subject_type, target_type),
        )
        self._plans[key] = plan
        return plan

    def __repr__(self) -> str:
        counts = f"{len(self._permissions)} permissions, {len(self.rules())} rules"
        return f"<Policy {self.name!r}: {counts}>"


def _check_types(subject: object, target: object) -> tuple[type, type | None]:
    if not isinstance(subject, type):
        raise InvalidArgument(f"subject= takes a class, got {subject!r}")
    if target is None:
        return subject, None
    if not isinstance(target, type):
        raise InvalidArgument(f"target= takes a mapped class, got {target!r}")
    if mapper_of(target) is None:
        raise UnmappedClass(target)
    return subject, target


def _rule_name(name: str | None, rule: Rule) -> str:
    if name is None:
        return str(rule)
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not name.isprintable():
        raise InvalidName("rule", name, "use 1-200 printable characters")
    return name


def _sql_error(
    rule: Rule, records: tuple[RegisteredRule, ...], subject_type: type, target_type: type | None
) -> str | None:
    if not any(r.check_only for r in records):
        return None
    try:
        to_sql(rule, target_type, SYMBOLIC, subject_type=subject_type)
    except BastionError as exc:
        names = ", ".join(repr(r.name) for r in records if r.check_only)
        return f"registered with check_only=True ({names}): {exc}"
    return None


def compile_both_ways(
    rule: Rule, subject_type: type, target_type: type | None, *, sql: bool = True
) -> None:
    """Validate ``rule`` and compile it to Python and to SQL; a ``PolicyError`` if either fails.

    ``sql=False`` (``check_only`` rules) skips the SQL compilation."""
    validate(rule, subject_type, target_type)
    to_python(rule)
    if not sql:
        return
    try:
        to_sql(rule, target_type, SYMBOLIC, subject_type=subject_type)
    except BastionError:
        raise
    except (sa.exc.SQLAlchemyError, AttributeError, TypeError, ValueError) as exc:
        raise RuleNotTranslatable(rule, f"SQL compilation failed: {exc}") from exc
