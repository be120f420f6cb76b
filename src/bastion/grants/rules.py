"""``HasGrant``: "the subject holds permission P (in scope S)", as a rule node.

SQL: ``EXISTS`` over the three tiers, each branch an index seek from the subject's key::

    EXISTS (SELECT 1 FROM user_permissions up
            WHERE up.user_id = :u AND up.permission_id = (SELECT id FROM permissions
                                                          WHERE token = :p)
              AND <scope matches> AND <valid now>)
    OR EXISTS (... user_bundles ub JOIN bundle_permissions bp ...)
    OR EXISTS (... user_groups ug JOIN group_permissions gp ...)
    OR EXISTS (... user_groups ug JOIN group_bundles gb JOIN bundle_permissions bp ...)

Where the scope is a target column and the node is not under a ``NOT``, the subject's paths are
listed once, with their combined scope (a CTE, ``MATERIALIZED`` on PostgreSQL 12+), and the
scoped part becomes a semijoin the database answers from the subject's few grants instead of
testing every row::

    WITH paths AS MATERIALIZED (SELECT <combined scope_type>, <combined scope_id>
                                FROM (<one SELECT per tier, both edges' scope and window>) AS edges
                                WHERE <the edges' scopes combine> AND <both windows hold now>)
    ... EXISTS (SELECT 1 FROM paths WHERE scope_type = '' AND scope_id = '')
        OR target.org_id IN (SELECT <scope_id as exactly an integer, else NULL> FROM paths
                             WHERE scope_type = 'org')

Python: a set lookup in the subject's *effective grants*, cached per session; the cache, its
loading and the Python compiler live in :mod:`bastion.grants.effective`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from bastion.errors import InvalidArgument, RuleNotTranslatable
from bastion.grants.models import GrantModels, UserLinks, scope_key
from bastion.policy import validate_permission_name
from bastion.rules.dsl import AttrExpr
from bastion.rules.nodes import Literal, Operand, Rule
from bastion.rules.to_python import (
    SESSION_KEY,
)
from bastion.rules.to_sql import SqlEnv, SqlValue, operand_sql, register_sql

__all__ = ["SESSION_KEY", "HasGrant", "holds_rule", "object_scope_type", "utcnow"]

#: Constants written into the statements rather than bound: a subject's first check is one
#: statement of four branches, and binding the ``1`` and ``''`` of every branch (16 of its 24
#: parameters) cost more Python per execution than the query.
_ONE: ColumnElement[int] = sa.literal_column("1", sa.Integer())
_EMPTY: ColumnElement[str] = sa.literal_column("''", sa.String())


class utcnow(FunctionElement[datetime]):  # noqa: N801 - a SQL function name
    """The database's current time in UTC, as a naive timestamp (how grants store times)."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "postgresql")
def _utcnow_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "(now() AT TIME ZONE 'utc')"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff': compare like with like.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


# ---------------------------------------------------------------------------------------------
# the node


@dataclass(frozen=True, eq=False)
class HasGrant(Rule):
    """The subject holds ``permission`` (a stored permission token), globally or in a scope.

    ``scope_type``/``scope``: ``None`` for "globally"; ``("org", target.org_id)`` style for a
    scope whose id is read from an operand; ``object_scope`` for "on this very object" (scope type
    = the target's mapped class name, id = its primary key). A global grant holds in every scope.
    Two-valued: a NULL scope id matches only global grants.
    """

    models: GrantModels
    permission: str
    scope_type: str = ""
    scope: Operand | None = None
    object_scope: bool = False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HasGrant)
            and other.models is self.models
            and (
                other.permission,
                other.scope_type,
                other.scope,
                other.object_scope,
            )
            == (self.permission, self.scope_type, self.scope, self.object_scope)
        )

    def __hash__(self) -> int:
        return hash((id(self.models), self.permission, self.scope_type, self.scope))

    def operands(self) -> tuple[Operand, ...]:
        return () if self.scope is None else (self.scope,)

    def reads_subject_identity(self) -> bool:
        return True  # the grants are looked up by the subject's key

    def __str__(self) -> str:
        where = ""
        if self.object_scope:
            where = " on target"
        elif self.scope is not None:
            where = f" in {self.scope_type} {self.scope}"
        return f"holds({self.permission!r}{where})"


