"""Effective grants: how ``HasGrant`` is answered in Python, and the per-session cache behind it.

A subject's *effective grants* are every permission it holds, through any tier, valid now. They
are read in one query and kept in ``session.info`` in a compact form (:class:`EffectiveGrants`:
a frozenset of interned tokens held globally, and the rare scoped grants), so that every later
check of that subject is a set lookup.

When the load happens (changed for benchmark W5; README, "stored grants"): the *first* check of a
subject in a session does not load everything. It asks one ``SELECT EXISTS`` over the three tiers
for the permission (and scope) it needs, a statement built once per user model with the subject,
token and scope as bound parameters, so it costs what a hand-written query costs. The *second*
check of the same subject loads its effective grants in one query and caches them; from then on no
check of that subject queries. A request that checks once pays one small query instead of reading
hundreds of grants; one that checks many times pays one extra ``EXISTS``.
:func:`effective_grants` loads (and caches) at once, for callers that know they will check a lot.

The cache follows the transaction: a grant or revoke written through
:class:`~bastion.grants.store.GrantStore` with the same session clears it (the next check asks
again), and so do ``commit`` and ``rollback``; a new session starts empty and sees what other
processes committed. Validity windows are evaluated against the database clock: in SQL directly,
in Python at the instant the effective grants were loaded (returned by the same query).

Which tier and which group or bundle gave a grant is not cached (it would be four times the
memory of the sets): explanations and :meth:`GrantStore.effective_permissions` read it with
:func:`grant_paths` when they need it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from bastion.errors import InvalidArgument
from bastion.grants.models import GLOBAL, GrantModels, UserLinks, scope_key
from bastion.grants.rules import (
    HasGrant,
    Tier,
    _is_global,
    _subject_id,
    _tiers,
    _valid,
    object_scope_type,
    tiers,
    utcnow,
)
from bastion.rules.explain import Explanation, register_explainer
from bastion.rules.to_python import (
    IO_FORBIDDEN,
    SESSION_KEY,
    SESSION_LOOKUP,
    NotLoaded,
    Predicate,
    operand_reader,
    register_python,
    to_python,
)

__all__ = [
    "EffectiveGrants",
    "effective_grants",
    "effective_query",
    "forget_grants",
    "grant_paths",
    "load_effective",
]

#: ``session.info`` key: ``{id(models): {identity key: EffectiveGrants}}``, the cache itself
_CACHE_KEY = "bastion.effective_grants"
#: ``session.info`` key prefix: ``{id(subject): EffectiveGrants}`` per grant models (the key
#: ends with ``id(models)``), an index of the cache by subject object for the hot path: ``id()``
#: reads nothing of the object (its state, reached through the object's ``__dict__``, cost three
#: cache misses per check over 10,000 subjects), and hashing an int is cheaper than hashing an
#: identity key tuple. The subjects are kept alive by :data:`_ALIVE_KEY` while indexed, so an
#: id is never reused for another object. Dropped after every flush: a flush may change a
#: subject's key.
_BY_OBJECT_KEY = "bastion.effective_grants.by_object."
#: ``session.info`` key (with the prefix above, so dropped with the indexes): ``{id: subject}``
_ALIVE_KEY = _BY_OBJECT_KEY + "alive"
#: ``session.info`` key: ``{(id(models), identity key)}``, subjects asked once with an EXISTS
_ASKED_KEY = "bastion.effective_grants.asked"
_NO_SCOPES: frozenset[tuple[str, str, str]] = frozenset()

#: The scope a check needs, read from the target, subject or context: ``(type, id)`` or None.
_ScopeReader = Callable[[Any, Any, Mapping[str, Any], Any], "tuple[str, str] | None"]
#: A two-valued check ``(subject, target, context, it)`` (stored grants are never UNKNOWN).
_Check = Callable[[Any, Any, Mapping[str, Any], Any], bool]


@dataclass(frozen=True, slots=True)
class EffectiveGrants:
    """A subject's grants valid at ``now``, in the compact form the session cache keeps.

    ``tokens`` are the permissions held globally (interned strings: every subject's set shares
    the same string objects); ``scoped`` the ``(token, scope_type, scope_id)`` triples held only
    in a scope (one shared empty set for most subjects)."""

    now: datetime | None
    tokens: frozenset[str]
    scoped: frozenset[tuple[str, str, str]] = _NO_SCOPES

    def holds(self, token: str, scope: tuple[str, str] = GLOBAL) -> bool:
        """Held globally, or in ``scope``."""
        return token in self.tokens or (token, *scope) in self.scoped

    @property
    def valid(self) -> frozenset[tuple[str, str, str]]:
        """Every ``(token, scope_type, scope_id)`` held (global grants with an empty scope)."""
        return frozenset((t, "", "") for t in self.tokens) | self.scoped


# ---------------------------------------------------------------------------------------------
# statements (built once per user model, the subject and permission bound as parameters)

_USER = "bastion_user_id"
_TOKEN = "bastion_token"
_SCOPE_TYPE = "bastion_scope_type"
_SCOPE_ID = "bastion_scope_id"


def _statement(links: UserLinks, kind: str, build: Callable[[], Any]) -> Any:
    """The statement ``kind`` for ``links``, built on first use (building one costs more than
    running it; SQLAlchemy then reuses its compiled form, keyed by the same shape)."""
    found = links.statements.get(kind)
    if found is None:
        found = links.statements[kind] = build()
    return found


def _edge_columns(edge: Any, n: str) -> tuple[Any, ...]:
    """An edge's scope and window, labelled ``<n>_type`` ... (each name once in the union)."""
    columns = (edge.c.scope_type, edge.c.scope_id, edge.c.valid_from, edge.c.expires_at)
    return tuple(c.label(f"{n}_{name}") for c, name in zip(columns, _EDGE, strict=True))


