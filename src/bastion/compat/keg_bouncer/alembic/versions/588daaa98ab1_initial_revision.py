"""Initial revision (KegBouncer 1.0's, with a downgrade that runs)

KegBouncer's revision id and branch label, and the same tables, so that a database KegBouncer
migrated is at this revision already.

Revision ID: 588daaa98ab1
Revises:
Create Date: 2016-01-06 15:06:51.080805

"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from bastion.compat.keg_bouncer.model.utils import link_columns

# revision identifiers, used by Alembic.
revision = "588daaa98ab1"
down_revision = None
branch_labels = ("keg-bouncer",)
depends_on = None


def create_label_table(name: str) -> Any:
    return op.create_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.Text, unique=True, nullable=False),
    )


def create_link(name: str, from_name: str, from_table: str, to_name: str, to_table: str) -> Any:
    return op.create_table(
        name,
        *link_columns(
            from_name, sa.Integer(), f"{from_table}.id", to_name, sa.Integer(), f"{to_table}.id"
        ),
    )


def upgrade() -> None:
    op.create_table(
        "keg_bouncer_permissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
    )
    create_label_table("keg_bouncer_permission_bundles")
    create_label_table("keg_bouncer_user_groups")
    create_link(
        "keg_bouncer_user_group_permission_map",
        "user_group_id",
        "keg_bouncer_user_groups",
        "permission_id",
        "keg_bouncer_permissions",
    )
    create_link(
        "keg_bouncer_user_group_bundle_map",
        "user_group_id",
        "keg_bouncer_user_groups",
        "permission_bundle_id",
        "keg_bouncer_permission_bundles",
    )
    create_link(
        "keg_bouncer_bundle_permission_map",
        "permission_bundle_id",
        "keg_bouncer_permission_bundles",
        "permission_id",
        "keg_bouncer_permissions",
    )


def downgrade() -> None:
    # KegBouncer's took an `op` argument, which Alembic does not pass: it could not run.
    op.drop_table("keg_bouncer_bundle_permission_map")
    op.drop_table("keg_bouncer_user_group_bundle_map")
    op.drop_table("keg_bouncer_user_group_permission_map")
    op.drop_table("keg_bouncer_user_groups")
    op.drop_table("keg_bouncer_permission_bundles")
    op.drop_table("keg_bouncer_permissions")
