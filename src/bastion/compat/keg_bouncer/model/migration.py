"""Functions for use in Alembic migrations that integrate KegBouncer tables with
application-specific tables (KegBouncer 1.0's ``keg_bouncer.model.migration``).

KegBouncer's own revision ``588daaa98ab1`` (branch ``keg-bouncer``) ships in
:data:`VERSIONS_DIR`; replace ``keg_bouncer:alembic/versions`` in ``version_locations`` by
:data:`VERSION_LOCATION` (with ``path_separator = space``). A database KegBouncer created is at
that revision already: ``alembic upgrade heads`` finds nothing to do for the branch.

These helpers take Alembic's ``op``; nothing here imports Alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.compat.keg_bouncer.model.entities import (
    make_user_to_user_group_link,
    user_group_link_table_name,
    user_user_group_link_table_name,
)

__all__ = [
    "BRANCH_LABEL",
    "REVISION",
    "VERSIONS_DIR",
    "VERSION_LOCATION",
    "drop_link_from_user_to_user_groups",
    "link_user_to_user_groups",
]

#: KegBouncer's branch label and revision id.
BRANCH_LABEL = "keg-bouncer"
REVISION = "588daaa98ab1"
#: The directory of the revision, and the same as an Alembic package resource.
VERSIONS_DIR = str(Path(__file__).resolve().parent.parent / "alembic" / "versions")
VERSION_LOCATION = "bastion.compat.keg_bouncer:alembic/versions"


def link_user_to_user_groups(
    op: Any, user_primary_key_column: Any, parent_table_name: str | None = None
) -> Any:
    """Creates the many-to-many linking table between your User entity and user groups.

    :param op: must be the Alembic operations object.
    :param user_primary_key_column: the primary-key ``Column`` of your User entity (the one which
        mixes in ``UserMixin``), or its mapped attribute (``User.id``).
    :param parent_table_name: KegBouncer 2.x naming (``PermissionMixin``): the user table's name,
        for ``keg_bouncer_<name>_user_group_map``; omitted: 1.0's
        ``keg_bouncer_user_user_group_map``.
    :returns: what ``op.create_table`` returns (the ``Table``).
    """
    return make_user_to_user_group_link(user_primary_key_column, op.create_table, parent_table_name)


def drop_link_from_user_to_user_groups(op: Any, parent_table_name: str | None = None) -> None:
    """Drops the table :func:`link_user_to_user_groups` created."""
    op.drop_table(
        user_user_group_link_table_name
        if parent_table_name is None
        else user_group_link_table_name(parent_table_name)
    )
