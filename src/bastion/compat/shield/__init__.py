"""shield 0.3.2's public API on SQLAlchemy 2.

Code written for shield runs by changing ``import shield`` to ``from bastion.compat import
shield``. Names, signatures and behaviour are shield's:

* ``@rule(*permissions, bearer, target=None, cache=True)`` registers a function called with the
  keyword arguments ``query`` (an ORM ``Query`` over the target), ``bearer`` (the instance),
  ``target`` (the class, or an alias under deferral) and ``permission``; it returns the query,
  narrowed. No target: "the bearer holds the permissions"; no permissions: "the bearer holds all
  permissions on the target". Permissions are any hashable.
* ``deferred_rule(*permissions, attributes, bearer, target, cache=True)``: a permission on
  ``target`` holds where it holds on the object(s) reached through each of ``attributes``
  (relationships; several attributes must all hold). Chains of any length, many-to-one,
  one-to-many and many-to-many ("some related object") relationships, and adjacency lists (every
  step is an alias) work.
* ``filter(*permissions, bearer, target=Class, query=None, session=None)`` returns an ORM
  ``Query`` of the allowed targets; ``has(*permissions, bearer, target=instance, query=None,
  session=None)`` returns a bool. The session comes from ``query``, else ``session``, else the
  bearer's session. Several permissions must all hold; a permission without a rule denies
  (an empty result, not an error).
* ``registry`` (``register = registry.register``) keeps shield's lookup: rules keyed
  ``(bearer, target, permission)``; a target class inherits the rules of its nearest base class
  (MRO); without a rule for the permission, the all-permission rule ``(bearer, target)`` applies;
  resolved lookups are cached in the registry (``len(registry)`` counts them) unless the rule was
  registered with ``cache=False``; ``retrieve(bearer, target=None, permission=None)`` raises
  ``KeyError`` when nothing matches; ``registry.target`` and ``registry.bearer`` hold the
  all-permission and bearer-only rules; ``clear()`` empties all three. Bearer classes are matched
  exactly, as in shield.

How a query is built
--------------------
Each rule function receives a fresh ``session.query(Target)`` (top level: the target class;
under deferral: an alias), and its result is applied to the caller's query as a semijoin on the
primary key, so joins a rule makes never multiply the caller's rows::

    SELECT team.* FROM team
    WHERE team.id IN (SELECT team.id FROM team JOIN membership ON team.id = membership.team_id
                      WHERE membership.user_id = :user_id)

A deferral is an ``EXISTS`` through the relationship to an alias of the related class, holding the
related rule's own semijoin over a second alias (an adjacency list never mixes up its levels)::

    SELECT box.* FROM box
    WHERE EXISTS (SELECT 1 FROM team AS team_1
                  WHERE team_1.id = box.team_id AND team_1.id IN (
                      SELECT team_2.id FROM team AS team_2 JOIN membership ON ... WHERE ...))

``has`` is one ``SELECT EXISTS (...)`` per call, restricted to the instance's primary key.

Differences from shield 0.3.2
-----------------------------
* Bearer-only rules work: ``filter(P, bearer=user)`` is a query over the bearer's class ("every
  user who holds P"; the rule receives ``target=None`` as in shield) and ``has(P, bearer=user)``
  asks whether the bearer's own row is in it. shield raised (``has``) or selected ``NULL``
  (``filter``). The bearer's primary key is read from the instance, so it needs one.
* ``has`` runs one ``SELECT EXISTS`` for the target's primary key instead of loading the whole
  filtered list; a pending target is flushed first (as shield's query autoflushed it), and a
  transient target without a primary key raises ``InvalidArgument`` (shield answered False).
* Rules receive a fresh query over their target and are combined with the caller's ``query`` as
  ``pk IN (...)`` semijoins, instead of decorating one shared query: rows are never duplicated by a
  rule's joins, two rules joining the same table do not clash, and ``count()`` is right. A rule
  must return a ``Query`` over the target it received.
* Each permission is checked with its own rule call (shield collapsed permissions that resolved to
  the same rule object into one call with one of the permissions).
* A deferral whose related class has no rule denies (shield raised ``KeyError``), and a deferral
  cycle raises ``bastion.PolicyError`` (shield recursed until ``RecursionError``).
* Registering a rule forgets the cached lookups, so a rule registered after a lookup is never
  hidden by a stale inherited entry (shield kept them).
* Errors: no session raises ``InvalidArgument`` (shield: ``AttributeError``); ``query=None`` is
  the same as no query.
* Private registries: ``Registry()`` has ``rule``, ``deferred_rule``, ``has``, ``filter`` and
  ``register`` methods; the module-level functions use the global ``registry``.

Moving to bastion's engine
--------------------------
``registry.export(policy)`` registers the same rules in a :class:`bastion.Policy`: a rule becomes
:meth:`~bastion.Policy.sql_rule` (its function then receives a 2.0 ``Select`` of the target's
primary key, which has ``join``/``filter``/``where`` too) and a deferred rule
:meth:`~bastion.Policy.defer`. An :class:`bastion.Authorizer` then answers ``check`` (one
``EXISTS`` query) and ``filter``, and the rules combine with native rules, grants and roles. The
native lookup differs in two corners: rules apply to subclasses of the bearer too, and on one
target class the all-permission rules and the rules for the permission both apply (OR), where
shield uses a base class's specific rule before the class's all-permission rule. Bearer-only rules
have no native SQL form (``export`` raises ``RuleNotTranslatable``), and an all-permission rule
receives ``permission=None`` there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import (
    Query,
    RelationshipProperty,
    Session,
    aliased,
    object_session,
    scoped_session,
)

from bastion.errors import InvalidArgument, PolicyError, RuleNotTranslatable
from bastion.policy import Policy
from bastion.rules.to_sql import exists_through

__all__ = [
    "CachedDict",
    "DeferredRule",
    "InheritableDict",
    "Registry",
    "Rule",
    "RuleBase",
    "deferred_rule",
    "filter",
    "has",
    "register",
    "registry",
    "rule",
    "type_for",
]
__version__ = "0.3.2"
__version_info__ = (0, 3, 2)

_Stack = tuple[tuple[int, Hashable], ...]


def _default_registry() -> Registry:
    return registry


class RuleBase:
    """A registry entry: what is granted, to which bearer class, on which target class."""

    def __init__(
        self,
        permission: Hashable = None,
        bearer: Any = None,
        target: Any = None,
        cache: bool = True,
    ) -> None:
        self.permission = permission
        self.bearer = bearer
        self.target = target
        self.cache = cache
        #: the registry the rule was registered in (deferred rules look related rules up there)
        self.registry: Registry | None = None

    def _criterion(
        self,
        entity: Any,
        bearer: Any,
        permission: Hashable,
        db: Session,
        *,
        top: bool,
        stack: _Stack,
    ) -> Any:
        """The SQL condition on ``entity`` (a class or alias) under which the rule holds."""
        raise NotImplementedError


class Rule(RuleBase):
    """A rule function in the registry; calling the entry calls the function."""

    def __init__(self, *args: Any, function: Callable[..., Any], **kwargs: Any) -> None:
        self.function = function
        super().__init__(*args, **kwargs)

    def __call__(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target", self.target)
        return self.function(**kwargs)

    def _criterion(
        self,
        entity: Any,
        bearer: Any,
        permission: Hashable,
        db: Session,
        *,
        top: bool,
        stack: _Stack,
    ) -> Any:
        # At the top level the function gets the registered class (shield's call) and a query
        # over the class itself, so rules naming the class directly work; under deferral, a
        # query over a fresh alias, passed as ``target`` (adjacency lists stay apart).
        if top:
            inner, extra = entity, {}
        else:
            inner = aliased(sa_inspect(entity).mapper.class_)
            extra = {"target": inner}
        narrowed = self(query=db.query(inner), bearer=bearer, permission=permission, **extra)
        return _pk_in(entity, narrowed, inner)


class DeferredRule(RuleBase):
    """Permissions on ``target`` defer to the object(s) reached through ``attributes``."""

    def __init__(self, *args: Any, attributes: Iterable[str] | str, **kwargs: Any) -> None:
        self.attributes = (attributes,) if isinstance(attributes, str) else tuple(attributes)
        super().__init__(*args, **kwargs)

    @property
    def attr_map(self) -> dict[str, tuple[type, Any]]:
        """``{attribute: (related class, relationship attribute)}`` (as in shield)."""
        return {
            name: (_related_class(self.target, name), getattr(self.target, name))
            for name in self.attributes
        }

    def lookup(self, permission: Hashable) -> dict[RuleBase, tuple[type, Any]]:
        """The related rules for ``permission`` (``KeyError`` if one is missing), as in shield."""
        perm = permission if self.permission is None else self.permission
        retrieve = self._registry().retrieve
        return {
            retrieve(bearer=self.bearer, target=class_, permission=perm): (class_, col)
            for class_, col in self.attr_map.values()
        }

    def __call__(self, query: Any, permission: Hashable, **kwargs: Any) -> Any:
        """``query`` (over ``target=``, default the registered class) narrowed to the rows whose
        related objects allow ``permission``."""
        entity = kwargs.get("target", self.target)
        return query.filter(
            self._criterion(
                entity, kwargs["bearer"], permission, query.session, top=False, stack=()
            )
        )

    def _registry(self) -> Registry:
        return self.registry if self.registry is not None else _default_registry()

    def _criterion(
        self,
        entity: Any,
        bearer: Any,
        permission: Hashable,
        db: Session,
        *,
        top: bool,
        stack: _Stack,
    ) -> Any:
        key = (id(self), permission)
        if key in stack:
            raise PolicyError(
                f"deferral cycle: {_name(self.target)}.{'/'.join(self.attributes)} "
                f"leads back to itself for {permission!r}"
            )
        perm = permission if self.permission is None else self.permission
        clauses = []
        for name in self.attributes:
            related = _related_class(entity, name)
            attr = getattr(entity, name)
            try:
                rule = self._registry().retrieve(
                    bearer=self.bearer, target=related, permission=perm
                )
            except KeyError:
                return sa.false()  # no rule for the related class: denied
            # EXISTS through the relationship to an alias of the related class (a self-reference
            # never confuses the levels); the related rule's condition is on that alias.
            via: Any = aliased(related)
            criterion = rule._criterion(via, bearer, perm, db, top=False, stack=(*stack, key))
            clauses.append(exists_through(attr, via, criterion))
        return sa.and_(*clauses)


class rule:  # noqa: N801 - shield's name
    """Decorator registering a rule function for each permission (or all, if none)."""

    def __init__(
        self,
        *permissions: Hashable,
        bearer: Any,
        target: Any = None,
        cache: bool = True,
        registry: Registry | None = None,
    ) -> None:
        self.permissions = permissions
        self.bearer = bearer
        self.target = target
        self.cache = cache
        self.registry = registry

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        reg = self.registry if self.registry is not None else _default_registry()
        for perm in self.permissions or (None,):
            reg.register(
                Rule(
                    permission=perm,
                    bearer=self.bearer,
                    target=self.target,
                    cache=self.cache,
                    function=function,
                )
            )
        return function


_RuleDecorator = rule


def deferred_rule(
    *permissions: Hashable,
    attributes: Iterable[str] | str,
    bearer: Any,
    target: Any,
    cache: bool = True,
    registry: Registry | None = None,
) -> None:
    """Register deferred rules: ``permissions`` (or all) on ``target`` follow ``attributes``."""
    reg = registry if registry is not None else _default_registry()
    for perm in permissions or (None,):
        reg.register(
            DeferredRule(
                permission=perm, bearer=bearer, target=target, cache=cache, attributes=attributes
            )
        )


# -------------------------------------------------------------------------------------------
# the registry


class InheritableDict(dict[Any, Any]):
    """shield's dict whose missing keys inherit along the classes at one position of the key
    (``InheritableDict(position)``): the nearest base class in the MRO wins, the other positions
    equal; ``KeyError`` when none matches."""

    def __init__(self, position: int) -> None:
        super().__init__()
        self._position = position

    def __missing__(self, key: Any) -> Any:
        return self._inherited(key)

    def _inherited(self, key: tuple[Any, ...]) -> Any:
        derived = key[self._position]
        if not isinstance(derived, type):
            raise KeyError(key)
        mro = derived.__mro__
        found: dict[int, Any] = {}  # MRO index -> registered key
        for candidate in list(self):
            base = candidate[self._position]
            if len(candidate) != len(key) or not isinstance(base, type) or base not in mro:
                continue
            if all(
                c == k
                for i, (c, k) in enumerate(zip(candidate, key, strict=True))
                if i != self._position
            ):
                found[mro.index(base)] = candidate
        if not found:
            raise KeyError(key)
        return self[found[min(found)]]  # the most derived base class


class CachedDict(InheritableDict):
    """shield's :class:`InheritableDict` that keeps what it resolved (unless the rule found was
    registered with ``cache=False``)."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self._cached: set[Any] = set()

    def _maybe_cache(self, key: Any, value: Any) -> None:
        if value.cache:
            self[key] = value
            self._cached.add(key)

    def __missing__(self, key: Any) -> Any:
        value = self._inherited(key)
        self._maybe_cache(key, value)
        return value

    def forget_cached(self) -> None:
        for key in self._cached:
            self.pop(key, None)
        self._cached.clear()

    def clear(self) -> None:
        super().clear()
        self._cached.clear()


