"""Migration 0002 on a database holding today's clients (free-text audiences and scopes).

Each test migrates a fresh database to 0001, inserts organisations, clients and
secrets as the 0001 schema has them, upgrades to head and checks that every
client can still get exactly what it could: each audience it had, with each of
its scopes; and that an audience clients of two orgs shared became a
deployment API, reported by the migration and by ``latchkey check``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select

from portal import create_app
from portal.cli import cli
from portal.core import crypto, settings
from portal.core.apis.grants import GrantedApi
from portal.core.apis.models import Api, ClientGrant
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import Client
from portal.core.db import get_engine, get_session
from portal.core.signing_keys.services import ensure_org_keys
from portal.migrate import alembic_config, upgrade
from tests.conftest import base_config, postgres_database
from tests.factories import basic

SHARED = "https://shared.example.com"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

#: Today's clients: (org slug, client id, scopes, audiences).
TODAYS_CLIENTS = [
    ("acme", "lkc_acme_billing", ["orders:read", "orders:write"],
     ["https://api.acme.test", "https://billing.acme.test"]),
    ("acme", "lkc_acme_reader", ["orders:read", "reports:read"], ["https://api.acme.test"]),
    ("acme", "lkc_acme_shared", ["platform:use"], [SHARED]),
    ("beta", "lkc_beta_worker", ["jobs:run"], ["https://jobs.beta.test"]),
    ("beta", "lkc_beta_shared", ["platform:use", "platform:admin"], [SHARED]),
    ("beta", "lkc_beta_legacy", [], ["legacy-aud"]),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database of its own with no schema at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with postgres_database("latchkey_migrate") as url:
        yield url


@pytest.fixture
def old_app(empty_url: str) -> Iterator[Flask]:
    """An app on a database at 0001 holding today's clients (each secret is ``<id>-secret``)."""
    app = create_app(base_config(empty_url))
    with app.app_context():
        upgrade("0001")
        _insert_todays_rows()
        yield app
        get_session().close()
        get_engine().dispose()


def _insert_todays_rows() -> None:
    engine = get_engine()
    meta = sa.MetaData()
    orgs, clients, client_secrets = (sa.Table(name, meta, autoload_with=engine)
                                     for name in ("organizations", "clients", "client_secrets"))
    with engine.begin() as conn:
        org_ids = {}
        for slug in ("acme", "beta"):
            org_ids[slug] = conn.execute(sa.insert(orgs).values(
                public_id=f"org_{slug}", slug=slug, name=slug.title(), created_at=NOW,
            )).inserted_primary_key[0]
        for slug, client_id, scopes, audiences in TODAYS_CLIENTS:
            row_id = conn.execute(sa.insert(clients).values(
                org_id=org_ids[slug], client_id=client_id, name=client_id[4:], description="",
                kind="org", user_id=None, scopes=scopes, audiences=audiences,
                auth_methods=["client_secret_basic", "client_secret_post"], token_ttl=3600,
                custom_claims={}, jwks=None, enabled=True, created_at=NOW, updated_at=NOW,
            )).inserted_primary_key[0]
            conn.execute(sa.insert(client_secrets).values(
                client_id=row_id, hint="cret", created_at=NOW,
                secret_hash=crypto.hmac_digest(settings.hmac_key(), f"{client_id}-secret")))


def _upgrade_to_head(app: Flask) -> None:
    upgrade("head")
    session = get_session()
    for org_id in session.scalars(sa.text("SELECT id FROM organizations")):
        ensure_org_keys(session, org_id=org_id, alg=None)
    session.commit()


def _token(app: Flask, client_id: str, **params: str) -> Any:
    http = app.test_client()
    return http.post("/oauth/token", data={"grant_type": "client_credentials", **params},
                     headers=basic(client_id, f"{client_id}-secret"))


def _claims(response: Any) -> dict[str, Any]:
    assert response.status_code == HTTPStatus.OK, response.get_json()
    return dict(jwt.decode(response.get_json()["access_token"],
                           options={"verify_signature": False}))


def test_each_audience_of_an_org_becomes_one_api_of_that_org(old_app):
    _upgrade_to_head(old_app)

    session = get_session()
    owners = {api.identifier: (api.org.slug if api.org else None, api.scope_names)
              for api in session.scalars(select(Api))}
    assert owners == {
        "https://api.acme.test": ("acme", ["orders:read", "orders:write", "reports:read"]),
        "https://billing.acme.test": ("acme", ["orders:read", "orders:write"]),
        SHARED: (None, ["platform:use", "platform:admin"]),
        "https://jobs.beta.test": ("beta", ["jobs:run"]),
        "legacy-aud": ("beta", []),
    }