# ---------------------------------------------------------------------------------------------
# SQL helpers (the Python path, in bastion.grants.effective, builds its statements from them too)


def _valid(edge: Any) -> ColumnElement[bool]:
    return _window(edge.c.valid_from, edge.c.expires_at)


def _window(start: Any, end: Any) -> ColumnElement[bool]:
    """The validity window ``[start, end)`` holds now (a NULL bound is no bound)."""
    now = utcnow()
    return sa.and_(sa.or_(start.is_(None), start <= now), sa.or_(end.is_(None), end > now))


def _subject_id(subject: Any, links: UserLinks) -> Any:
    state = sa_inspect(subject, raiseerr=False)
    if state is None or state.key is None:
        return None  # a transient subject has no stored grants
    mapper = state.mapper
    # Fix: read the key from the identity key when the column is part of it. Reading the
    # attribute refreshed an expired subject (after every commit): one extra query per check.
    for position, column in enumerate(mapper.primary_key):
        if column is links.pk:
            return state.key[1][position]
    return state.attrs[mapper.get_property_by_column(links.pk).key].value


# ---------------------------------------------------------------------------------------------
# compilers


def object_scope_type(mapper: Any) -> str:
    """The scope type of "one object of this mapper": the name of the base class of its
    inheritance hierarchy (fix: was the instance's own class, so a grant on an ``Invoice(Document)``
    held for ``check`` but not in ``filter(Document)``). Concrete inheritance keeps its own name
    (separate tables, separate primary keys)."""
    cls = mapper.class_ if mapper.concrete else mapper.base_mapper.class_
    return str(cls.__name__)


def _user(edge: Any, user_id: Any) -> ColumnElement[bool]:
    return sa.true() if user_id is None else edge.c.user_id == user_id


@dataclass(frozen=True)
class Tier:
    """One of the four paths from a user to a permission: its name, the joined link tables,
    the column holding the permission's id, and its edges (the user's link first; the group's
    link second on paths through a group). Every statement over the tiers is built from these."""

    name: str  #: "direct", "bundle", "group" or "group bundle"
    tables: Any  #: the link tables, joined
    permission_id: Any  #: the column holding the permission id
    edges: tuple[Any, ...]  #: the scoped edges: the user's link first


def tiers(models: GrantModels, links: UserLinks) -> list[Tier]:
    """The four paths for ``links``' user model (the one place their joins are written)."""
    up, ub, ug = links.permissions, links.bundles, links.groups
    bp, gp, gb = models.bundle_permissions, models.group_permissions, models.group_bundles
    return [
        Tier("direct", up, up.c.permission_id, (up,)),
        Tier("bundle", ub.join(bp, bp.c.bundle_id == ub.c.bundle_id), bp.c.permission_id, (ub,)),
        Tier("group", ug.join(gp, gp.c.group_id == ug.c.group_id), gp.c.permission_id, (ug, gp)),
        Tier(
            "group bundle",
            ug.join(gb, gb.c.group_id == ug.c.group_id).join(bp, bp.c.bundle_id == gb.c.bundle_id),
            bp.c.permission_id,
            (ug, gb),
        ),
    ]


def _tiers(
    models: GrantModels, links: UserLinks, user_id: Any, token: str
) -> list[tuple[sa.Select[Any], list[Any]]]:
    """Per tier: a SELECT FROM its tables (subject and permission fixed) and its scoped edges.
    ``user_id=None``: every user (who_can); the first edge's ``user_id`` is the holder."""
    p = models.Permission.__table__
    pid = sa.select(p.c.id).where(p.c.token == token).scalar_subquery()
    return [
        (
            sa.select(_ONE)
            .select_from(tier.tables)
            .where(_user(tier.edges[0], user_id), tier.permission_id == pid),
            list(tier.edges),
        )
        for tier in tiers(models, links)
    ]