class Registry(CachedDict):
    """shield's registry: ``(bearer, target, permission)`` rules, plus ``target``
    (``(bearer, target)``, all permissions) and ``bearer`` (``(bearer, permission)``) dicts."""

    def __init__(self) -> None:
        super().__init__(1)
        #: all-permission rules, key ``(bearer, target)``; inherits along the target like self
        self.target = CachedDict(1)
        #: bearer-only rules, key ``(bearer, permission)``; exact lookups only
        self.bearer: dict[Any, Any] = {}

    def clear(self) -> None:
        super().clear()
        self.target.clear()
        self.bearer.clear()

    def __missing__(self, key: Any) -> Any:
        try:
            return super().__missing__(key)
        except KeyError:
            # no rule for the permission: "bearer holds all permissions on target" rules
            result = self.target[(key[0], key[1])]
            self._maybe_cache(key, result)
            return result

    def _lookup(
        self, bearer: Any, target: Any = None, permission: Hashable = None
    ) -> tuple[dict[Any, Any], tuple[Any, ...]]:
        if target is None:
            return self.bearer, (bearer, permission)
        if permission is None:
            return self.target, (bearer, target)
        return self, (bearer, target, permission)

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        """The rule for ``(bearer, target=None, permission=None)``; ``KeyError`` if none."""
        lookup, key = self._lookup(*args, **kwargs)
        return lookup[key]

    def register(self, rule: RuleBase) -> None:
        """Put a ``Rule`` or ``DeferredRule`` in the registry (replacing one with its key)."""
        if rule.bearer is None:
            raise TypeError("bearer must be provided.")
        if rule.target is None and rule.permission is None:
            raise TypeError("Cannot register a rule without either a permission or a target.")
        if isinstance(rule, DeferredRule):
            if rule.target is None:
                raise TypeError("a deferred rule needs a target.")
            for name in rule.attributes:
                _check_relationship(rule.target, name)
        self.forget_cached()
        self.target.forget_cached()
        reg, key = self._lookup(rule.bearer, rule.target, rule.permission)
        reg[key] = rule
        rule.registry = self

    # the shield API bound to this registry ---------------------------------------------------
    def rule(self, *permissions: Hashable, **kwargs: Any) -> _RuleDecorator:
        """``shield.rule`` registering into this registry."""
        return _RuleDecorator(*permissions, registry=self, **kwargs)

    def deferred_rule(self, *permissions: Hashable, **kwargs: Any) -> None:
        """``shield.deferred_rule`` registering into this registry."""
        deferred_rule(*permissions, registry=self, **kwargs)

    def filter(
        self,
        *permissions: Hashable,
        bearer: Any,
        target: Any = None,
        query: Any = None,
        session: Session | None = None,
    ) -> Any:
        """The ``Query`` of ``target`` rows (or, with no target, bearer-class rows) on which
        ``bearer`` holds every permission."""
        entity = type_for(bearer) if target is None else target
        if not isinstance(entity, type):
            raise InvalidArgument(f"filter() takes the target class, got {target!r}")
        db = _session(query, session, bearer)
        base = db.query(entity) if query is None else query
        criteria = self._criteria(permissions, bearer, target, entity, db)
        return base.filter(sa.false()) if criteria is None else base.filter(*criteria)

    def has(
        self,
        *permissions: Hashable,
        bearer: Any,
        target: Any = None,
        query: Any = None,
        session: Session | None = None,
    ) -> bool:
        """Whether ``bearer`` holds every permission (on ``target``, an instance): one
        ``SELECT EXISTS`` for the instance's primary key."""
        obj = bearer if target is None else target
        if isinstance(obj, type):
            raise InvalidArgument(f"has() takes a target instance, got the class {obj!r}")
        entity = type(obj)
        db = _session(query, session, bearer)
        lookup_target = None if target is None else entity
        criteria = self._criteria(permissions, bearer, lookup_target, entity, db)
        if criteria is None:
            return False  # no rule: denied without asking the database
        match = _pk_equals(entity, _primary_key(obj, db))
        base = db.query(entity) if query is None else query
        return bool(db.query(base.filter(match, *criteria).exists()).scalar())

    def _criteria(
        self, permissions: tuple[Hashable, ...], bearer: Any, target: Any, entity: type, db: Session
    ) -> list[Any] | None:
        """One SQL condition on ``entity`` per permission; None if one has no rule."""
        # Fix: a bearer given as a class (shield's type_for) was looked up as its metaclass, so
        # no rule matched and everything was silently denied
        bearer_cls = type_for(bearer)
        try:
            rules = [
                (self.retrieve(bearer=bearer_cls, target=target, permission=p), p)
                for p in permissions or (None,)
            ]
        except KeyError:
            return None  # no rule defined: no permission
        return [r._criterion(entity, bearer, p, db, top=True, stack=()) for r, p in rules]

    # the bridge to bastion's engine ------------------------------------------------------------
    def export(self, policy: Policy | None = None) -> Policy:
        """Register this registry's rules in a bastion :class:`~bastion.Policy` (a new one if
        none is given), declaring their permissions, and return it. Cached lookups are not
        copied. All or nothing: on an error the policy is unchanged."""
        policy = Policy(name="shield") if policy is None else policy
        staged = policy.copy()
        for entry in _registered(self):
            if entry.target is None:
                raise RuleNotTranslatable(
                    entry, "a bearer-only shield rule has no native SQL form (no target)"
                )
            perms = () if entry.permission is None else (entry.permission,)
            staged.declare(*perms)
            if isinstance(entry, DeferredRule):
                staged.defer(
                    *perms, attributes=entry.attributes, bearer=entry.bearer, target=entry.target
                )
            elif isinstance(entry, Rule):
                name = _rule_name(entry)
                staged.sql_rule(*perms, bearer=entry.bearer, target=entry.target, name=name)(
                    _adapter(entry)
                )
        policy.adopt(staged)
        return policy


