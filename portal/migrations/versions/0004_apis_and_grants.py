"""APIs as registered objects: apis, api_scopes, client_grants; clients lose scopes/audiences

Every client's free-text audiences and scopes become APIs and grants, so that no
client can get anything it could not get before:

- each distinct audience of an org's clients becomes one API of that org, with
  the scopes of those clients;
- an audience that clients of more than one org were allowed becomes a
  deployment API (shared by every org, told apart by ``oid``) and is reported
  (here and by ``latchkey check``);
- each client is granted each of its audiences with its scopes; its first
  audience is its default API (what a token request without ``audience`` gets).

Revision ID: 0004_apis
Revises: 0003
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0004_apis"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTOR = "migration:0002_apis"


def upgrade() -> None:
    op.create_table(
        "apis",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_ttl", sa.Integer(), nullable=True),
        sa.Column("max_ttl", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True),
                  server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_apis_org_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apis")),
        sa.UniqueConstraint("identifier", name=op.f("uq_apis_identifier")),
        sa.UniqueConstraint("public_id", name=op.f("uq_apis_public_id")),
    )
    op.create_index(op.f("ix_apis_org_id"), "apis", ["org_id"], unique=False)
    op.create_table(
        "api_scopes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["api_id"], ["apis.id"], name=op.f("fk_api_scopes_api_id_apis"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_scopes")),
        sa.UniqueConstraint("api_id", "name", name=op.f("uq_api_scopes_api_id")),
    )
    op.create_index(op.f("ix_api_scopes_api_id"), "api_scopes", ["api_id"], unique=False)
    op.create_table(
        "client_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("api_id", sa.Integer(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True),
                  server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.ForeignKeyConstraint(["api_id"], ["apis.id"], name=op.f("fk_client_grants_api_id_apis")),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"],
                                name=op.f("fk_client_grants_client_id_clients"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_grants")),
        sa.UniqueConstraint("client_id", "api_id", name=op.f("uq_client_grants_client_id")),
    )
    op.create_index(op.f("ix_client_grants_api_id"), "client_grants", ["api_id"], unique=False)
    op.create_index("ix_client_grants_default", "client_grants", ["client_id"], unique=True,
                    sqlite_where=sa.text("is_default"), postgresql_where=sa.text("is_default"))

    for line in _move_audiences(op.get_bind()):
        print(f"latchkey: {line}", file=sys.stderr)  # noqa: T201 (the operator must see it)

    # SQLite (3.35+) drops these columns in place: a batch copy of `clients` would
    # DROP TABLE it, and with foreign keys on that deletes every secret and token.
    op.drop_column("clients", "scopes")
    op.drop_column("clients", "audiences")


def downgrade() -> None:
    op.add_column("clients", sa.Column("scopes", sa.JSON(), nullable=False,
                                       server_default=sa.text("'[]'")))
    op.add_column("clients", sa.Column("audiences", sa.JSON(), nullable=False,
                                       server_default=sa.text("'[]'")))
    bind = op.get_bind()
    clients = sa.table("clients", sa.column("id", sa.Integer), sa.column("scopes", sa.JSON),
                       sa.column("audiences", sa.JSON))
    grants = sa.table("client_grants", sa.column("client_id", sa.Integer),
                      sa.column("api_id", sa.Integer), sa.column("scopes", sa.JSON),
                      sa.column("is_default", sa.Boolean), sa.column("id", sa.Integer))
    apis = sa.table("apis", sa.column("id", sa.Integer), sa.column("identifier", sa.String))
    rows = bind.execute(
        sa.select(grants.c.client_id, apis.c.identifier, grants.c.scopes)
        .join_from(grants, apis, apis.c.id == grants.c.api_id)
        .order_by(grants.c.client_id, grants.c.is_default.desc(), grants.c.id))
    merged: dict[int, tuple[list[str], list[str]]] = {}
    for client_id, identifier, scopes in rows:
        audiences, names = merged.setdefault(client_id, ([], []))
        audiences.append(identifier)
        names.extend(s for s in (scopes or []) if s not in names)
    for client_id, (audiences, names) in merged.items():
        bind.execute(clients.update().where(clients.c.id == client_id)
                     .values(scopes=names, audiences=audiences))
    op.drop_index("ix_client_grants_default", table_name="client_grants")
    op.drop_index(op.f("ix_client_grants_api_id"), table_name="client_grants")
    op.drop_table("client_grants")
    op.drop_index(op.f("ix_api_scopes_api_id"), table_name="api_scopes")
    op.drop_table("api_scopes")
    op.drop_index(op.f("ix_apis_org_id"), table_name="apis")
    op.drop_table("apis")


# -- moving the data ------------------------------------------------------------------------


def _public_id() -> str:
    """As ``portal.core.crypto.new_public_id("api_")`` (migrations import no app code)."""
    return "api_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


def _name(identifier: str) -> str:
    """A readable name for an API known only by its identifier (host and path)."""
    try:
        parts = urlsplit(identifier)
        name = (parts.netloc + parts.path).rstrip("/") if parts.netloc else identifier
    except ValueError:
        name = identifier
    return (name or identifier)[:200]


def _move_audiences(bind: Any) -> list[str]:
    """Create the APIs and grants; returns what the operator must know, one line each."""
    now = datetime.now(UTC)
    orgs = sa.table("organizations", sa.column("id", sa.Integer), sa.column("slug", sa.String))
    clients = sa.table("clients", sa.column("id", sa.Integer), sa.column("org_id", sa.Integer),
                       sa.column("client_id", sa.String), sa.column("name", sa.String),
                       sa.column("scopes", sa.JSON), sa.column("audiences", sa.JSON))
    apis = sa.table("apis", sa.column("id", sa.Integer), sa.column("public_id", sa.String),
                    sa.column("org_id", sa.Integer), sa.column("identifier", sa.String),
                    sa.column("name", sa.String), sa.column("description", sa.Text),
                    sa.column("created_at", sa.DateTime(timezone=True)),
                    sa.column("updated_at", sa.DateTime(timezone=True)))
    api_scopes = sa.table("api_scopes", sa.column("api_id", sa.Integer),
                          sa.column("name", sa.String), sa.column("description", sa.String))
    grants = sa.table("client_grants", sa.column("client_id", sa.Integer),
                      sa.column("api_id", sa.Integer), sa.column("scopes", sa.JSON),
                      sa.column("is_default", sa.Boolean),
                      sa.column("created_at", sa.DateTime(timezone=True)))
    audit = sa.table("audit_entries", sa.column("org_id", sa.Integer),
                     sa.column("actor", sa.String), sa.column("action", sa.String),
                     sa.column("target_type", sa.String), sa.column("target_id", sa.String),
                     sa.column("details", sa.JSON), sa.column("source_ip", sa.String),
                     sa.column("occurred_at", sa.DateTime(timezone=True)))

    slugs = dict(bind.execute(sa.select(orgs.c.id, orgs.c.slug)).all())
    rows = bind.execute(
        sa.select(clients.c.id, clients.c.org_id, clients.c.client_id, clients.c.name,
                  clients.c.scopes, clients.c.audiences).order_by(clients.c.id)).all()

    # identifier -> org id -> the scopes of that org's clients allowed it (first seen first)
    wanted: dict[str, dict[int, list[str]]] = {}
    for row in rows:
        scopes = _as_list(row.scopes)
        for audience in dict.fromkeys(_as_list(row.audiences)):
            names = wanted.setdefault(audience, {}).setdefault(row.org_id, [])
            names.extend(s for s in scopes if s not in names)

    report: list[str] = []
    api_ids: dict[str, int] = {}
    for identifier, per_org in wanted.items():
        shared = len(per_org) > 1
        org_id = None if shared else next(iter(per_org))
        scopes: list[str] = []
        for names in per_org.values():
            scopes.extend(s for s in names if s not in scopes)
        description = (
            "Made from an audience that clients of several organisations were allowed: "
            "shared by every organisation; its resource servers must check the token's oid."
            if shared else "")
        api_id = bind.execute(sa.insert(apis).values(
            public_id=_public_id(), org_id=org_id, identifier=identifier, name=_name(identifier),
            description=description, created_at=now, updated_at=now,
        ).returning(apis.c.id)).scalar_one()
        api_ids[identifier] = api_id
        if scopes:
            bind.execute(sa.insert(api_scopes),
                         [{"api_id": api_id, "name": s, "description": ""} for s in scopes])
        details = {"identifier": identifier, "scopes": scopes, "migrated": True}
        if shared:
            org_slugs = sorted(slugs.get(o, str(o)) for o in per_org)
            bind.execute(sa.insert(audit).values(
                org_id=None, actor=ACTOR, action="api:created", target_type="api",
                target_id=identifier, details={**details, "owner": "deployment",
                                               "orgs": org_slugs},
                source_ip="", occurred_at=now))
            report.append(
                f"audience {identifier} was allowed to clients of {len(per_org)} "
                f"organisations ({', '.join(org_slugs)}); it is now a deployment API shared "
                "by every organisation, so its resource servers must check the token's oid "
                "(`latchkey check` lists it again)")
        else:
            bind.execute(sa.insert(audit).values(
                org_id=org_id, actor=ACTOR, action="api:created", target_type="api",
                target_id=identifier, details={**details, "owner": "org"},
                source_ip="", occurred_at=now))
        if not _is_absolute_uri(identifier):
            report.append(
                f"audience {identifier!r} is not an absolute URI; it was kept as an API "
                "identifier so existing clients keep working (`latchkey check` lists it)")

    for row in rows:
        audiences = list(dict.fromkeys(_as_list(row.audiences)))
        scopes = list(dict.fromkeys(_as_list(row.scopes)))
        for position, audience in enumerate(audiences):
            bind.execute(sa.insert(grants).values(
                client_id=row.id, api_id=api_ids[audience], scopes=scopes,
                is_default=position == 0, created_at=now))
        if len(audiences) > 1:
            report.append(
                f"client {row.client_id} ({row.name}, org {slugs.get(row.org_id)}) had "
                f"{len(audiences)} audiences: a token request without audience now gets "
                f"{audiences[0]} only (its default API); ask for the others with audience=")
    return report


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):  # a JSON column read as text by an older driver
        value = json.loads(value)
    return [str(v) for v in (value or [])]


def _is_absolute_uri(value: str) -> bool:
    """As ``portal.core.apis.services.is_absolute_uri``, enough to report old audiences."""
    scheme, sep, rest = value.partition(":")
    return bool(sep and rest and scheme[:1].isalpha() and "#" not in value
                and all(c.isalnum() or c in "+-." for c in scheme)
                and not any(c.isspace() for c in value))
