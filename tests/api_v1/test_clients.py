"""Clients, secrets and tokens through /api/v1: the portal's rules, problem+json errors,
cursor pages and If-Match."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from http import HTTPStatus

import pytest

from portal.core.clients.models import Client
from portal.core.types import utcnow
from tests.api_v1.conftest import new_client_body
from tests.factories import API_IDENTIFIER, basic, bearer, decode

PROBLEM = "application/problem+json"


def create(admin, **overrides):
    response = admin("POST", "/clients", new_client_body(**overrides))
    assert response.status_code == HTTPStatus.CREATED, response.get_json()
    return response.get_json()


def token_status(http, client_id: str, secret: str) -> int:
    return http.post("/oauth/token", data={"grant_type": "client_credentials"},
                     headers=basic(client_id, secret)).status_code


def test_create_returns_the_secret_once(admin, client, orders_api):
    created = create(admin, custom_claims={"tenant": "t1"}, ttl=600)
    assert created["client_secret"].startswith("lk_secret_")
    assert created["grants"] == [{"api": API_IDENTIFIER, "scopes": ["read"]}]
    assert created["ttl"] == 600 and created["custom_claims"] == {"tenant": "t1"}
    assert token_status(client, created["client_id"], created["client_secret"]) == 200
    shown = admin("GET", f"/clients/{created['client_id']}")
    assert "client_secret" not in shown.get_json()
    assert created["client_secret"] not in shown.get_data(as_text=True)


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "grants": [{"api": API_IDENTIFIER}], "colour": "red"}, "colour"),
    ({"grants": [{"api": API_IDENTIFIER}]}, "name"),
    ({"name": "x", "grants": []}, "grants"),
    ({"name": "x", "grants": [{"api": "https://unknown.example"}]}, "grants"),
    ({"name": "x", "grants": [{"api": API_IDENTIFIER, "scopes": ["admin"]}]}, "grants"),
    ({"name": "x", "grants": [{"api": API_IDENTIFIER}], "ttl": 5}, "ttl"),
    ({"name": "x", "grants": [{"api": API_IDENTIFIER}], "custom_claims": {"iss": "x"}},
     "custom_claims"),
    ({"name": "x", "grants": [{"api": API_IDENTIFIER}], "auth_methods": ["private_key_jwt"]},
     "jwks"),
    ({"name": "x", "grants": [{"api": API_IDENTIFIER}], "kind": "user"}, "user"),
])
def test_invalid_clients_are_400_naming_the_field(admin, session, orders_api, body, field):
    response = admin("POST", "/clients", body)
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.get_json()
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert field in [e["field"].split(".")[0] for e in problem["errors"]], problem
    assert session.query(Client).count() == 0  # nothing half-written


@pytest.mark.parametrize("raw", [b"not json", b"[]", b"null", b'"text"', b"{"])
def test_a_body_that_is_not_an_object_is_400(admin, raw):
    response = admin.http.post("/api/v1/clients", data=raw, headers={
        "Authorization": f"Bearer {admin.key}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.mimetype == PROBLEM


def test_list_is_paged_with_a_cursor_and_filtered(admin, orders_api):
    made = [create(admin, name=f"svc {i}") for i in range(3)]
    create(admin, name="worker", kind="service")
    admin("POST", f"/clients/{made[0]['client_id']}/disable")

    first = admin("GET", "/clients?limit=2").get_json()
    second = admin("GET", f"/clients?limit=2&cursor={first['next_cursor']}").get_json()
    names = [c["name"] for c in first["items"] + second["items"]]
    assert names == ["worker", "svc 2", "svc 1", "svc 0"] and second["next_cursor"] is None
    assert [c["name"] for c in admin("GET", "/clients?kind=service").get_json()["items"]] \
        == ["worker"]
    assert [c["name"] for c in admin("GET", "/clients?enabled=false").get_json()["items"]] \
        == ["svc 0"]
    assert len(admin("GET", "/clients?name=SVC").get_json()["items"]) == 3


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "cursor=%%%", "cursor=aWQ6LTE",
                                   "kind=robot", "enabled=maybe", "colour=red"])
def test_bad_list_queries_are_400(admin, query):
    response = admin("GET", f"/clients?{query}")
    assert response.status_code == 400 and response.mimetype == PROBLEM


def test_patch_honours_if_match(admin, orders_api):
    created = create(admin)
    path = f"/clients/{created['client_id']}"
    etag = admin("GET", path).headers["ETag"]

    changed = admin("PATCH", path, {"name": "renamed", "ttl": 900}, headers={"If-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["name"] == "renamed" and changed.get_json()["ttl"] == 900
    stale = admin("PATCH", path, {"name": "again"}, headers={"If-Match": etag})
    assert stale.status_code == HTTPStatus.PRECONDITION_FAILED and stale.mimetype == PROBLEM
    assert admin("GET", path).get_json()["name"] == "renamed"
    assert admin("PATCH", path, {"description": "no precondition"}).status_code == 200


def test_patch_refuses_unknown_fields_and_bad_values(admin, orders_api):
    path = f"/clients/{create(admin)['client_id']}"
    assert admin("PATCH", path, {"kind": "service"}).status_code == 400
    bad = admin("PATCH", path, {"grants": [{"api": API_IDENTIFIER, "scopes": ["nope"]}]})
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["field"] == "grants"


def test_disable_enable_and_delete(admin, client, orders_api):
    created = create(admin)
    path = f"/clients/{created['client_id']}"
    assert admin("POST", path + "/disable").get_json()["enabled"] is False
    assert token_status(client, created["client_id"], created["client_secret"]) != 200
    assert admin("POST", path + "/enable").get_json()["enabled"] is True
    assert admin("DELETE", path).status_code == 204
    assert admin("GET", path).status_code == 404
    assert admin("GET", path).mimetype == PROBLEM


def test_secrets_add_expire_revoke_and_the_sixth_is_409(admin, client, orders_api):
    created = create(admin)
    path = f"/clients/{created['client_id']}/secrets"
    later = (utcnow() + timedelta(days=7)).isoformat()
    added = admin("POST", path, {"expires_at": later})
    assert added.status_code == 201 and added.get_json()["client_secret"].startswith("lk_")
    for _ in range(3):
        assert admin("POST", path, {}).status_code == 201
    sixth = admin("POST", path, {})
    assert sixth.status_code == HTTPStatus.CONFLICT and sixth.mimetype == PROBLEM
    assert "at most 5 active secrets" in sixth.get_json()["detail"]

    listed = admin("GET", path).get_json()["items"]
    assert len(listed) == 5 and all("client_secret" not in s for s in listed)
    secret_id = added.get_json()["id"]
    moved = admin("PATCH", f"{path}/{secret_id}",
                  {"expires_at": (utcnow() + timedelta(days=1)).isoformat()})
    assert moved.status_code == 200
    past = admin("PATCH", f"{path}/{secret_id}", {"expires_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.get_json()["errors"][0]["field"] == "expires_at"
    assert admin("PATCH", f"{path}/{secret_id}", {"expires_at": 12}).status_code == 400
    revoked = admin("DELETE", f"{path}/{secret_id}")
    assert revoked.get_json()["status"] == "revoked"
    assert token_status(client, created["client_id"], added.get_json()["client_secret"]) == 401
    assert admin("DELETE", f"{path}/999999").status_code == 404


def test_put_secret_regenerates_one_and_revokes_the_others(admin, client, orders_api):
    created = create(admin)
    admin("POST", f"/clients/{created['client_id']}/secrets", {})
    response = admin("PUT", f"/clients/{created['client_id']}/secret", {})
    assert response.status_code == 200
    new = response.get_json()["client_secret"]
    assert token_status(client, created["client_id"], created["client_secret"]) == 401
    assert token_status(client, created["client_id"], new) == 200
    statuses = [s["status"] for s in
                admin("GET", f"/clients/{created['client_id']}/secrets").get_json()["items"]]
    assert statuses == ["active", "revoked", "revoked"]


def test_mint_list_and_revoke_tokens(admin, client, orders_api):
    created = create(admin, grants=[{"api": API_IDENTIFIER, "scopes": ["read", "write"]}])
    path = f"/clients/{created['client_id']}/tokens"
    minted = admin("POST", path, {"scopes": ["read"], "ttl": 300, "claims": {"tenant": "t9"}})
    assert minted.status_code == 201, minted.get_json()
    body = minted.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    claims = decode(body["access_token"])
    assert claims["tenant"] == "t9" and claims["scope"] == "read" and claims["jti"] == body["jti"]
    admin("POST", path, {})
    assert len(admin("GET", path).get_json()["items"]) == 2

    assert admin("DELETE", f"/tokens/{body['jti']}").status_code == 204
    introspected = client.post("/oauth/introspect", data={"token": body["access_token"]},
                               headers=basic(created["client_id"], created["client_secret"]))
    assert introspected.get_json() == {"active": False}
    assert admin("DELETE", path).get_json() == {"revoked": 1}
    assert admin("GET", path).get_json()["items"] == []
    assert admin("DELETE", "/tokens/unknown-jti").status_code == 404


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"claims": {"iss": "x", "sub": "y"}}, "claims", ["iss", "sub"]),
    ({"scopes": ["write"]}, "scopes", ["write"]),
    ({"audience": ["https://elsewhere.example"]}, "audience", []),
    ({"ttl": 10}, "ttl", []),
])
def test_mint_refusals_are_400_naming_the_field(admin, orders_api, body, field, words):
    created = create(admin)
    response = admin("POST", f"/clients/{created['client_id']}/tokens", body)
    assert response.status_code == 400, response.get_json()
    problem = response.get_json()
    assert problem["errors"][0]["field"] == field
    assert all(w in problem["detail"] for w in words)


def test_usage_events_as_json_and_csv(admin, client, orders_api):
    created = create(admin)
    admin("POST", f"/clients/{created['client_id']}/tokens", {})
    events = admin("GET", "/usage/events").get_json()["items"]
    assert [e["kind"] for e in events] == ["token_issued"]
    assert events[0]["client_id"] == created["client_id"]
    as_csv = admin("GET", "/usage/events", headers={"Accept": "text/csv"})
    assert as_csv.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True))))
    assert rows[0][:3] == ["occurred_at", "client_id", "client_name"]
    assert rows[1][1] == created["client_id"] and rows[1][3] == "token_issued"
    series = admin("GET", "/usage?bucket=hour").get_json()
    assert sum(b["issued"] for b in series["items"]) == 1 and len(series["items"]) >= 24
    too_long = admin("GET", "/usage?bucket=hour&start=2026-01-01T00:00:00Z"
                            "&end=2026-06-01T00:00:00Z")
    assert too_long.status_code == 400 and too_long.get_json()["errors"][0]["field"] == "bucket"
    assert admin("GET", "/usage?start=0.5").status_code == 400


def test_usage_events_name_the_caller_and_the_tokens_client(admin, admin_key, client,
                                                            orders_api):
    created = create(admin)
    token = admin("POST", f"/clients/{created['client_id']}/tokens", {}).get_json()
    client.post("/oauth/introspect", data={"token": token["access_token"]},
                headers=bearer(admin_key))

    (introspected,) = [e for e in admin("GET", "/usage/events").get_json()["items"]
                       if e["kind"] == "token_introspected"]

    assert introspected["client_id"] == created["client_id"]
    assert introspected["caller"].startswith("api_key:")
    assert introspected["caller_name"]  # the key's name, as the portal shows it
    assert introspected["scope"] == "read" and introspected["audience"] == API_IDENTIFIER


def test_a_change_sent_without_a_body_takes_its_defaults_or_names_what_is_missing(
        admin, client, orders_api):
    created = create(admin)

    regenerated = admin("PUT", f"/clients/{created['client_id']}/secret")  # no body at all
    minted = admin("POST", f"/clients/{created['client_id']}/tokens")
    refused = admin("POST", "/clients")

    assert regenerated.status_code == 200, regenerated.get_json()
    assert token_status(client, created["client_id"],
                        regenerated.get_json()["client_secret"]) == 200
    assert minted.status_code == 201, minted.get_json()
    assert refused.status_code == 400
    assert [e["field"] for e in refused.get_json()["errors"]] == ["name", "grants"]