def _holders_sql(node: HasGrant, env: SqlEnv) -> SqlValue:
    """Row mode (who_can): the subject row's key is among the users holding the permission."""
    mapper = sa_inspect(env.subject_entity).mapper
    links = node.models.links_for(mapper.class_)
    if links is None:
        return False
    pk = getattr(env.subject_entity, mapper.get_property_by_column(links.pk).key)
    scope_type, scope_value = _scope(node, env)
    # Fix: one EXISTS per tier, correlated to the subject row. The holders were a
    # ``pk IN (... UNION ALL ...)``, and a scope read from the subject (``("org",
    # subject.home_org)``) brought the subject's table into each branch of the union, which
    # SQLAlchemy cannot correlate: a cross join, so a user who held the permission in *another*
    # user's home org was returned.
    holders = []
    for stmt, edges in _tiers(node.models, links, None, node.permission):
        if scope_value is None:
            matches = [_is_global(e) for e in edges]
        else:
            kind, value = scope_value
            if kind == "value" and value is None:
                matches = [_is_global(e) for e in edges]
            else:
                matches = [_scope_matches(e, scope_type, kind, value) for e in edges]
        valid = (_valid(e) for e in edges)
        held = stmt.where(edges[0].c.user_id == pk, *matches, *valid)
        # every other table is the enclosing statement's (the subject's two levels up, beyond
        # the EXISTS over the target, which SQLAlchemy does not correlate on its own)
        holders.append(held.correlate_except(*stmt.get_final_froms()).exists())
    return sa.or_(*holders)


def _scope_matches(edge: Any, scope_type: str, kind: str, value: Any) -> ColumnElement[bool]:
    """The edge is global, or scoped to ``scope_type`` and this id (a value or a column)."""
    if kind == "value":
        same = sa.and_(edge.c.scope_type == scope_type, edge.c.scope_id == scope_key(value))
    else:
        # Fix: compared as in _scoped_by_column (a plain CAST matched '01' with 1 on SQLite and
        # failed on 'abc' on PostgreSQL; who_can disagreed with check).
        column_type = _scope_column_type(value)
        text = sa.case((edge.c.scope_type == scope_type, edge.c.scope_id))
        typed = text if column_type is None else column_type(text)
        same = sa.and_(edge.c.scope_type == scope_type, typed == value)
    return sa.or_(_is_global(edge), same)


def _is_global(edge: Any) -> ColumnElement[bool]:
    return sa.and_(edge.c.scope_type == _EMPTY, edge.c.scope_id == _EMPTY)


@register_sql(HasGrant)
def _has_grant_sql(node: HasGrant, env: SqlEnv) -> SqlValue:
    if env.symbolic:
        return _symbolic(node, env)
    if env.row:
        return _holders_sql(node, env)
    links = node.models.links_for(type(env.subject)) if env.subject is not None else None
    user_id = _subject_id(env.subject, links) if links is not None else None
    if links is None or user_id is None:
        return False  # no stored grants for this subject
    scope_type, scope_value = _scope(node, env)
    tiers = _tiers(node.models, links, user_id, node.permission)
    global_only = [
        stmt.where(*(_is_global(e) for e in edges), *(_valid(e) for e in edges)).exists()
        for stmt, edges in tiers
    ]
    if scope_value is None:
        return sa.or_(*global_only)
    kind, value = scope_value
    if kind == "value" and value is None:
        # Fix: a NULL scope id (a subject attribute, a ctx value) matches only global grants, as
        # in the Python check; scope_key(None) raised here.
        return sa.or_(*global_only)
    if kind == "value":
        key = scope_key(value)
        scoped = [
            stmt.where(
                *(
                    sa.or_(
                        _is_global(e), sa.and_(e.c.scope_type == scope_type, e.c.scope_id == key)
                    )
                    for e in edges
                ),
                *(_valid(e) for e in edges),
            ).exists()
            for stmt, edges in tiers
        ]
        return sa.or_(*scoped)
    return _scoped_by_column(tiers, scope_type, value, env, global_only)


