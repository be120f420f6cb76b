"""KegBouncer's user mixins: ``UserMixin`` (1.0) and its 2.x name ``PermissionMixin``.

Mixing one into a mapped user class adds, when SQLAlchemy maps the class:

* ``user_user_group_map``: the link table between users and user groups, on the user's own
  MetaData (``keg_bouncer_user_user_group_map`` for ``UserMixin`` as in KegBouncer 1.0;
  ``keg_bouncer_<user table>_user_group_map`` for ``PermissionMixin`` as in 2.x, so several user
  models can hold groups; set ``user_group_link_table`` to choose the name);
* ``user_groups``: the relationship to ``UserGroup`` (backref ``users``, or
  ``user_groups_backref``);
* ``get_all_permissions()``, ``has_permissions(*tokens)``, ``has_any_permissions(*tokens)``,
  ``reset_permission_cache()`` and (2.x) ``get_all_permissions_without_cache()``.

The user's key is the attribute named by ``primary_key_column`` (``"id"`` by default, which may
map a column of any name and type, e.g. ``id = Column("name", String, primary_key=True)``);
without such an attribute, or with ``primary_key_column = None`` (``PermissionMixin``), the single
primary-key column is detected.

The cache of ``get_all_permissions`` lasts while nothing changes in the session: any flush
(including the autoflush before it runs), ``Session.execute`` of an INSERT/UPDATE/DELETE,
``commit``, ``rollback`` or expiry of the user starts afresh. KegBouncer's cache never
invalidated.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, relationship
from sqlalchemy.orm.interfaces import MapperProperty

from bastion.compat.keg_bouncer.model.entities import (
    Entities,
    entities_for,
    flushed_session,
    user_group_link_table_name,
    user_user_group_link_table_name,
)
from bastion.compat.keg_bouncer.model.utils import make_link
from bastion.errors import InvalidArgument, PolicyError

__all__ = ["KegBouncerMixin", "PermissionMixin", "PrimaryKeyError", "UserMixin"]


class PrimaryKeyError(PolicyError, AttributeError):
    """A user model without exactly one primary-key column (an ``AttributeError``, as in
    KegBouncer 2.x), or whose ``primary_key_column`` names no column."""


class KegBouncerMixin:
    """KegBouncer 2.x's base of its mixins: the single primary-key column."""

    @classmethod
    def _primary_key_column(cls) -> Any:
        mapper: Any = sa_inspect(cls, raiseerr=False)
        if mapper is not None:
            keys = list(mapper.primary_key)
        else:  # not mapped (yet): KegBouncer 2.x looked in the class body
            keys = [v for v in vars(cls).values() if _is_primary_key(v)]
        if len(keys) != 1:
            raise PrimaryKeyError(
                f"{cls.__name__}: this KegBouncer mixin requires exactly 1 primary key field"
            )
        return keys[0]


def _is_primary_key(value: Any) -> bool:
    column = getattr(value, "column", value)  # mapped_column() wraps a Column
    return getattr(column, "primary_key", None) is True


class UserMixin(KegBouncerMixin):
    """Adds permission facilities to a declarative user entity (KegBouncer 1.0's ``UserMixin``).

    The class provides an ``id`` attribute mapping its primary key (any column name and type),
    or names the attribute in ``primary_key_column``."""

    #: The attribute mapping the user's key (KegBouncer's default ``"id"``); None: detected.
    primary_key_column: ClassVar[str | None] = "id"
    #: The link table's name; None: KegBouncer 1.0's ``keg_bouncer_user_user_group_map``.
    user_group_link_table: ClassVar[str | None] = None
    #: The name of the backref on ``UserGroup``.
    user_groups_backref: ClassVar[str] = "users"
    #: The user ↔ user group link table (set when the class is mapped).
    user_user_group_map: ClassVar[sa.Table]
    #: ``(session generation, permissions)``; instances shadow it.
    _cached_permissions: Any = None

    @classmethod
    def _link_table_name(cls, table_name: str) -> str:
        return cls.user_group_link_table or user_user_group_link_table_name

    def get_all_permissions_without_cache(self) -> frozenset[Any]:
        """Every permission this user holds through its user groups (directly in a group or
        through the group's bundles), from the database."""
        session = flushed_session(self)
        if session is None:
            if sa_inspect(self).key is None:
                return frozenset()  # transient: nothing stored yet
            raise InvalidArgument(f"{self!r} is detached: its permissions cannot be loaded")
        cls = type(self)
        user_id = getattr(self, cls._keg_bouncer_user_key)  # type: ignore[attr-defined]
        if user_id is None:
            return frozenset()
        link = cls.user_user_group_map
        groups = sa.select(link.c.user_group_id).where(link.c.user_id == user_id)
        return entities_for(cls).permissions_of(session, groups)

    def get_all_permissions(self) -> frozenset[Any]:
        """Like :meth:`get_all_permissions_without_cache`, cached until the session changes."""
        session = flushed_session(self)
        cached = self._cached_permissions
        if session is None:
            return cached[1] if cached is not None else self.get_all_permissions_without_cache()
        generation = session_generation(session)
        if cached is not None and cached[0] is generation:
            return cached[1]  # type: ignore[no-any-return]
        found = self.get_all_permissions_without_cache()
        self._cached_permissions = (generation, found)
        return found

    def permission_tokens(self) -> frozenset[str]:
        """The tokens of :meth:`get_all_permissions`."""
        return frozenset(p.token for p in self.get_all_permissions())

    def has_permissions(self, *tokens: str) -> bool:
        """True iff every given permission token is in the user's permissions."""
        return frozenset(tokens) <= self.permission_tokens()

    def has_any_permissions(self, *tokens: str) -> bool:
        """True iff any of the given permission tokens is in the user's permissions."""
        return not frozenset(tokens).isdisjoint(self.permission_tokens())

    def reset_permission_cache(self) -> None:
        """Forget the cached permissions (the next call queries)."""
        self._cached_permissions = None


