"""API keys on /api/v1: roles (cumulative), 401/403 as RFC 6750 says, the per-key rate
limit, audit entries naming the key, and how keys are made (CLI, portal)."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from portal.core.api_keys.models import ApiKey, ApiKeyRole
from portal.core.audit import services as audit
from portal.core.audit.models import AuditEntry
from tests.api_v1.conftest import Caller, new_client_body
from tests.factories import TEST_ACTOR, bearer, get_token, make_api_key, make_client

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer lk_apikey_nope",
                                    "Bearer not-a-key"])
def test_missing_or_unknown_key_is_401_with_invalid_token(client, org, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/clients", headers=headers)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.mimetype == PROBLEM
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    body = response.get_json()
    assert body["status"] == 401 and body["type"].endswith("/invalid_token")


def test_revoked_key_is_401(client, session, org):
    from portal.core.api_keys import services as api_keys

    plaintext, key = make_api_key(session, org, role="admin")
    api_keys.revoke_api_key(session, org_id=org.id, key_id=key.id, actor=TEST_ACTOR)
    session.commit()
    assert client.get("/api/v1/clients", headers=bearer(plaintext)).status_code == 401


def test_introspect_key_cannot_read(client, session, org):
    plaintext, _ = make_api_key(session, org)  # the default role: introspect
    response = client.get("/api/v1/clients", headers=bearer(plaintext))
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.get_json()["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_viewer_reads_but_cannot_change(viewer, orders_api):
    assert viewer("GET", "/clients").status_code == 200
    response = viewer("POST", "/clients", new_client_body())
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.get_json()["code"] == "insufficient_scope"


def test_admin_reads_and_changes(admin, orders_api):
    assert admin("GET", "/clients").status_code == 200
    assert admin("POST", "/clients", new_client_body()).status_code == 201


def test_roles_are_cumulative():
    assert ApiKeyRole.ADMIN.allows(ApiKeyRole.VIEWER)
    assert ApiKeyRole.ADMIN.allows(ApiKeyRole.INTROSPECT)
    assert ApiKeyRole.VIEWER.allows(ApiKeyRole.INTROSPECT)
    assert not ApiKeyRole.VIEWER.allows(ApiKeyRole.ADMIN)
    assert not ApiKeyRole.INTROSPECT.allows(ApiKeyRole.VIEWER)


@pytest.mark.parametrize("role", ["introspect", "viewer", "admin"])
def test_every_role_still_introspects(client, session, org, role):
    secret, oauth_client = make_client(session, org)
    token = get_token(client, oauth_client, secret)
    plaintext, _ = make_api_key(session, org, role=role)
    response = client.post("/oauth/introspect", data={"token": token},
                           headers=bearer(plaintext))
    assert response.status_code == 200
    assert response.get_json()["active"] is True


def test_every_change_is_audited_naming_the_key(admin, session, org, orders_api):
    created = admin("POST", "/clients", new_client_body()).get_json()
    admin("POST", f"/clients/{created['client_id']}/disable")
    key = session.query(ApiKey).filter_by(org_id=org.id, name="admin key").one()
    entries = list(session.scalars(audit.entries_query(org_id=org.id, target_id=created[
        "client_id"])))
    assert [e.action for e in entries] == ["client:disabled", "client:created"]
    assert {e.actor for e in entries} == {f"api_key:{key.hint} admin key"}
    assert all(e.source_ip for e in entries)


@pytest.fixture
def app_config(request):
    return getattr(request, "param", {})


@pytest.mark.parametrize("app_config", [{"API_RATE_LIMIT": "3/minute"}], indirect=True)
def test_requests_past_the_per_key_limit_are_429_with_retry_after(client, session, org):
    first, _ = make_api_key(session, org, role="viewer")
    second, _ = make_api_key(session, org, role="viewer")
    statuses = [client.get("/api/v1/clients", headers=bearer(first)).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/api/v1/clients", headers=bearer(first))
    assert refused.mimetype == PROBLEM
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    # Per key: another key of the same org is not held back.
    assert client.get("/api/v1/clients", headers=bearer(second)).status_code == 200


def test_cli_creates_a_key_with_a_role(app, runner, session, org, orders_api):
    result = runner.invoke(args=["create-api-key", "--org", org.slug, "--name", "terraform",
                                 "--role", "admin", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["role"] == "admin"
    caller = Caller(app.test_client(), printed["api_key"])
    assert caller("POST", "/clients", new_client_body()).status_code == 201


def test_cli_refuses_an_unknown_role(runner, org):
    result = runner.invoke(args=["create-api-key", "--org", org.slug, "--name", "x",
                                 "--role", "owner"])
    assert result.exit_code == 2


def test_audit_actor_is_recorded_for_the_cli_key(runner, session, org):
    runner.invoke(args=["create-api-key", "--org", org.slug, "--name", "n", "--role", "viewer"])
    entry = session.query(AuditEntry).filter_by(org_id=org.id, action="api_key:created").one()
    assert entry.details["role"] == "viewer"