_EDGE = ("type", "id", "from", "until")


def _load_statement(models: GrantModels, links: UserLinks) -> sa.Select[Any]:
    """Every path to every permission of one user: token, both edges' scope and window (the
    second edge NULL for one-edge paths), and the database time. No labels, no tier."""
    p = models.Permission.__table__
    uid: Any = sa.bindparam(_USER)
    types = (sa.String, sa.String, sa.DateTime, sa.DateTime)
    none: tuple[Any, ...] = tuple(
        sa.null().cast(t).label(f"b_{n}") for t, n in zip(types, _EDGE, strict=True)
    )
    branches = [
        sa.select(
            p.c.token,
            *_edge_columns(tier.edges[0], "a"),
            *(_edge_columns(tier.edges[1], "b") if len(tier.edges) > 1 else none),
        )
        .select_from(tier.tables)
        .join(p, p.c.id == tier.permission_id)
        .where(tier.edges[0].c.user_id == uid)
        for tier in tiers(models, links)
    ]
    paths = sa.union_all(*branches).subquery("paths")
    return sa.select(paths, utcnow().label("now"))


def _ask_statement(models: GrantModels, links: UserLinks, scoped: bool) -> sa.Select[Any]:
    """``SELECT EXISTS (direct UNION ALL bundle UNION ALL group UNION ALL group bundle)`` for
    one user and token, valid now: global edges, or (``scoped``) edges global or in the scope."""
    uid: Any = sa.bindparam(_USER)
    token: Any = sa.bindparam(_TOKEN, type_=sa.String())
    scope_type: Any = sa.bindparam(_SCOPE_TYPE, type_=sa.String())
    scope_id: Any = sa.bindparam(_SCOPE_ID, type_=sa.String())

    def matches(edge: Any) -> Any:
        if not scoped:
            return _is_global(edge)
        same = sa.and_(edge.c.scope_type == scope_type, edge.c.scope_id == scope_id)
        return sa.or_(_is_global(edge), same)

    branches = [
        stmt.where(*(matches(e) for e in edges), *(_valid(e) for e in edges))
        for stmt, edges in _tiers(models, links, uid, cast(str, token))
    ]
    return sa.select(sa.union_all(*branches).exists())


# ---------------------------------------------------------------------------------------------
# loading and caching


def _combine(a: tuple[str, str], b: tuple[str | None, str | None]) -> tuple[str, str] | None:
    if b[0] is None or b == GLOBAL:
        return a
    if a in (GLOBAL, b):
        return b  # type: ignore[return-value]
    return None  # scoped differently on the two edges: grants nothing


def _in_window(now: datetime | None, start: Any, end: Any) -> bool:
    if now is None:
        return start is None and end is None
    return (start is None or start <= now) and (end is None or end > now)


def _now(rows: Sequence[Any]) -> datetime | None:
    now = rows[0][-1] if rows else None
    if isinstance(now, str):  # pragma: no cover - drivers that do not parse the function type
        now = datetime.fromisoformat(now)
    return now