def _registered(reg: Registry) -> list[RuleBase]:
    """The rules registered in ``reg`` (not the cached lookups), deferred ones last."""
    entries = [
        value
        for table in (reg, reg.target, reg.bearer)
        for key, value in table.items()
        if key not in getattr(table, "_cached", ())
    ]
    return sorted(entries, key=lambda e: isinstance(e, DeferredRule))


def _adapter(entry: Rule) -> Callable[..., Any]:
    def call(*, query: Any, bearer: Any, target: Any, permission: Any) -> Any:
        return entry.function(query=query, bearer=bearer, target=target, permission=permission)

    call.__qualname__ = _rule_name(entry)
    return call


def _rule_name(entry: Rule) -> str:
    return f"shield:{getattr(entry.function, '__qualname__', repr(entry.function))}"


# -------------------------------------------------------------------------------------------
# helpers


def type_for(obj: Any) -> type:
    """``obj`` if it is a class, else its class (shield's ``shield.utils.type_for``): a bearer may
    be given as an instance or as its class."""
    return obj if isinstance(obj, type) else type(obj)


def _name(cls: Any) -> str:
    return getattr(cls, "__name__", repr(cls))


def _related_class(target: Any, name: str) -> type:
    prop = getattr(getattr(target, name, None), "property", None)
    mapper = getattr(prop, "mapper", None)
    if mapper is None:
        raise PolicyError(f"cannot defer through {name!r}: not a relationship of {_name(target)}")
    return mapper.class_  # type: ignore[no-any-return]