def test_each_client_is_granted_its_audiences_with_its_scopes(old_app):
    _upgrade_to_head(old_app)

    session = get_session()
    for _slug, client_id, scopes, audiences in TODAYS_CLIENTS:
        client = session.scalar(select(Client).where(Client.public_id == client_id))
        assert client.granted == {a: GrantedApi(a, tuple(scopes)) for a in audiences}
        assert client.default_audience == audiences[0]


def test_every_client_still_gets_each_audience_and_scope_it_could(old_app):
    _upgrade_to_head(old_app)

    for _slug, client_id, scopes, audiences in TODAYS_CLIENTS:
        for audience in audiences:
            claims = _claims(_token(old_app, client_id, audience=audience))
            assert claims["aud"] == audience and claims["scope"] == " ".join(scopes)
            for scope in scopes:
                one = _claims(_token(old_app, client_id, audience=audience, scope=scope))
                assert one["scope"] == scope
        if len(audiences) > 1:  # all of them at once, as before
            http = old_app.test_client()
            both = http.post("/oauth/token", headers=basic(client_id, f"{client_id}-secret"),
                             data={"grant_type": "client_credentials", "audience": audiences})
            claims = _claims(both)
            assert claims["aud"] == audiences and claims["scope"] == " ".join(scopes)


def test_a_request_without_audience_gets_the_first_one(old_app):
    _upgrade_to_head(old_app)

    claims = _claims(_token(old_app, "lkc_acme_billing"))

    assert claims["aud"] == "https://api.acme.test"
    assert claims["scope"] == "orders:read orders:write"


def test_nothing_new_is_granted(old_app):
    _upgrade_to_head(old_app)

    # reports:read exists on the acme API (another client had it), but this client never did.
    refused = _token(old_app, "lkc_acme_billing", scope="reports:read")
    other_org = _token(old_app, "lkc_beta_worker", audience="https://api.acme.test")

    assert refused.get_json()["error"] == "invalid_scope"
    assert other_org.get_json()["error"] == "invalid_target"


def test_an_audience_of_two_orgs_becomes_a_deployment_api_and_is_reported(old_app, capfd):
    _upgrade_to_head(old_app)

    err = capfd.readouterr().err
    assert f"audience {SHARED} was allowed to clients of 2 organisations (acme, beta)" in err
    assert "must check the token's oid" in err
    for client_id, oid in (("lkc_acme_shared", "org_acme"), ("lkc_beta_shared", "org_beta")):
        claims = _claims(_token(old_app, client_id, audience=SHARED))
        assert claims["oid"] == oid
    entry = get_session().scalar(select(AuditEntry).where(AuditEntry.target_id == SHARED))
    assert entry.org_id is None and entry.details["orgs"] == ["acme", "beta"]


def test_the_migration_reports_what_changes_and_what_is_malformed(old_app, capfd):
    _upgrade_to_head(old_app)

    err = capfd.readouterr().err
    assert "client lkc_acme_billing (acme_billing, org acme) had 2 audiences" in err
    assert "'legacy-aud' is not an absolute URI" in err


def test_check_lists_the_shared_api_afterwards(old_app):
    _upgrade_to_head(old_app)

    result = old_app.test_cli_runner().invoke(cli, ["check"])

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"shared: deployment API {SHARED} (shared.example.com) is granted to clients of 2 orgs "
        "(acme, beta): its resource servers must check the token's oid",
        "identifier: API 'legacy-aud' (beta) is not an absolute URI",
    ]


def test_the_clients_columns_are_gone_and_secrets_kept(old_app):
    _upgrade_to_head(old_app)

    columns = {c["name"] for c in sa.inspect(get_engine()).get_columns("clients")}
    assert "scopes" not in columns and "audiences" not in columns
    assert get_session().scalar(sa.text("SELECT count(*) FROM client_secrets")) == 6
    assert get_session().scalar(select(sa.func.count()).select_from(ClientGrant)) == 7


def test_downgrade_gives_the_clients_their_audiences_and_scopes_back(old_app):
    from alembic import command

    _upgrade_to_head(old_app)

    command.downgrade(alembic_config(), "0001")

    with get_engine().connect() as conn:
        rows = conn.execute(sa.text("SELECT client_id, scopes, audiences FROM clients")).all()
    back = {r[0]: (_json(r[1]), _json(r[2])) for r in rows}
    assert back == {c: (s, a) for _slug, c, s, a in TODAYS_CLIENTS}


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value
