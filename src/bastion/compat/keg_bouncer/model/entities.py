"""KegBouncer's entities, tables and queries, built on a declarative base you choose.

KegBouncer declared ``Permission``, ``PermissionBundle`` and ``UserGroup`` on Keg's ``db.Model`` at
import time. Here they are built by :func:`bind` on your declarative base (``DeclarativeBase``,
``declarative_base()``, Flask-SQLAlchemy's ``db.Model``), and the module's names (``Permission``,
``UserGroup``, ``user_group_permission_map`` ...) then refer to them, so KegBouncer's imports work::

    from bastion.compat.keg_bouncer.model import entities

    entities.bind(Base)  # once, before the imports below; bind() alone binds Keg's db.Model
    from bastion.compat.keg_bouncer.model.entities import Permission, UserGroup

When Keg is installed and nothing is bound, the first use of a name binds ``keg.db.db.Model``, as
KegBouncer did. ``bind`` is idempotent per base; binding another base makes the names refer to its
entities from then on (names already imported keep theirs). :func:`entities_for` returns the
entities of one base without touching the module's names. A user model mixing in
:class:`~bastion.compat.keg_bouncer.model.mixins.UserMixin` uses the entities of its own base
(built on first use), whatever is bound.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, object_session, registry, relationship

from bastion.compat.keg_bouncer.model.utils import (
    TableConstructor,
    as_column,
    link_columns,
    make_link,
)
from bastion.errors import BastionError, InvalidArgument

__all__ = [
    "ENTITY_NAMES",
    "Entities",
    "NotBound",
    "bind",
    "entities_for",
    "joined_permission_query",
    "make_user_to_user_group_link",
    "user_group_link_table_name",
    "user_user_group_link_table_name",
]

#: KegBouncer 1.0's name of the one user ↔ user group link table.
user_user_group_link_table_name = "keg_bouncer_user_user_group_map"

#: The module attributes that resolve to the bound entities.
ENTITY_NAMES = (
    "Permission",
    "PermissionBundle",
    "UserGroup",
    "user_group_permission_map",
    "user_group_bundle_map",
    "bundle_permission_map",
)


def user_group_link_table_name(parent_table_name: str) -> str:
    """KegBouncer 2.x's link table name for the user table ``parent_table_name``."""
    return f"keg_bouncer_{parent_table_name}_user_group_map"


class NotBound(BastionError, ImportError):
    """A name of this module was used before :func:`bind` (and Keg is not installed)."""


@dataclass(eq=False)
class Entities:
    """KegBouncer's three entities and three link tables on one declarative base."""

    base: Any
    Permission: Any
    PermissionBundle: Any
    UserGroup: Any
    user_group_permission_map: sa.Table
    user_group_bundle_map: sa.Table
    bundle_permission_map: sa.Table
    #: user class -> its user ↔ user group link table (filled by the user mixins)
    user_links: dict[type, sa.Table] = field(default_factory=dict)

    @property
    def metadata(self) -> sa.MetaData:
        return self.base.metadata  # type: ignore[no-any-return]

    def group_permission_ids(self, group_ids: Any) -> sa.CompoundSelect[Any]:
        """Ids of the permissions of the groups ``group_ids`` (a value, or a SELECT of ids),
        directly or through their bundles."""
        gp, gb, bp = (
            self.user_group_permission_map,
            self.user_group_bundle_map,
            self.bundle_permission_map,
        )
        direct = sa.select(gp.c.permission_id).where(_in(gp.c.user_group_id, group_ids))
        bundled = (
            sa.select(bp.c.permission_id)
            .join_from(gb, bp, bp.c.permission_bundle_id == gb.c.permission_bundle_id)
            .where(_in(gb.c.user_group_id, group_ids))
        )
        return sa.union(direct, bundled)

    def permissions_of(self, session: Session, group_ids: Any) -> frozenset[Any]:
        """The ``Permission`` entities of the groups ``group_ids``."""
        p = self.Permission
        ids = self.group_permission_ids(group_ids)
        return frozenset(session.scalars(sa.select(p).where(p.id.in_(ids))))


def _in(column: Any, values: Any) -> Any:
    return column.in_(values) if isinstance(values, sa.Select) else column == values


# ---------------------------------------------------------------------------------------------
# the entities' behaviour (mixed into the classes built on your base)