def _held(now: datetime | None, row: Any) -> tuple[str, str] | None:
    """The scope a path row grants in (GLOBAL for everywhere), or None if it grants nothing:
    ``row`` is (token, a_type, a_id, a_from, a_until, b_type, b_id, b_from, b_until, ...)."""
    scope = _combine((row[1], row[2]), (row[5], row[6]))
    if scope is None or not _in_window(now, row[3], row[4]):
        return None
    if row[5] is not None and not _in_window(now, row[7], row[8]):
        return None
    return scope


def _compact(now: datetime | None, rows: Sequence[Any]) -> EffectiveGrants:
    intern = sys.intern
    tokens: set[str] = set()
    scoped: set[tuple[str, str, str]] = set()
    for row in rows:
        scope = _held(now, row)
        if scope == GLOBAL:
            tokens.add(intern(row[0]))
        elif scope is not None:
            scoped.add((intern(row[0]), *scope))
    return EffectiveGrants(now, frozenset(tokens), frozenset(scoped) if scoped else _NO_SCOPES)


def load_effective(session: Session, models: GrantModels, subject: Any) -> EffectiveGrants | None:
    """Query ``subject``'s effective grants (one statement); None for a subject with no links."""
    links = models.links_for(type(subject))
    if links is None:
        return None
    user_id = _subject_id(subject, links)
    if user_id is None:
        return None
    statement = _statement(links, "load", lambda: _load_statement(models, links))
    rows = session.execute(statement, {_USER: user_id}).all()
    now = _now(rows)
    return _compact(now, rows)


def _cache(session: Session, models: GrantModels) -> dict[Any, EffectiveGrants]:
    caches: dict[int, dict[Any, EffectiveGrants]] = session.info.setdefault(_CACHE_KEY, {})
    return caches.setdefault(id(models), {})


def _by_object(session: Session, models: GrantModels) -> dict[Any, EffectiveGrants]:
    found: dict[Any, EffectiveGrants] = session.info.setdefault(_index_key(models), {})
    return found


def _index_key(models: GrantModels) -> str:
    return f"{_BY_OBJECT_KEY}{id(models)}"


def effective_grants(session: Session, models: GrantModels, subject: Any) -> EffectiveGrants | None:
    """The cached effective grants of ``subject`` in ``session``, loaded now if they are not yet
    (None for a subject that cannot hold stored grants: no link tables, or not persistent)."""
    state = sa_inspect(subject, raiseerr=False)
    if state is None or state.key is None or models.links_for(type(subject)) is None:
        return None
    cache = _cache(session, models)
    found: EffectiveGrants | None = cache.get(state.key)
    if found is None:
        if IO_FORBIDDEN.get():  # an async caller's fast path: it will retry through run_sync
            raise NotLoaded("effective grants")
        found = load_effective(session, models, subject)
        if found is None:
            return None
        cache[state.key] = found
    _by_object(session, models)[id(subject)] = found
    session.info.setdefault(_ALIVE_KEY, {})[id(subject)] = subject
    return found


def forget_grants(session: Session) -> None:
    """Drop the cached effective grants of every subject in ``session``."""
    _forget_indexes(session)
    session.info.pop(_CACHE_KEY, None)
    session.info.pop(_ASKED_KEY, None)


def _forget_indexes(session: Session, *args: Any) -> None:
    for key in [k for k in session.info if isinstance(k, str) and k.startswith(_BY_OBJECT_KEY)]:
        del session.info[key]


def _forget_at_the_end(session: Session, transaction: Any) -> None:
    """Fix: ``close()`` and ``reset()`` end the transaction without a commit or rollback event,
    and the grants cached in it (``session.info`` outlives them) answered the next
    transaction, whatever other sessions had committed meanwhile (a revoked grant allowed)."""
    if transaction.parent is None:
        forget_grants(session)


for _event in ("after_commit", "after_rollback", "after_soft_rollback"):
    sa.event.listen(Session, _event, lambda session, *args: forget_grants(session))
sa.event.listen(Session, "after_transaction_end", _forget_at_the_end)
sa.event.listen(Session, "after_flush", _forget_indexes)


def _ask(
    session: Session, node: HasGrant, subject: Any, links: UserLinks, scope: tuple[str, str] | None
) -> bool:
    """One ``SELECT EXISTS`` for this check (a subject's first check in the session)."""
    params = {_USER: _subject_id(subject, links), _TOKEN: node.permission}
    scoped = scope is not None and scope != GLOBAL
    if scope is not None and scoped:
        params[_SCOPE_TYPE], params[_SCOPE_ID] = scope
    kind = "ask scoped" if scoped else "ask"
    statement = _statement(links, kind, lambda: _ask_statement(node.models, links, scoped))
    return bool(session.execute(statement, params).scalar())