def _scoped_by_column(
    tiers: list[tuple[sa.Select[Any], list[Any]]],
    scope_type: str,
    column: Any,
    env: SqlEnv,
    global_only: list[Any],
) -> SqlValue:
    """The scope id is a column of the target.

    Positive polarity: ``column IN (SELECT <id typed like column> FROM (<the subject's scope ids
    of this type, one branch per tier and scoped edge> UNION ALL ...))``, next to the global
    grants' ``EXISTS``. The subquery reads nothing of the target: it runs once, and the database
    seeks ``column`` through its index (in a tree's seed, the folders' primary key). The
    conversion of ``scope_id`` to the column's type is applied once, to the few ids of this
    subject and type, after the branches have kept only that type (no CASE on the scope type
    needed there); it is the exact one (``'05'`` never matches 5, see :class:`_IdAsBigint`).
    Under a ``NOT``: a correlated ``EXISTS`` per tier and edge (UNKNOWN and FALSE differ there).
    """
    if env.positive:
        paths = _path_scopes(tiers)
        column_type = _scope_column_type(column)
        ids = sa.select(
            paths.c.scope_id if column_type is None else column_type(paths.c.scope_id)
        ).where(paths.c.scope_type == scope_type)
        held = sa.select(_ONE).where(paths.c.scope_type == _EMPTY, paths.c.scope_id == _EMPTY)
        return sa.or_(held.exists(), column.in_(ids))
    column_type = _scope_column_type(column)

    def typed(edge: Any) -> Any:
        # CASE first, so that other scope types' ids are never converted.
        text = sa.case((edge.c.scope_type == scope_type, edge.c.scope_id))
        return text if column_type is None else column_type(text)

    parts: list[Any] = list(global_only)
    for stmt, edges in tiers:
        for chosen in edges:
            parts.append(
                stmt.where(
                    *_scoped_path(chosen, edges, scope_type), typed(chosen) == column
                ).exists()
            )
    return sa.or_(*parts)


def _scoped_path(chosen: Any, edges: list[Any], scope_type: str) -> list[Any]:
    """A path whose edge ``chosen`` is scoped to ``scope_type`` and whose other edges are global
    or scoped the same way, every edge valid now."""
    return [
        chosen.c.scope_type == scope_type,
        *(
            sa.or_(
                _is_global(o),
                sa.and_(o.c.scope_type == chosen.c.scope_type, o.c.scope_id == chosen.c.scope_id),
            )
            for o in edges
            if o is not chosen
        ),
        *(_valid(e) for e in edges),
    ]


