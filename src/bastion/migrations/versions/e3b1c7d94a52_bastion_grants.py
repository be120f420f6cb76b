"""bastion grants: permissions, bundles, groups, their links and the audit log.

The tables of ``bastion.grants.grant_models(Base)`` (default prefix ``bastion_``). The link tables
of each user model are created by your own revision with
``bastion.migrations.link_user_to_grants`` (``depends_on = ("e3b1c7d94a52",)``).

Revision ID: e3b1c7d94a52
Revises:
Create Date: 2026-11-24 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.migrations import create_link

# revision identifiers, used by Alembic.
revision = "e3b1c7d94a52"
down_revision = None
branch_labels = ("bastion",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bastion_permissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
    )
    for name in ("bastion_bundles", "bastion_groups"):
        op.create_table(
            name,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("label", sa.String(255), nullable=False, unique=True),
        )
    create_link(
        op,
        "bastion_bundle_permissions",
        ("bundle_id", sa.Integer(), "bastion_bundles.id"),
        ("permission_id", sa.Integer(), "bastion_permissions.id"),
        edge=False,
    )
    create_link(
        op,
        "bastion_group_permissions",
        ("group_id", sa.Integer(), "bastion_groups.id"),
        ("permission_id", sa.Integer(), "bastion_permissions.id"),
    )
    create_link(
        op,
        "bastion_group_bundles",
        ("group_id", sa.Integer(), "bastion_groups.id"),
        ("bundle_id", sa.Integer(), "bastion_bundles.id"),
    )
    op.create_table(
        "bastion_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("object", sa.String(255), nullable=False, server_default=""),
        sa.Column("scope", sa.String(320), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_bastion_audit_at", "bastion_audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_bastion_audit_at", table_name="bastion_audit")
    op.drop_table("bastion_audit")
    for name in (
        "bastion_group_bundles",
        "bastion_group_permissions",
        "bastion_bundle_permissions",
        "bastion_groups",
        "bastion_bundles",
        "bastion_permissions",
    ):
        op.drop_table(name)
