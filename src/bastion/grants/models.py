"""The stored three-tier grant model, on the application's own declarative base.

::

    user ──┬── user_permissions ─────────────────────────────► permission
           ├── user_bundles ──► bundle ── bundle_permissions ─► permission
           └── user_groups ───► group ──┬── group_permissions ─► permission
                                        └── group_bundles ──► bundle ── bundle_permissions ─► ...

A user holds a permission **directly**, **through a bundle**, or **through a group** (which holds
permissions and bundles). Every edge a grant creates (user→permission, user→bundle, user→group,
group→permission, group→bundle) carries a **scope** (``scope_type``/``scope_id``: ``''``/``''``
for global, e.g. ``'org'``/``'42'`` for one organisation, or a model name and primary key for one
object) and an optional validity window (``valid_from``, ``expires_at``). Bundles are definitions:
``bundle_permissions`` has neither.

Along a path through a group, the grant's scope is the one scoped edge's (or global if both are
global); two edges scoped differently grant nothing. ``scope_id`` is text: integers as
``str(n)``, UUIDs as 32 lowercase hex digits, strings as they are (:func:`scope_key`).

:func:`grant_models` builds the tables and classes on *your* base (``DeclarativeBase``,
Flask-SQLAlchemy's ``db.Model``): nothing lives on a hidden global base. Each user model is added
with :meth:`GrantModels.register_user` (or :class:`GrantsUserMixin`) and gets its own three link
tables, so ``User`` and ``ServiceAccount`` can both hold grants. Every link table has a composite
primary key, ``ON DELETE CASCADE`` foreign keys and an index leading with the permission/bundle/
group column for the reverse lookups.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, QueryableAttribute, relationship

from bastion.errors import InvalidArgument, PolicyError, UnmappedClass

__all__ = ["GLOBAL", "GrantModels", "GrantsUserMixin", "UserLinks", "grant_models", "scope_key"]

#: ``(scope_type, scope_id)`` of a global grant.
GLOBAL = ("", "")
#: DEFAULT '' as SQL text: Alembic misreads a plain "" default on SQLite.
_EMPTY = sa.text("''")


def scope_key(value: Any) -> str:
    """The text stored in ``scope_id`` for a scope value (an int, str or UUID primary key)."""
    if isinstance(value, bool) or value is None:
        raise InvalidArgument(f"{value!r} cannot identify a scope")
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, (int, str)):
        return str(value)
    raise InvalidArgument(f"scope ids are int, str or UUID values, got {type(value).__name__}")


def _edge_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "scope_type", sa.String(64), nullable=False, server_default=_EMPTY, primary_key=True
        ),
        sa.Column(
            "scope_id", sa.String(255), nullable=False, server_default=_EMPTY, primary_key=True
        ),
        sa.Column("valid_from", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    ]


def _link(
    metadata: sa.MetaData,
    name: str,
    left: tuple[str, sa.Column[Any]],
    right: tuple[str, sa.Column[Any]],
    *,
    edge: bool = True,
) -> sa.Table:
    (lname, lcol), (rname, rcol) = left, right
    return sa.Table(
        name,
        metadata,
        sa.Column(lname, lcol.type, sa.ForeignKey(lcol, ondelete="CASCADE"), primary_key=True),
        sa.Column(rname, rcol.type, sa.ForeignKey(rcol, ondelete="CASCADE"), primary_key=True),
        *(_edge_columns() if edge else []),
        sa.Index(f"ix_{name}_{rname}", rname, lname),
    )


@dataclass
class UserLinks:
    """The three link tables of one user model."""

    user_class: type
    pk: sa.Column[Any]
    permissions: sa.Table  #: user -> permission (direct grants)
    bundles: sa.Table  #: user -> bundle
    groups: sa.Table  #: user -> group (membership)
    #: statements built once for this user model, the subject bound as a parameter
    #: (``bastion.grants.effective``: the first-check EXISTS, the effective grants' load)
    statements: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class GrantModels:
    """The grant tables and mapped classes built on one declarative base."""

    base: Any
    prefix: str
    Permission: Any
    Bundle: Any
    Group: Any
    bundle_permissions: sa.Table
    group_permissions: sa.Table
    group_bundles: sa.Table
    audit: sa.Table
    users: dict[type, UserLinks] = field(default_factory=dict)
    #: a :class:`GrantsUserMixin` bound to these models: ``class User(Base, grants.UserMixin)``
    UserMixin: type[GrantsUserMixin] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.UserMixin = type("UserMixin", (GrantsUserMixin,), {"__grants__": self})

    @property
    def metadata(self) -> sa.MetaData:
        return self.base.metadata  # type: ignore[no-any-return]

    def register_user(
        self, user_class: type, primary_key: str | None = None, *, table_prefix: str | None = None
    ) -> UserLinks:
        """Create the link tables (and ``permissions``/``bundles``/``groups`` relationships) for
        ``user_class``. ``primary_key`` names its single primary-key attribute (detected when
        omitted); any column type works (integer, string, UUID)."""
        if user_class in self.users:
            return self.users[user_class]
        mapper: Any = sa_inspect(user_class, raiseerr=False)
        if mapper is None:
            raise UnmappedClass(user_class)
        inherited = self.links_for(user_class)
        if inherited is not None:
            # Fix: a subclass of a registered user model (single-table or joined inheritance)
            # made its tables again, and SQLAlchemy refused ("Table ... is already defined"). Its
            # rows are users of the base class: it shares the base class's link tables, as a
            # GrantsUserMixin subclass does.
            if primary_key is not None or table_prefix is not None:
                raise InvalidArgument(
                    f"{user_class.__name__} inherits the link tables of "
                    f"{inherited.user_class.__name__}: no primary_key= or table_prefix= for it"
                )
            return inherited
        pk = _user_pk(mapper, primary_key)
        table = f"{self.prefix}{table_prefix or mapper.local_table.name}"
        links = UserLinks(
            user_class,
            pk,
            _link(
                self.metadata,
                f"{table}_permissions",
                ("user_id", pk),
                ("permission_id", self.Permission.__table__.c.id),
            ),
            _link(
                self.metadata,
                f"{table}_bundles",
                ("user_id", pk),
                ("bundle_id", self.Bundle.__table__.c.id),
            ),
            _link(
                self.metadata,
                f"{table}_groups",
                ("user_id", pk),
                ("group_id", self.Group.__table__.c.id),
            ),
        )
        self.users[user_class] = links
        _add(user_class, "granted_permissions", self.Permission, links.permissions)
        _add(user_class, "granted_bundles", self.Bundle, links.bundles)
        _add(user_class, "user_groups", self.Group, links.groups)
        return links

    def links_for(self, user_class: type) -> UserLinks | None:
        """The link tables of ``user_class`` or of its nearest registered base class."""
        for cls in user_class.__mro__:
            links = self.users.get(cls)
            if links is not None:
                return links
        return None


class GrantsUserMixin:
    """Mixin for the application's user model: its link tables are created when it is mapped.

    ::

        grants = grant_models(Base)


        class User(Base, grants.UserMixin):  # or GrantsUserMixin with __grants__ = grants
            __tablename__ = "users"
            primary_key_column = "ident"  # optional: the attribute's name, or the Column
            ident: Mapped[str] = mapped_column(primary_key=True)

    ``primary_key_column = Column("name", String, primary_key=True)`` (KegBouncer's spelling)
    declares the key and names it at once. Without ``primary_key_column`` the single-column
    primary key is detected. A subclass of a
    mapped user model (single-table inheritance) shares its parent's link tables. Equivalent to
    ``grants.register_user(User, primary_key=...)`` after the class.
    """

    #: the :class:`GrantModels` to register with (set by ``grants.UserMixin``)
    __grants__: GrantModels | None = None
    #: the primary-key attribute name, or its ``Column``; None: detected
    primary_key_column: str | sa.Column[Any] | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)  # a DeclarativeBase maps the class here
        if "__grants__" in cls.__dict__ and cls.__dict__.get("__tablename__") is None:
            return  # a mixin of the mixin (``grants.UserMixin``): nothing to map yet
        if sa_inspect(cls, raiseerr=False) is not None:
            _register_mixed_in(cls)
        else:  # a metaclass-based base (Flask-SQLAlchemy's default) maps after this hook
            sa.event.listen(Mapper, "after_mapper_constructed", _when_mapped(cls))


def _when_mapped(cls: type) -> Any:
    def constructed(mapper: Any, class_: type) -> None:
        if class_ is cls:
            _register_mixed_in(cls)

    return constructed


def _register_mixed_in(cls: Any) -> None:
    grants = cls.__grants__
    if not isinstance(grants, GrantModels):
        raise PolicyError(
            f"{cls.__name__} uses GrantsUserMixin without __grants__: inherit from "
            "grants.UserMixin (grants = grant_models(Base)) or set __grants__ = grants"
        )
    if grants.links_for(cls) is not None:
        return  # a subclass of a registered user model shares its link tables
    key = cls.primary_key_column
    if isinstance(key, QueryableAttribute):
        # ``primary_key_column = Column("name", ..., primary_key=True)`` in the class body is
        # mapped by declarative as the attribute ``primary_key_column``: that attribute
        key = key.key
    elif isinstance(key, sa.Column):
        key = sa_inspect(cls).get_property_by_column(key).key
    grants.register_user(cls, key)


def _add(cls: type, name: str, target: type, secondary: sa.Table) -> None:
    if name not in cls.__dict__:
        setattr(cls, name, relationship(target, secondary=secondary, viewonly=True))


def _user_pk(mapper: Any, name: str | None) -> sa.Column[Any]:
    if name is not None:
        prop = mapper.attrs.get(name)
        columns = getattr(prop, "columns", None)
        if not columns:
            raise PolicyError(f"{mapper.class_.__name__}.{name} is not a column")
        return columns[0]  # type: ignore[no-any-return]
    if len(mapper.primary_key) != 1:
        raise PolicyError(
            f"{mapper.class_.__name__} needs a single-column primary key to hold grants "
            f"(it has {len(mapper.primary_key)}); name one with primary_key="
        )
    return mapper.primary_key[0]  # type: ignore[no-any-return]


def grant_models(base: Any, *, prefix: str = "bastion_") -> GrantModels:
    """Build the permission, bundle, group, link and audit tables on ``base`` (a declarative
    base class or Flask-SQLAlchemy's ``db.Model``); table names start with ``prefix``."""
    if not hasattr(base, "metadata") or not hasattr(base, "registry"):
        raise InvalidArgument(f"grant_models() takes a declarative base class, got {base!r}")
    metadata: sa.MetaData = base.metadata
    existing = getattr(base, "_bastion_grant_models", {})
    if prefix in existing:
        return existing[prefix]  # type: ignore[no-any-return]

    def entity(name: str, table: str, columns: dict[str, Any]) -> Any:
        attrs = {"__tablename__": f"{prefix}{table}", "__table_args__": {}, **columns}
        # Fix: a second prefix on the same base reused the class names, and SQLAlchemy warned
        # that it replaced the first classes in the base's string-lookup table.
        if prefix != "bastion_":
            name = f"{name}_{prefix}"
        return type(name, (base,), attrs)

    permission = entity(
        "BastionPermission",
        "permissions",
        {
            "id": sa.Column(sa.Integer, primary_key=True),
            "token": sa.Column(sa.String(255), nullable=False, unique=True),
            "description": sa.Column(sa.Text, nullable=False, server_default=_EMPTY),
            "__repr__": lambda self: f"<Permission {self.token!r}>",
        },
    )
    bundle = entity(
        "BastionBundle",
        "bundles",
        {
            "id": sa.Column(sa.Integer, primary_key=True),
            "label": sa.Column(sa.String(255), nullable=False, unique=True),
            "__repr__": lambda self: f"<Bundle {self.label!r}>",
        },
    )
    group = entity(
        "BastionGroup",
        "groups",
        {
            "id": sa.Column(sa.Integer, primary_key=True),
            "label": sa.Column(sa.String(255), nullable=False, unique=True),
            "__repr__": lambda self: f"<Group {self.label!r}>",
        },
    )
    pid, bid, gid = permission.__table__.c.id, bundle.__table__.c.id, group.__table__.c.id
    bundle_permissions = _link(
        metadata,
        f"{prefix}bundle_permissions",
        ("bundle_id", bid),
        ("permission_id", pid),
        edge=False,
    )
    group_permissions = _link(
        metadata, f"{prefix}group_permissions", ("group_id", gid), ("permission_id", pid)
    )
    group_bundles = _link(metadata, f"{prefix}group_bundles", ("group_id", gid), ("bundle_id", bid))
    audit = sa.Table(
        f"{prefix}audit",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("object", sa.String(255), nullable=False, server_default=_EMPTY),
        sa.Column("scope", sa.String(320), nullable=False, server_default=_EMPTY),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Index(f"ix_{prefix}audit_at", "at"),
    )
    bundle.permissions = relationship(permission, secondary=bundle_permissions, viewonly=True)
    group.permissions = relationship(permission, secondary=group_permissions, viewonly=True)
    group.bundles = relationship(bundle, secondary=group_bundles, viewonly=True)
    models = GrantModels(
        base,
        prefix,
        permission,
        bundle,
        group,
        bundle_permissions,
        group_permissions,
        group_bundles,
        audit,
    )
    base._bastion_grant_models = {**existing, prefix: models}
    return models
