"""bastion's own Alembic migrations, shipped as a labelled branch, and helpers for yours.

The tables of :func:`bastion.grants.grant_models` (with the default prefix ``bastion_``) are created
by one revision on its own branch, labelled ``bastion`` (``down_revision = None``), in the
directory :data:`VERSIONS_DIR` inside the installed package. Add it to your ``alembic.ini``
(``path_separator = space``: Alembic's ``os`` separator is ``:`` on POSIX and would split the
package location in two)::

    [alembic]
    script_location = %(here)s/migrations
    path_separator = space
    version_locations = %(here)s/migrations/versions bastion:migrations/versions

``bastion:migrations/versions`` is a package resource: Alembic resolves ``package:path`` in
``version_locations`` (as in ``script_location``) to the directory inside the installed package.
``alembic heads`` then shows two heads; ``alembic upgrade bastion@head`` creates bastion's tables
(``alembic upgrade heads`` does both branches), ``alembic downgrade bastion@base`` drops them.

The link tables between *your* user models and the grants are yours, because bastion cannot know
your user tables: create them in your own revision, which depends on bastion's::

    depends_on = ("e3b1c7d94a52",)  # bastion.migrations.GRANTS_REVISION


    def upgrade() -> None:
        op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))
        link_user_to_grants(op, "users", "id", sa.Integer())


    def downgrade() -> None:
        drop_link_from_user(op, "users")
        op.drop_table("users")

:func:`link_user_to_grants` creates exactly the three tables that
:meth:`bastion.grants.GrantModels.register_user` declares for that user model
(``bastion_<table>_permissions``, ``_bundles``, ``_groups``), so ``alembic check`` finds no
difference. Only the migration modules import Alembic; these helpers take Alembic's ``op`` as an
argument, and importing this package needs SQLAlchemy only.

A revision never changes once released. The helpers create the link tables as revision
:data:`GRANTS_REVISION` defines them; a later revision that changes them will ship a helper for
that change.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.schema import SchemaItem

from bastion.errors import InvalidArgument

__all__ = [
    "BRANCH_LABEL",
    "GRANTS_REVISION",
    "VERSIONS_DIR",
    "VERSION_LOCATION",
    "Operations",
    "drop_link_from_user",
    "link_user_to_grants",
]


class Operations(Protocol):
    """What the helpers use of Alembic's ``op`` (the ``alembic.op`` proxy or an
    ``alembic.operations.Operations``); a protocol, so that this module never imports Alembic."""

    def create_table(self, table_name: str, *columns: SchemaItem, **kw: Any) -> sa.Table: ...

    def create_index(
        self, index_name: str | None, table_name: str, columns: Sequence[str], **kw: Any
    ) -> None: ...

    def drop_table(self, table_name: str, **kw: Any) -> None: ...


#: The branch label of bastion's revisions (``alembic upgrade bastion@head``).
BRANCH_LABEL = "bastion"
#: The revision creating the grant tables (``depends_on`` of your link-table revision).
GRANTS_REVISION = "e3b1c7d94a52"
#: The directory of bastion's revisions, for ``Config.set_main_option("version_locations", ...)``.
VERSIONS_DIR = str(Path(__file__).resolve().parent / "versions")
#: The same directory as an Alembic package resource, for ``alembic.ini``.
VERSION_LOCATION = "bastion:migrations/versions"

#: The kinds a user links to, in the order ``register_user`` declares them: link table suffix,
#: column name, referenced table suffix.
_USER_LINKS = (
    ("permissions", "permission_id", "permissions"),
    ("bundles", "bundle_id", "bundles"),
    ("groups", "group_id", "groups"),
)


def edge_columns() -> list[sa.Column[Any]]:
    """Scope and validity columns of a grant edge, as revision ``e3b1c7d94a52`` creates them."""
    return [
        sa.Column("scope_type", sa.String(64), nullable=False, server_default="", primary_key=True),
        sa.Column("scope_id", sa.String(255), nullable=False, server_default="", primary_key=True),
        sa.Column("valid_from", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    ]


def create_link(
    op: Operations,
    name: str,
    left: tuple[str, Any, str],
    right: tuple[str, Any, str],
    *,
    edge: bool = True,
) -> None:
    """Create a link table as revision ``e3b1c7d94a52`` does: ``left``/``right`` are
    ``(column, type, "referenced_table.column")``; composite primary key, ``ON DELETE CASCADE``
    foreign keys, and ``ix_<name>_<right column>`` on ``(right, left)`` for reverse lookups."""
    (lname, ltype, lref), (rname, rtype, rref) = left, right
    op.create_table(
        name,
        sa.Column(lname, ltype, sa.ForeignKey(lref, ondelete="CASCADE"), primary_key=True),
        sa.Column(rname, rtype, sa.ForeignKey(rref, ondelete="CASCADE"), primary_key=True),
        *(edge_columns() if edge else []),
    )
    op.create_index(f"ix_{name}_{rname}", name, [rname, lname])


def _link_names(user_table_name: str, prefix: str, table_prefix: str | None) -> str:
    if not user_table_name or not prefix:
        raise InvalidArgument("the user table name and the prefix must not be empty")
    return f"{prefix}{table_prefix or user_table_name}"


def link_user_to_grants(
    op: Operations,
    user_table_name: str,
    user_pk_column_name: str,
    user_pk_type: Any,
    prefix: str = "bastion_",
    *,
    table_prefix: str | None = None,
) -> list[str]:
    """Create the three link tables of a user model, in your own migration.

    ``user_table_name.user_pk_column_name`` is the user's single-column primary key and
    ``user_pk_type`` its type (``sa.Integer()``, ``sa.String(64)``, ``sa.Uuid()`` ...). ``prefix``
    and ``table_prefix`` are those of ``grant_models(Base, prefix=...)`` and
    ``register_user(User, table_prefix=...)``. Returns the names of the created tables."""
    base = _link_names(user_table_name, prefix, table_prefix)
    user = ("user_id", user_pk_type, f"{user_table_name}.{user_pk_column_name}")
    created = []
    for suffix, column, target in _USER_LINKS:
        name = f"{base}_{suffix}"
        create_link(op, name, user, (column, sa.Integer(), f"{prefix}{target}.id"))
        created.append(name)
    return created


def drop_link_from_user(
    op: Operations,
    user_table_name: str,
    prefix: str = "bastion_",
    *,
    table_prefix: str | None = None,
) -> None:
    """Drop the three link tables that :func:`link_user_to_grants` created (their rows too)."""
    base = _link_names(user_table_name, prefix, table_prefix)
    for suffix, _, _ in reversed(_USER_LINKS):
        op.drop_table(f"{base}_{suffix}")