def _path_scopes(tiers: list[tuple[sa.Select[Any], list[Any]]]) -> Any:
    """A CTE of the scope (``scope_type``, ``scope_id``) of each of the subject's paths to the
    permission that is valid now, the scopes of a two-edge path combined as in the Python check
    (``_combine``: the scoped edge's scope when the other is global or the same; no row when
    they differ)::

        WITH paths AS MATERIALIZED (
          SELECT CASE WHEN <a global, b present> THEN b_type ELSE a_type END AS scope_type, ...
          FROM (SELECT up.scope_type AS a_type, up.scope_id AS a_id, up.valid_from AS a_from,
                       up.expires_at AS a_until, NULL AS b_type, ... FROM user_permissions up
                WHERE up.user_id = :u AND up.permission_id = (SELECT id ... WHERE token = :p)
                UNION ALL <bundle, group, group-bundle tiers: their two edges>) AS edges
          WHERE <combinable> AND <a's window holds now> AND <b's window holds now>)

    Both the global test and the scoped ids read it: four branches, and the windows, scope
    combinations and global tests written once, where the per-tier and per-edge form had ten
    subqueries. Its size is what every execution pays for (SQLAlchemy's cache key walks it,
    PostgreSQL plans it: 4 ms for W4 in the per-edge form), and a condition on a CTE's column is
    estimated selective, so the descendants walk is planned from a few seeds (an index seek per
    level, not a scan of the table)."""
    no_text, no_time = sa.null().cast(sa.String), sa.null().cast(sa.DateTime)
    names = [f"{side}_{name}" for side in "ab" for name in ("type", "id", "from", "until")]
    branches: list[sa.Select[Any]] = []
    for stmt, edges in tiers:
        columns: list[Any] = []
        for edge in edges:
            columns += [edge.c.scope_type, edge.c.scope_id, edge.c.valid_from, edge.c.expires_at]
        columns += [no_text, no_text, no_time, no_time][: len(names) - len(columns)]
        if not branches:  # the first SELECT of a UNION names the columns
            columns = [value.label(name) for value, name in zip(columns, names, strict=True)]
        branches.append(stmt.with_only_columns(*columns))
    p = sa.union_all(*branches).subquery("bastion_grant_paths")
    a_global = sa.and_(p.c.a_type == _EMPTY, p.c.a_id == _EMPTY)
    b_global = sa.and_(p.c.b_type == _EMPTY, p.c.b_id == _EMPTY)
    one_edge = p.c.b_type.is_(None)
    same = sa.and_(p.c.a_type == p.c.b_type, p.c.a_id == p.c.b_id)
    use_b = sa.and_(a_global, p.c.b_type.is_not(None))
    scope_type = sa.case((use_b, p.c.b_type), else_=p.c.a_type).label("scope_type")
    scope_id = sa.case((use_b, p.c.b_id), else_=p.c.a_id).label("scope_id")
    paths = sa.select(scope_type, scope_id).where(
        sa.or_(one_edge, a_global, b_global, same),
        _window(p.c.a_from, p.c.a_until),
        _window(p.c.b_from, p.c.b_until),  # NULL bounds (one edge): always TRUE
    )
    # MATERIALIZED (PostgreSQL 12+): a CTE read once is inlined, and the seeds' estimate then
    # comes from the tier tables (one row at least per branch: 10x that in the recursive walk
    # chose a hash join scanning every folder per level, 10 ms instead of 0.5 ms in W4).
    return paths.cte().prefix_with("MATERIALIZED", dialect="postgresql")


class _IdAsBigint(FunctionElement[int]):
    """``scope_id`` as a BIGINT when it is exactly ``scope_key`` of an integer, else NULL.

    Fix: a plain ``CAST(scope_id AS INTEGER)`` made SQL disagree with the Python check (which
    compares ``str(value)`` with ``scope_id``): SQLite casts ``'05'``, ``' 5'``, ``'+5'`` to 5 and
    ``'abc'`` to 0, PostgreSQL raises on ``'abc'`` and on ids beyond the column's range."""

    type = sa.BigInteger()
    inherit_cache = True


class _IdAsUuid(FunctionElement[Any]):
    """``scope_id`` as a UUID when it is 32 lowercase hex digits (``scope_key`` of a UUID)."""

    type = sa.Uuid()
    inherit_cache = True


def _argument(element: Any, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(next(iter(element.clauses)), **kw))


@compiles(_IdAsBigint)
def _bigint_default(element: Any, compiler: Any, **kw: Any) -> str:
    # SQLite (and the fallback): a cast never fails; keep the value only if it reads back the same.
    x = _argument(element, compiler, **kw)
    return f"CASE WHEN CAST(CAST({x} AS INTEGER) AS TEXT) = {x} THEN CAST({x} AS INTEGER) END"


@compiles(_IdAsBigint, "postgresql")
def _bigint_pg(element: Any, compiler: Any, **kw: Any) -> str:
    # Nested CASEs: PostgreSQL evaluates a CASE's branches in order, never an AND's operands.
    x = _argument(element, compiler, **kw)
    return (
        f"CASE WHEN {x} ~ '^(0|-?[1-9][0-9]{{0,18}})$' THEN CASE WHEN CAST({x} AS NUMERIC) "
        f"BETWEEN -9223372036854775808 AND 9223372036854775807 THEN CAST({x} AS BIGINT) END END"
    )