# ---------------------------------------------------------------------------------------------
# the Python compiler


def _scope_reader(node: HasGrant) -> _ScopeReader:
    """The scope a check of ``node`` needs, as ``(scope_type, scope_id)``, or None for none."""
    if node.object_scope:

        def on_target(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> tuple[str, str] | None:
            state = sa_inspect(t) if t is not None else None
            if state is not None and state.key is not None and len(state.key[1]) == 1:
                return (object_scope_type(state.mapper), scope_key(state.key[1][0]))
            return None

        return on_target
    if node.scope is None:
        return lambda s, t, c, i: None
    read, scope_type = operand_reader(node.scope), node.scope_type

    def in_scope(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> tuple[str, str] | None:
        value = read(s, t, c, i)
        return None if value is None else (scope_type, scope_key(value))

    return in_scope


def _uncached(node: HasGrant, scope_of: _ScopeReader) -> _Check:
    """The check of a subject whose grants are not cached: no grants for a subject that cannot
    hold any; else an EXISTS the first time, and the load (then a set lookup) the second."""
    models, key = node.models, id(node.models)

    def check(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        try:
            session = c[SESSION_KEY]
        except KeyError:
            raise InvalidArgument(
                "rules with stored grants are evaluated by an Authorizer (they need its session)"
            ) from None
        links = models.links_for(type(s))
        state = sa_inspect(s, raiseerr=False) if links is not None else None
        if links is None or state is None or state.key is None:
            return False  # no stored grants (a transient subject has none yet)
        # The scope is read first (fix): a target that is not loaded raises NotLoaded before any
        # query, so the check is the Authorizer's one SELECT EXISTS instead of two queries.
        scope = scope_of(s, t, c, i)
        grants = _cache(session, models).get(state.key)
        if grants is None:
            if IO_FORBIDDEN.get():  # an async caller's fast path: it will retry through run_sync
                raise NotLoaded("effective grants")
            asked: set[Any] = session.info.setdefault(_ASKED_KEY, set())
            if (key, state.key) not in asked:
                asked.add((key, state.key))
                return _ask(session, node, s, links, scope)
        grants = effective_grants(session, models, s)  # loads, or indexes the cached grants
        if grants is None:
            return False
        return grants.holds(node.permission, scope or GLOBAL)

    return check


@register_python(HasGrant)
def _has_grant_python(node: HasGrant) -> Predicate:
    """A set lookup in the cached grants. The hot path is one chain of dict lookups keyed by
    ``id(subject)`` (no ``sqlalchemy.inspect``, no tuple key: see ``_BY_OBJECT_KEY``); any miss
    (no session, no cache yet, an unmapped subject) takes the general path."""
    # interned: the cached sets hold interned tokens, so the lookup matches by identity
    token, index = sys.intern(node.permission), _index_key(node.models)
    scope_of = _scope_reader(node)
    uncached = _uncached(node, scope_of)

    def held_globally(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        try:
            grants = c[SESSION_KEY].info[index][id(s)]
        except (KeyError, AttributeError):
            return uncached(s, t, c, i)
        return token in grants.tokens

    if node.scope is None and not node.object_scope:
        setattr(held_globally, SESSION_LOOKUP, (index, token))  # Authorizer.check inlines it
        return held_globally

    def held_in_scope(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        try:
            grants = c[SESSION_KEY].info[index][id(s)]
        except (KeyError, AttributeError):
            return uncached(s, t, c, i)
        if node.object_scope and token in grants.tokens:
            return True  # the object's key is read only when a scoped grant could match
        scope = scope_of(s, t, c, i)  # an operand's scope first: it may raise NotLoaded
        return token in grants.tokens or (
            scope is not None and bool(grants.scoped) and (token, *scope) in grants.scoped
        )

    return held_in_scope


# ---------------------------------------------------------------------------------------------
# paths (explanations and listings)

#: The columns of :func:`effective_query`: the permission, the tier, then both edges.
_PATH_COLUMNS = (
    "token",
    "tier",
    "a_type",
    "a_id",
    "a_from",
    "a_until",
    "b_type",
    "b_id",
    "b_from",
    "b_until",
    "via",
)


def effective_query(models: GrantModels, links: UserLinks, user_id: Any) -> sa.Select[Any]:
    """One statement listing every path by which ``user_id`` holds a permission, with both edges'
    scope and validity (the second edge is NULL for one-edge paths) and the database time."""
    p = models.Permission.__table__
    null_text, null_time = sa.null().cast(sa.String), sa.null().cast(sa.DateTime)
    one_edge = (null_text, null_text, null_time, null_time)
    bundles, groups = models.Bundle.__table__, models.Group.__table__

    def scope(edge: Any) -> tuple[Any, ...]:
        return (edge.c.scope_type, edge.c.scope_id, edge.c.valid_from, edge.c.expires_at)

    def label(kind: str, table: Any, column: Any) -> Any:
        # the group's or bundle's label, for explanations ("group editors → bundle publishing")
        name = sa.select(table.c.label).where(table.c.id == column).scalar_subquery()
        return sa.literal(f"{kind} ") + name

    def via(tier: Tier) -> Any:
        first = tier.edges[0]
        if tier.name == "direct":
            return sa.literal("direct")
        if tier.name == "bundle":
            return label("bundle", bundles, first.c.bundle_id)
        group = label("group", groups, first.c.group_id)
        if tier.name == "group":
            return group
        return group + " → " + label("bundle", bundles, tier.edges[1].c.bundle_id)

    branches = []
    for tier in tiers(models, links):
        second = scope(tier.edges[1]) if len(tier.edges) > 1 else one_edge
        values = (p.c.token, sa.literal(tier.name), *scope(tier.edges[0]), *second, via(tier))
        columns = [value.label(name) for value, name in zip(values, _PATH_COLUMNS, strict=True)]
        branches.append(
            sa.select(*columns)
            .select_from(tier.tables)
            .join(p, p.c.id == tier.permission_id)
            .where(tier.edges[0].c.user_id == user_id)
        )
    paths = sa.union_all(*branches).subquery("paths")
    return sa.select(paths, utcnow().label("now"))


#: One path by which a subject holds a permission: token, scope type, scope id, tier, and the
#: group/bundle it went through ("group editors → bundle publishing").
Path = tuple[str, str, str, str, str]


def grant_paths(session: Session, models: GrantModels, subject: Any) -> list[Path]:
    """Every path by which ``subject`` holds a permission now (one query, not cached: for
    explanations and listings, which are rare next to checks)."""
    links = models.links_for(type(subject))
    user_id = _subject_id(subject, links) if links is not None else None
    if links is None or user_id is None:
        return []
    rows = session.execute(effective_query(models, links, user_id)).all()
    now = _now(rows)
    found = []
    for row in rows:
        # the same layout as the load's rows, the tier left out
        scope = _held(now, (row.token, *row[2:10]))
        if scope is not None:
            found.append((row.token, *scope, row.tier, row.via))
    return found


# ---------------------------------------------------------------------------------------------
# explanations


def _wanted_scope(node: HasGrant, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Any:
    if node.object_scope:
        state = sa_inspect(t, raiseerr=False) if t is not None else None
        if state is None or state.key is None or len(state.key[1]) != 1:
            return None
        return (object_scope_type(state.mapper), scope_key(state.key[1][0]))  # fix: as check
    if node.scope is None:
        return None
    value = operand_reader(node.scope)(s, t, c, i)
    return None if value is None else (node.scope_type, scope_key(value))


@register_explainer(HasGrant)
def _explain_grant(node: HasGrant, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    session = c.get(SESSION_KEY)
    # loaded first, so that the check below is a lookup in them rather than a first-check EXISTS
    grants = effective_grants(session, node.models, s) if session is not None else None
    outcome = to_python(node)(s, t, c, i)
    wanted = _wanted_scope(node, s, t, c, i)
    where = "" if wanted is None else f" in {wanted[0]} {wanted[1]}"
    if outcome and session is not None:
        paths = [
            (via, st)
            for token, st, sid, _, via in grant_paths(session, node.models, s)
            if token == node.permission and ((st, sid) == GLOBAL or (st, sid) == wanted)
        ]
        via, scope_type = paths[0] if paths else ("?", "")
        scope = " (global grant)" if scope_type == "" else where
        reason = f"{via} → permission {node.permission}{scope}"
    else:
        held = 0 if grants is None else len(grants.tokens) + len(grants.scoped)
        reason = f"no grant of {node.permission} globally{' or' + where if where else ''} " + (
            f"among the subject's {held} effective grants"
        )
    return Explanation(str(node), outcome, reason, kind="HasGrant")