def _check_relationship(target: Any, name: str) -> None:
    """Refuse, at registration, a deferral through an attribute that exists and is not a
    relationship, without configuring the mappers.

    Fix: registration resolved the related class, which configures every mapper: a relationship
    naming a class not defined yet (``relationship("Team")`` above ``class Team``, as shield
    allowed) failed, and SQLAlchemy then refused every later use of the mappers. An attribute
    that does not exist yet (a backref made when the mappers are configured) is checked when
    the rule is first used (or at once, when the class's mapper is configured already)."""
    mapper = sa_inspect(target, raiseerr=False)
    if mapper is None or not hasattr(mapper, "_props"):
        raise PolicyError(f"cannot defer through {name!r}: {_name(target)} is not mapped")
    prop = mapper._props.get(name)  # the declared properties, without configuring them
    missing = prop is None and mapper.configured  # (configured: its backrefs exist already)
    if missing or (prop is not None and not isinstance(prop, RelationshipProperty)):
        raise PolicyError(f"cannot defer through {name!r}: not a relationship of {_name(target)}")


def _session(query: Any, session: Session | None, bearer: Any) -> Session:
    """The session of ``query``, else ``session``, else the bearer's (shield's order)."""
    if query is not None:
        if not isinstance(query, Query):
            raise InvalidArgument(f"query= takes an ORM Query, got {query!r}")
        return query.session
    if session is not None:
        return session
    found = object_session(bearer)
    if found is None:
        raise InvalidArgument(
            f"no session: pass query= or session=, or use a bearer in a session ({bearer!r})"
        )
    return found