def flushed_session(obj: Any) -> Session | None:
    """The session of ``obj``, flushed first when it autoflushes (as a query would be)."""
    session = object_session(obj)
    if session is not None and session.autoflush:
        session.flush()
    return session


class PermissionMethods:
    """An authentication boundary the application refers to by its unique ``token``, with a
    human-oriented ``description`` (both required)."""

    def __repr__(self) -> str:
        return f"<Permission {getattr(self, 'token', None)!r}>"


class PermissionBundleMethods:
    """Permissions grouped under a common ``label``, as the system needs."""

    def __repr__(self) -> str:
        return f"<PermissionBundle {getattr(self, 'label', None)!r}>"


class UserGroupMethods:
    """Users grouped under a common ``label``, as the business needs; holds permissions directly
    and through permission bundles."""

    def get_all_permissions(self) -> frozenset[Any]:
        """All permissions of this group, directly and through its bundles."""
        session = flushed_session(self)
        group_id = getattr(self, "id", None)
        if session is None or group_id is None:
            return frozenset()
        return entities_for(type(self)).permissions_of(session, group_id)

    def __repr__(self) -> str:
        return f"<UserGroup {getattr(self, 'label', None)!r}>"


# ---------------------------------------------------------------------------------------------
# building and binding

_BY_METADATA: weakref.WeakKeyDictionary[sa.MetaData, Entities] = weakref.WeakKeyDictionary()
_bound: Entities | None = None


def _declarative_base(cls: Any) -> Any:
    """The declarative base class of ``cls`` (a base, or a class mapped on one)."""
    for klass in getattr(cls, "__mro__", ()):
        if "registry" in vars(klass) and "metadata" in vars(klass):
            return klass
    found = getattr(cls, "registry", None)
    if isinstance(found, registry):  # mapped without a base class (registry.mapped)
        return found.generate_base()
    raise InvalidArgument(f"{cls!r} is not a declarative base or a class mapped on one")


def entities_for(base: Any) -> Entities:
    """The entities on the MetaData of ``base`` (a declarative base or a class mapped on one),
    built on first use."""
    metadata = getattr(base, "metadata", None)
    if not isinstance(metadata, sa.MetaData):
        raise InvalidArgument(f"{base!r} is not a declarative base or a class mapped on one")
    found = _BY_METADATA.get(metadata)
    if found is None:
        found = _BY_METADATA[metadata] = _build(_declarative_base(base))
    return found


def _build(base: Any) -> Entities:
    metadata: sa.MetaData = base.metadata

    def entity(name: str, methods: type, table: str, columns: dict[str, Any]) -> Any:
        attrs: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
        attrs.update(__tablename__=table, __doc__=methods.__doc__, **columns)
        return type(name, (methods, base), attrs)

    def label_table() -> dict[str, Any]:
        # unique, as KegBouncer's migration created it (its model omitted unique=True)
        return {
            "id": sa.Column(sa.Integer, primary_key=True),
            "label": sa.Column(sa.Text, nullable=False, unique=True),
        }

    permission = entity(
        "Permission",
        PermissionMethods,
        "keg_bouncer_permissions",
        {
            "id": sa.Column(sa.Integer, primary_key=True),
            "token": sa.Column(sa.String(255), nullable=False, unique=True),
            "description": sa.Column(sa.Text, nullable=False),
        },
    )
    bundle = entity(
        "PermissionBundle", PermissionBundleMethods, "keg_bouncer_permission_bundles", label_table()
    )
    group = entity("UserGroup", UserGroupMethods, "keg_bouncer_user_groups", label_table())

    def table(name: str, *columns: Any) -> sa.Table:
        return sa.Table(name, metadata, *columns)

    gp = make_link(
        "keg_bouncer_user_group_permission_map",
        "user_group_id",
        group.__table__.c.id,
        "permission_id",
        permission.__table__.c.id,
        table,
    )
    gb = make_link(
        "keg_bouncer_user_group_bundle_map",
        "user_group_id",
        group.__table__.c.id,
        "permission_bundle_id",
        bundle.__table__.c.id,
        table,
    )
    bp = make_link(
        "keg_bouncer_bundle_permission_map",
        "permission_bundle_id",
        bundle.__table__.c.id,
        "permission_id",
        permission.__table__.c.id,
        table,
    )
    # KegBouncer used cascade='all' here: deleting a bundle (or group) whose collection was
    # loaded deleted the shared permissions (and bundles) too. Deleting one removes its links.
    bundle.permissions = relationship(
        permission, secondary=bp, passive_deletes=True, backref="parent_bundles"
    )
    group.permissions = relationship(
        permission, secondary=gp, passive_deletes=True, backref="parent_user_groups"
    )
    group.bundles = relationship(
        bundle, secondary=gb, passive_deletes=True, backref="parent_user_groups"
    )
    return Entities(base, permission, bundle, group, gp, gb, bp)


