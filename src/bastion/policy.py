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
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bastion.errors import (
    BastionError,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
    PolicyError,
    RuleNotTranslatable,
    UnmappedClass,
)
from bastion.rules.dsl import AttrExpr, as_rule
from bastion.rules.nodes import ALLOW, And, Deferred, Or, PythonRule, Reroot, Rule, SqlRule
from bastion.rules.reads import target_reads
from bastion.rules.simplify import simplify
from bastion.rules.to_python import SESSION_LOOKUP, Predicate, to_python
from bastion.rules.to_sql import (
    ROW,
    SYMBOLIC,
    RuleInputs,
    SqlEnv,
    compile_sql,
    rule_inputs,
    to_sql,
)
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
    #: the target's ``__dict__`` keys the predicate reads, None if it may read it otherwise
    #: (:func:`bastion.rules.reads.target_reads`): pages decide unloaded objects at once
    target_reads: frozenset[str] | None = None
    #: ``inputs.context_names``, hoisted so that ``Authorizer.check`` tests it with one attribute
    #: read (empty for most plans: the common check skips the context test altogether)
    required_context: tuple[str, ...] = field(default=(), compare=False, repr=False)
    #: the predicate's ``SESSION_LOOKUP`` (:mod:`bastion.rules.to_python`), if it has one
    session_lookup: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_context", self.inputs.context_names)
        object.__setattr__(self, "session_lookup", getattr(self.predicate, SESSION_LOOKUP, None))