def _pk_columns(entity: Any) -> list[Any]:
    mapper = sa_inspect(entity).mapper
    return [getattr(entity, mapper.get_property_by_column(c).key) for c in mapper.primary_key]


def _pk_in(entity: Any, narrowed: Any, inner: Any) -> Any:
    """``entity.pk IN (the primary keys of inner in the narrowed query)``: a semijoin, never a
    join, so a rule's joins cannot multiply rows.

    ``correlate(None)``: the subquery stands alone even when the enclosing query has the same
    tables (SQLAlchemy would otherwise correlate them away: a silent cross join)."""
    if not isinstance(narrowed, Query):
        raise InvalidArgument(f"a shield rule must return a Query, got {narrowed!r}")
    outer = _pk_columns(entity)
    keys = narrowed.with_entities(*_pk_columns(inner)).statement.correlate(None)
    left = outer[0] if len(outer) == 1 else sa.tuple_(*outer)
    return left.in_(keys)


def _pk_equals(entity: type, values: tuple[Any, ...]) -> Any:
    return sa.and_(*(c == v for c, v in zip(_pk_columns(entity), values, strict=True)))


def _primary_key(obj: Any, db: Session) -> tuple[Any, ...]:
    """The primary key of ``obj``: its identity, after flushing it if pending; a transient
    object's primary-key attributes if all are set."""
    state = sa_inspect(obj, raiseerr=False)
    if state is None:
        raise InvalidArgument(f"{obj!r} is not an instance of a mapped class")
    # Fix: with session=<scoped_session> (Flask-SQLAlchemy's db.session) the proxy was never
    # the object's session, so a pending target was not flushed and has() raised
    real = db() if isinstance(db, scoped_session) else db
    if state.pending and state.session is real:
        real.flush()
    if state.identity is not None:
        return tuple(state.identity)
    values = tuple(state.mapper.primary_key_from_instance(obj))
    if any(v is None for v in values):
        raise InvalidArgument(
            f"{obj!r} has no primary key: shield rules run in the database, add and flush it"
        )
    return values


#: The global registry the module-level functions use.
registry = Registry()


def register(rule: RuleBase) -> None:
    """``registry.register`` of the global registry (looked up at each call)."""
    registry.register(rule)


def filter(
    *permissions: Hashable,
    bearer: Any,
    target: Any = None,
    query: Any = None,
    session: Session | None = None,
) -> Any:
    """``Query`` of the ``target`` rows on which ``bearer`` holds every permission."""
    return registry.filter(*permissions, bearer=bearer, target=target, query=query, session=session)


def has(
    *permissions: Hashable,
    bearer: Any,
    target: Any = None,
    query: Any = None,
    session: Session | None = None,
) -> bool:
    """Whether ``bearer`` holds every permission (on the instance ``target``)."""
    return registry.has(*permissions, bearer=bearer, target=target, query=query, session=session)


#: shield's own name for :func:`filter` (``shield.utils.filter_``)
filter_ = filter
