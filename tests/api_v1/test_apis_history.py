"""APIs, the audit log and signing keys through /api/v1."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from tests.api_v1.conftest import new_client_body
from tests.factories import age_next_key, make_api

NEW_API = {"identifier": "https://billing.example.com", "name": "Billing",
           "scopes": [{"name": "invoices:read", "description": "Read invoices"}],
           "default_ttl": 600, "max_ttl": 3600}


def test_api_crud_with_scopes(admin):
    created = admin("POST", "/apis", NEW_API)
    assert created.status_code == 201, created.get_json()
    api = created.get_json()
    assert api["owner"] == "org" and api["scopes"][0]["name"] == "invoices:read"
    path = f"/apis/{api['id']}"
    etag = admin("GET", path).headers["ETag"]

    patched = admin("PATCH", path, {"name": "Billing v2", "scopes": [
        {"name": "invoices:read", "description": "Read them"}, {"name": "invoices:write"}]},
        headers={"If-Match": etag})
    assert patched.status_code == 200, patched.get_json()
    assert [s["name"] for s in patched.get_json()["scopes"]] == ["invoices:read", "invoices:write"]
    assert admin("PATCH", path, {"name": "stale"}, headers={"If-Match": etag}).status_code == 412
    assert [a["name"] for a in admin("GET", "/apis").get_json()["items"]] == ["Billing v2"]
    assert admin("DELETE", path).status_code == 204
    assert admin("GET", path).status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({**NEW_API, "identifier": "not a uri"}, "identifier"),
    ({**NEW_API, "default_ttl": 7200, "max_ttl": 60}, "max_ttl"),
    ({**NEW_API, "scopes": [{"name": "has space"}]}, "scope"),
    ({**NEW_API, "owner": "deployment"}, "owner"),
])
def test_invalid_apis_are_400(admin, body, field):
    response = admin("POST", "/apis", body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["errors"][0]["field"].startswith(field)


def test_a_taken_identifier_is_refused(admin, session, other_org):
    make_api(session, other_org, identifier=NEW_API["identifier"])
    response = admin("POST", "/apis", NEW_API)
    assert response.status_code == 400
    assert "already taken" in response.get_json()["detail"]


def test_a_granted_api_cannot_be_deleted(admin, orders_api):
    admin("POST", "/clients", new_client_body())
    response = admin("DELETE", f"/apis/{orders_api.public_id}")
    assert response.status_code == HTTPStatus.CONFLICT
    assert "still granted" in response.get_json()["detail"]


def test_a_deployment_api_is_visible_but_not_changeable(admin, session):
    shared = make_api(session, None, identifier="https://shared.example.com")
    assert admin("GET", f"/apis/{shared.public_id}").get_json()["owner"] == "deployment"
    response = admin("PATCH", f"/apis/{shared.public_id}", {"name": "mine"})
    assert response.status_code == 403 and response.get_json()["code"] == "forbidden"


def test_audit_is_paged_and_filtered(admin, orders_api):
    created = admin("POST", "/clients", new_client_body()).get_json()
    admin("POST", f"/clients/{created['client_id']}/disable")
    admin("POST", f"/clients/{created['client_id']}/enable")

    page = admin("GET", "/audit?limit=2").get_json()
    assert [e["action"] for e in page["items"]] == ["client:enabled", "client:disabled"]
    rest = admin("GET", f"/audit?limit=2&cursor={page['next_cursor']}").get_json()
    assert rest["items"][0]["action"] == "client:created"
    only = admin("GET", "/audit?action=client:disabled").get_json()["items"]
    assert [e["action"] for e in only] == ["client:disabled"]
    assert len(admin("GET", "/audit?action=client:").get_json()["items"]) == 3
    assert admin("GET", "/audit?actor=nobody").get_json()["items"] == []
    assert admin("GET", "/audit?start=yesterday").status_code == 400


def test_signing_keys_list_and_rotate(admin, session, org):
    keys = admin("GET", "/signing-keys").get_json()["items"]
    assert sorted(k["state"] for k in keys) == ["active", "next"]
    assert all("d" not in k["public_jwk"] for k in keys)  # public halves only
    age_next_key(session, org)
    rotated = admin("POST", "/signing-keys/rotate", {})
    assert rotated.status_code == 200, rotated.get_json()
    assert rotated.get_json()["state"] == "active"
    too_soon = admin("POST", "/signing-keys/rotate", {})
    assert too_soon.status_code == HTTPStatus.CONFLICT
    assert too_soon.get_json()["code"] == "rotation_too_soon"
    assert admin("POST", "/signing-keys/rotate", {"alg": "HS256"}).status_code == 400
