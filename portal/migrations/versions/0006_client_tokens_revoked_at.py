"""Clients get tokens_revoked_at: "revoke all" also covers tokens whose record is not written yet

Revision ID: 0006_tokens_revoked_at
Revises: 0005_api_key_roles
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_tokens_revoked_at"
down_revision = "0005_api_key_roles"
branch_labels = None
depends_on = None


# In place on SQLite too (3.35+): a batch copy of `clients` would cascade-delete the
# rows that reference it (secrets, grants, tokens).
def upgrade() -> None:
    op.add_column("clients", sa.Column("tokens_revoked_at", sa.DateTime(timezone=True),
                                       nullable=True))


def downgrade() -> None:
    op.drop_column("clients", "tokens_revoked_at")