class Policy:
    """Permissions and the rules that grant them. Several policies may coexist."""

    def __init__(self, permissions: Iterable[Hashable] = (), *, name: str = "policy") -> None:
        self.name = name
        self._permissions: dict[Hashable, None] = {}
        self._reversible: set[Hashable] = set()
        self._rules: dict[tuple[type | None, type], list[RegisteredRule]] = {}
        self._plans: dict[tuple[Hashable, type, type | None], Plan] = {}
        #: plans keyed as ``Authorizer.check`` looks them up (``type(None)`` for no target);
        #: cleared with ``_plans`` whenever the policy changes
        self.plans_by_call_key: dict[tuple[Hashable, type, type], Plan] = {}
        #: the same plans nested as ``[type(target)][type(subject)][permission]`` for
        #: ``Authorizer.check``: three dict lookups cost half of building and hashing a tuple key
        self.plans_by_type: dict[type, dict[type, dict[Hashable, Plan]]] = {}
        self.declare(*permissions)

    # permissions -------------------------------------------------------------------------
    def declare(self, *permissions: Hashable, who_can: bool = False) -> None:
        """Declare permissions (idempotent). All are validated before any is added.

        ``who_can=True`` promises reverse lookups (``Authorizer.who_can``): every rule
        registered for these permissions must then also compile from the subject's side, or
        registration raises ``RuleNotTranslatable`` (never a partial list later)."""
        checked = [validate_permission_name(p) for p in permissions]
        if who_can:
            self._check_reversible(set(checked))
        for p in checked:
            self._permissions.setdefault(p, None)
            if who_can:
                self._reversible.add(p)

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
        perms = list(dict.fromkeys(self.require_permission(p) for p in permissions))
        perms = perms or [ALL_PERMISSIONS]
        if not permissions and target_type is None:
            raise InvalidArgument("a rule without permissions must name a target type")
        if check_only and callable(when) and not isinstance(when, (Rule, AttrExpr)):
            rule: Rule = PythonRule(when, getattr(when, "__qualname__", repr(when)))
        else:
            rule = as_rule(when)
        rule_name = _rule_name(name, rule)
        compile_both_ways(rule, subject_type, target_type, sql=not check_only)
        if any(p in self._reversible or (p is ALL_PERMISSIONS and self._reversible) for p in perms):
            compile_reverse(rule, subject_type, target_type)
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
        self.plans_by_type.clear()
        if self._reversible:
            try:  # a rule reached through a deferral may make a who_can permission irreversible
                self._check_reversible(self._reversible)
            except BastionError:
                self._rules[(target_type, subject_type)] = bucket  # all or nothing
                if not bucket:
                    del self._rules[(target_type, subject_type)]
                self._plans.clear()
                self.plans_by_call_key.clear()
                self.plans_by_type.clear()
                raise
        return records

    def _check_reversible(self, reversible: set[Hashable]) -> None:
        """Compile every rule of the ``reversible`` permissions from the subject's side, with
        its deferrals resolved (so a Python-only rule behind a deferral is found now, whichever
        of the two was registered first); ``RuleNotTranslatable`` if one cannot be."""
        for record in self.rules():
            if record.permission is ALL_PERMISSIONS:
                perms = [p for p in self._permissions if p in reversible]
            else:
                perms = [record.permission] if record.permission in reversible else []
            for perm in perms:
                compile_reverse(record.rule, record.subject_type, record.target_type)
                if record.target_type is not None and _has_deferral(record.rule):
                    resolved = self.resolve_rule(record, perm)
                    compile_reverse(resolved, record.subject_type, record.target_type)

    def copy(self) -> Policy:
        """An independent policy with the same permissions and rules."""
        clone = Policy(self.permissions, name=self.name)
        clone._reversible = set(self._reversible)
        clone._rules = {key: list(bucket) for key, bucket in self._rules.items()}
        return clone

    def adopt(self, other: Policy) -> None:
        """Take the permissions and rules of ``other`` (a copy changed as one unit of work)."""
        self._permissions = dict(other._permissions)
        self._reversible = set(other._reversible)
        self._rules = {key: list(bucket) for key, bucket in other._rules.items()}
        self._plans.clear()
        self.plans_by_call_key.clear()
        self.plans_by_type.clear()

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
        combined = self.resolve(permission, subject_type, target_type)
        plan = Plan(
            permission,
            subject_type,
            target_type,
            records,
            combined,
            to_python(combined),
            rule_inputs(combined),
            _sql_error(combined, records, subject_type, target_type),
            target_reads=None
            if target_type is None
            else target_reads(combined, mapper_of(target_type)),
        )
        self._plans[key] = plan
        return plan

    def resolve(
        self,
        permission: Hashable,
        subject_type: type,
        target_type: type | None,
        _stack: tuple[tuple[Hashable, type | None], ...] = (),
    ) -> Rule:
        """The OR of the rules for a key, simplified, with every deferral replaced by the related
        class's rules (recursively). A deferral cycle raises ``PolicyError``."""
        key = (permission, target_type)
        if key in _stack:
            chain = " -> ".join(f"{getattr(t, '__name__', t)}:{p!r}" for p, t in (*_stack, key))
            raise PolicyError(f"deferral cycle: {chain}")
        records = self.rules_for(permission, subject_type, target_type)
        rule = simplify(Or(tuple(r.rule for r in records)))
        return simplify(
            self._resolve_node(rule, permission, subject_type, target_type, (*_stack, key))
        )

    def resolve_rule(self, record: RegisteredRule, permission: Hashable) -> Rule:
        """One registered rule with its deferrals resolved (for explanations)."""
        key = (permission, record.target_type)
        return simplify(
            self._resolve_node(
                record.rule, permission, record.subject_type, record.target_type, (key,)
            )
        )

    def _resolve_node(
        self,
        node: Rule,
        permission: Hashable,
        subject_type: type,
        target_type: type | None,
        stack: tuple[tuple[Hashable, type | None], ...],
    ) -> Rule:
        if isinstance(node, Deferred):
            related = _related_class(target_type, node.name)
            perm = permission if node.permission is None else node.permission
            inner = self.resolve(perm, subject_type, related, stack)
            return Reroot("target", node.name, inner)
        children = node.children()
        if not children or isinstance(node, (Reroot,)):
            return node
        resolved = tuple(
            self._resolve_node(c, permission, subject_type, target_type, stack) for c in children
        )
        return node if resolved == children else node.with_children(resolved)

    def defer(
        self,
        *permissions: Hashable,
        attributes: tuple[str, ...] | list[str] | str,
        bearer: type = object,
        target: type,
        to: Hashable | dict[Hashable, Hashable] | None = None,
        any_of: bool = False,
        name: str | None = None,
        replace: bool = False,
    ) -> list[RegisteredRule]:
        """Permissions on ``target`` hold where they hold on the object(s) reached through
        ``attributes`` (relationships of ``target``: many-to-one, or any related object of a
        collection). Several attributes: all must hold (as in shield), or any when ``any_of``.
        ``to`` maps the permission checked to the related one (``{"page.edit": "book.edit"}``, or
        one permission for all). No permissions: every permission on ``target`` defers."""
        names = (attributes,) if isinstance(attributes, str) else tuple(attributes)
        if not names:
            raise InvalidArgument("defer() needs at least one attribute")
        perms = [self.require_permission(p) for p in permissions]
        mapping = to if isinstance(to, dict) else None
        for mapped in (mapping or {}).values() if mapping else ([to] if to is not None else []):
            self.require_permission(mapped)
        staged = self.copy()
        records: list[RegisteredRule] = []
        for perm in perms or [None]:
            related_perm = mapping.get(perm, perm) if mapping is not None else to
            parts = tuple(Deferred(n, related_perm) for n in names)
            rule: Rule = parts[0] if len(parts) == 1 else (Or(parts) if any_of else And(parts))
            args = () if perm is None else (perm,)
            records += staged.allow(
                *args, subject=bearer, target=target, when=rule, name=name, replace=replace
            )
        staged.check_deferrals()
        self.adopt(staged)
        return records

    def check_deferrals(self) -> None:
        """Resolve every deferral now, so that a cycle or a missing relationship is reported
        when the policy is built rather than at the first check."""
        for record in self.rules():
            if record.target_type is None or not _has_deferral(record.rule):
                continue
            perms = (
                self.permissions if record.permission is ALL_PERMISSIONS else (record.permission,)
            )
            for perm in perms:
                self.resolve(perm, record.subject_type, record.target_type)

    def rule(
        self,
        *permissions: Hashable,
        bearer: type = object,
        target: type | None = None,
        name: str | None = None,
        replace: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator (shield style): the function receives ``bearer`` and ``target`` builders and
        returns the rule::

            @policy.rule("read", bearer=User, target=Book)
            def readers(bearer, target):
                return target.is_public | (target.owner_id == bearer.id)

        No target: the bearer holds the permissions; no permissions: all permissions on target.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            from bastion.rules.dsl import subject as bearer_root
            from bastion.rules.dsl import target as target_root

            when = fn(bearer=bearer_root, target=target_root)
            self.allow(
                *permissions,
                subject=bearer,
                target=target,
                when=when,
                name=name or getattr(fn, "__qualname__", None),
                replace=replace,
            )
            return fn

        return register

    def sql_rule(
        self,
        *permissions: Hashable,
        bearer: type = object,
        target: type,
        name: str | None = None,
        replace: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator for a rule only SQL can express (the shield form): the function receives
        ``query`` (a ``Select`` of the target's primary key), ``bearer`` (the subject instance),
        ``target`` (the entity, an alias) and ``permission``, and returns the narrowed ``Select``.
        ``check`` answers it with one query; it has no in-process path."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            rule_name: str = name or getattr(fn, "__qualname__", None) or repr(fn)

            def call(query: Any, *, bearer: Any, target: Any, permission: Any) -> Any:
                return fn(query=query, bearer=bearer, target=target, permission=permission)

            staged = self.copy()  # all or nothing: one refused permission registers none
            for perm in permissions or (None,):
                args = () if perm is None else (perm,)
                staged.allow(
                    *args,
                    subject=bearer,
                    target=target,
                    when=SqlRule(call, rule_name, perm),
                    name=rule_name,
                    replace=replace,
                )
            self.adopt(staged)
            return fn

        return register

    def __repr__(self) -> str:
        counts = f"{len(self._permissions)} permissions, {len(self.rules())} rules"
        return f"<Policy {self.name!r}: {counts}>"


def _related_class(target_type: type | None, name: str) -> type:
    mapper = mapper_of(target_type) if target_type is not None else None
    prop = mapper.relationships.get(name) if mapper is not None else None
    if prop is None:
        raise PolicyError(f"cannot defer through {name!r}: not a relationship of {target_type!r}")
    return prop.mapper.class_


def _has_deferral(rule: Rule) -> bool:
    return isinstance(rule, Deferred) or any(_has_deferral(c) for c in rule.children())


def _for_validation(rule: Rule) -> Rule:
    """``rule`` with each deferral replaced by "some related object exists" (to validate the path
    at registration; the related rules are resolved when a plan is built)."""
    if isinstance(rule, Deferred):
        return Reroot("target", rule.name, ALLOW)
    children = rule.children()
    if not children:
        return rule
    return rule.with_children(tuple(_for_validation(c) for c in children))


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
    rule = _for_validation(rule)
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


class _AnyContext(dict[str, Any]):
    """Context for registration-time checks: every ``ctx`` value is unknown (None)."""

    def __missing__(self, key: str) -> None:
        return None


def compile_reverse(rule: Rule, subject_type: type, target_type: type | None) -> None:
    """Compile ``rule`` from the subject's side (as ``who_can`` does), or raise
    ``RuleNotTranslatable`` saying why it cannot be read backwards."""
    if mapper_of(subject_type) is None:
        raise RuleNotTranslatable(
            rule, f"who_can needs a mapped subject class, not {subject_type.__name__}"
        )
    rule = _for_validation(rule)
    env = SqlEnv(target_type, ROW, _AnyContext(), subject_type, subject_entity=subject_type)
    try:
        compile_sql(rule, env)
    except BastionError:
        raise
    except (sa.exc.SQLAlchemyError, AttributeError, TypeError, ValueError) as exc:
        raise RuleNotTranslatable(rule, f"cannot be read from the subject's side: {exc}") from exc