class PermissionMixin(UserMixin):
    """KegBouncer 2.x's name: the primary key is detected, and the link table is named after the
    user table (``keg_bouncer_<table>_user_group_map``)."""

    primary_key_column: ClassVar[str | None] = None

    @classmethod
    def _link_table_name(cls, table_name: str) -> str:
        return cls.user_group_link_table or user_group_link_table_name(table_name)


# ---------------------------------------------------------------------------------------------
# mapping a user class

_LINKED: weakref.WeakSet[type] = weakref.WeakSet()


@sa.event.listens_for(UserMixin, "after_mapper_constructed", propagate=True)
def _link_user(mapper: Mapper[Any], cls: type[UserMixin]) -> None:
    if any(m.class_ in _LINKED for m in mapper.iterate_to_root()):
        return  # a subclass of a linked user class inherits its link
    key, column = _user_key(mapper, cls)
    ents = entities_for(cls)
    name = cls._link_table_name(mapper.local_table.name)  # type: ignore[attr-defined]
    backref = cls.user_groups_backref
    _check_free(ents, cls, name, backref)
    table = make_link(
        name,
        "user_id",
        column,
        "user_group_id",
        ents.UserGroup.__table__.c.id,
        lambda n, *columns: sa.Table(n, ents.metadata, *columns),
    )
    type.__setattr__(cls, "user_user_group_map", table)
    type.__setattr__(cls, "_keg_bouncer_user_key", key)
    mapper.add_property(
        "user_groups",
        relationship(ents.UserGroup, secondary=table, passive_deletes=True, backref=backref),
    )
    ents.user_links[cls] = table
    _LINKED.add(cls)


def _check_free(ents: Entities, cls: type, name: str, backref: str) -> None:
    for other, table in ents.user_links.items():
        if table.name == name:
            raise PolicyError(
                f"{cls.__name__} and {other.__name__} would share the link table {name!r}: use "
                "PermissionMixin (one link table per user table) or set user_group_link_table"
            )
        if getattr(other, "user_groups_backref", None) == backref:
            raise PolicyError(
                f"{cls.__name__} and {other.__name__} both want UserGroup.{backref}: set "
                "user_groups_backref on one of them"
            )


def _user_key(mapper: Mapper[Any], cls: type[UserMixin]) -> tuple[str, sa.Column[Any]]:
    name = cls.primary_key_column
    if name is not None:
        prop: MapperProperty[Any] | None = mapper._props.get(name)
        columns = getattr(prop, "columns", None)
        if columns:
            return name, columns[0]
        if name != "id":
            raise PrimaryKeyError(f"{cls.__name__}.{name} (primary_key_column) is not a column")
    if len(mapper.primary_key) != 1:
        raise PrimaryKeyError(
            f"{cls.__name__}: KegBouncer's mixins require exactly 1 primary key column, "
            f"found {len(mapper.primary_key)}"
        )
    column = mapper.primary_key[0]
    if not isinstance(column, sa.Column):
        raise PrimaryKeyError(f"{cls.__name__}: the primary key {column} is not a table column")
    return mapper.get_property_by_column(column).key, column


# ---------------------------------------------------------------------------------------------
# cache invalidation

_GENERATION = "bastion.compat.keg_bouncer.generation"


def session_generation(session: Session) -> object:
    """A token that changes whenever the session may have changed permissions."""
    token = session.info.get(_GENERATION)
    if token is None:
        token = session.info[_GENERATION] = object()
    return token


def _forget(session: Session, *args: Any) -> None:
    session.info.pop(_GENERATION, None)


# (after_transaction_end: close() and reset() end a transaction without a commit or rollback)
for _event in (
    "after_flush",
    "after_commit",
    "after_rollback",
    "after_soft_rollback",
    "after_transaction_end",
):
    sa.event.listen(Session, _event, _forget)


@sa.event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not state.is_select:  # INSERT/UPDATE/DELETE, text(): may change grants
        _forget(state.session)


@sa.event.listens_for(UserMixin, "expire", propagate=True)
def _on_expire(target: UserMixin | None, attrs: Any) -> None:
    # Fix: SQLAlchemy passes None for an instance already garbage-collected (users and groups
    # refer to each other, so a commit's expiry could meet one), and the commit raised
    # AttributeError after it had gone through. A collected user has no cache to reset.
    if target is not None:
        target.reset_permission_cache()