@compiles(_IdAsUuid)
def _uuid_default(element: Any, compiler: Any, **kw: Any) -> str:
    return _argument(element, compiler, **kw)  # SQLite stores UUIDs as 32 hex digits: compare text


@compiles(_IdAsUuid, "postgresql")
def _uuid_pg(element: Any, compiler: Any, **kw: Any) -> str:
    x = _argument(element, compiler, **kw)
    return f"CASE WHEN {x} ~ '^[0-9a-f]{{32}}$' THEN CAST({x} AS UUID) END"


def _scope_column_type(column: Any) -> Any:
    """How ``scope_id`` is compared with a scope column: unchanged for text (a cast to
    ``VARCHAR(n)`` would truncate), converted for integers and UUIDs. Other types cannot be
    compared the way the Python check compares them (``scope_key``): refused."""
    column_type = getattr(column, "type", None)
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum):
        if column_type.collation is not None:
            # Fix: SQL compared with the column's collation (NOCASE matched "RED" with a grant
            # in "red"), the Python check exactly: they disagreed. Refused at registration.
            raise RuleNotTranslatable(
                f"scope {column}",
                f"a scope column with a collation ({column_type.collation!r}) compares ids "
                "unlike the exact match of stored scope ids; use a column without one",
            )
        return None
    if isinstance(column_type, sa.Integer):
        return _IdAsBigint
    if isinstance(column_type, sa.Uuid) and column_type.as_uuid:
        return _IdAsUuid
    raise RuleNotTranslatable(
        f"scope {column}",
        f"a scope column is an integer, string or UUID (as_uuid=True) column, not {column_type}",
    )


def _scope(node: HasGrant, env: SqlEnv) -> tuple[str, tuple[str, Any] | None]:
    if node.object_scope:
        entity = env.entity("target")
        mapper = sa_inspect(entity).mapper
        if len(mapper.primary_key) != 1:
            raise RuleNotTranslatable(node, "object scopes need a single-column primary key")
        key = mapper.get_property_by_column(mapper.primary_key[0]).key
        return object_scope_type(mapper), ("sql", getattr(entity, key))
    if node.scope is None:
        return "", None
    return node.scope_type, operand_sql(node.scope, env)


def _symbolic(node: HasGrant, env: SqlEnv) -> SqlValue:
    """At registration: check the scope operand compiles (the shape needs a real subject)."""
    if env.subject_type is None or node.models.links_for(env.subject_type) is None:
        registered = ", ".join(c.__name__ for c in node.models.users) or "none"
        raise RuleNotTranslatable(
            node,
            f"the subject type {getattr(env.subject_type, '__name__', env.subject_type)} holds "
            f"no stored grants (registered user models: {registered})",
        )
    _, scope_value = _scope(node, env)
    if scope_value is not None and scope_value[0] == "sql" and not _is_parameter(scope_value[1]):
        _scope_column_type(scope_value[1])  # fix: refuse at registration what SQL cannot compare
    return True


def _is_parameter(value: Any) -> bool:
    return isinstance(value, sa.sql.elements.BindParameter)


def holds_rule(
    models: GrantModels,
    permission: Hashable,
    *,
    scope: tuple[str, Any] | None = None,
    on_target: bool = False,
) -> HasGrant:
    """The rule "the subject holds stored permission ``permission``": globally (no ``scope``),
    in a scope (``scope=("org", target.org_id)``, a subject attribute, ``ctx`` value or literal),
    or on the target object itself (``on_target=True``). A global grant holds in every scope."""
    token = validate_permission_name(permission)
    if not isinstance(token, str):
        raise InvalidArgument(f"stored permissions are strings, got {permission!r}")
    if on_target:
        return HasGrant(models, token, object_scope=True)
    if scope is None:
        return HasGrant(models, token)
    scope_type, value = scope
    if not isinstance(scope_type, str) or not scope_type or len(scope_type) > 64:
        raise InvalidArgument(f"a scope type is a non-empty string, got {scope_type!r}")
    operand = value.node if isinstance(value, AttrExpr) else Literal(value)
    return HasGrant(models, token, scope_type, operand)