def bind(base: Any = None) -> Entities:
    """Build (once) the entities on ``base`` and make this module's names refer to them.
    Without ``base``: Keg's ``db.Model`` (``keg.db.db``), as KegBouncer."""
    global _bound
    if base is None:
        base = _keg_db().Model
    _bound = entities_for(base)
    return _bound


def bound() -> Entities:
    """The entities the module's names refer to (binding Keg's ``db.Model`` if none is bound)."""
    if _bound is None:
        try:
            return bind()
        except NotBound:
            raise NotBound(
                "bastion.compat.keg_bouncer.model.entities is not bound to a declarative base: "
                "call entities.bind(Base) first (or install Keg to use its db.Model)"
            ) from None
    return _bound


def _keg_db() -> Any:
    try:
        from keg.db import db  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise NotBound("Keg is not installed: pass your declarative base to bind()") from None
    return db


def __getattr__(name: str) -> Any:
    if name in ENTITY_NAMES:
        return getattr(bound(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# KegBouncer's functions


def make_user_to_user_group_link(
    user_primary_key_column: Any,
    table_constructor: TableConstructor | str | None = None,
    parent_table_name: str | None = None,
    *,
    entities: Entities | None = None,
) -> Any:
    """The link table between a user model's primary key and user groups.

    KegBouncer 1.0's signature ``(user_primary_key_column, table_constructor=db.Table)`` names
    the table ``keg_bouncer_user_user_group_map``; 2.x's ``(user_primary_key_column,
    parent_table_name, table_constructor=db.Table)`` names it
    ``keg_bouncer_<parent_table_name>_user_group_map``. Both are accepted (a string second
    argument is 2.x's ``parent_table_name``)."""
    if isinstance(table_constructor, str):
        table_constructor, parent_table_name = None, table_constructor
    name = (
        user_user_group_link_table_name
        if parent_table_name is None
        else user_group_link_table_name(parent_table_name)
    )
    if table_constructor is None:  # a table of the user column's MetaData
        metadata = getattr(getattr(user_primary_key_column, "table", None), "metadata", None)
        ents = entities or (_BY_METADATA.get(metadata) if metadata is not None else None)
        group_id = (ents or bound()).UserGroup.__table__.c.id
        return make_link(name, "user_id", user_primary_key_column, "user_group_id", group_id)
    # op.create_table: refer to both tables by name, as a migration does
    column = as_column(user_primary_key_column)
    table = getattr(column, "table", None)
    if not isinstance(table, sa.Table):
        raise InvalidArgument(f"{column!r} belongs to no table")
    columns = link_columns(
        "user_id",
        column.type,
        f"{table.fullname}.{column.name}",
        "user_group_id",
        sa.Integer(),
        "keg_bouncer_user_groups.id",
    )
    return table_constructor(name, *columns)


def joined_permission_query(
    session: Session | None = None, *, entities: Entities | None = None
) -> Any:
    """KegBouncer's query joining permissions with their bundles and user groups: filter it on
    ``user_group_permission_map.c.user_group_id`` / ``user_group_bundle_map.c.user_group_id``.

    KegBouncer used ``Permission.query`` (Flask-SQLAlchemy); pass ``session`` when your base has
    no ``query`` property. (``get_all_permissions`` no longer uses this query: its joins
    multiplied rows.)"""
    ents = entities or bound()
    p, gp, gb, bp = (
        ents.Permission,
        ents.user_group_permission_map,
        ents.user_group_bundle_map,
        ents.bundle_permission_map,
    )
    if session is not None:
        query = session.query(p)
    elif hasattr(p, "query"):
        query = p.query
    else:
        raise InvalidArgument("joined_permission_query() needs a session: the base has no .query")
    return (
        query.outerjoin(bp, bp.c.permission_id == p.id)
        .outerjoin(gb, gb.c.permission_bundle_id == bp.c.permission_bundle_id)
        .outerjoin(gp, gp.c.permission_id == p.id)
    )
