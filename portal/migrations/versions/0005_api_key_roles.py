"""API keys get a role: introspect (what every existing key could do), viewer or admin

Revision ID: 0005_api_key_roles
Revises: 0004_apis
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_api_key_roles"
down_revision = "0004_apis"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys keep exactly what they could do: introspection and revocation.
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "role", sa.Enum("introspect", "viewer", "admin", name="apikeyrole",
                            native_enum=False, length=20),
            nullable=False, server_default="introspect"))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
