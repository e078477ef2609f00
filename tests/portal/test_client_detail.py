"""A client's page: settings, edits, secrets, tokens, enable/disable, delete; roles, tenancy."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from portal.core.apis.grants import GrantedApi
from portal.core.apis.models import Api
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import Client, ClientSecret
from portal.core.db import get_session
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageKind
from portal.core.usage.services import record_event
from tests.factories import API_IDENTIFIER, basic, get_token, issue, make_api, make_client
from tests.portal.test_clients import hidden_inputs, input_value

FUTURE = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
PAST = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
EDIT = {
    "name": "billing-sync v2",
    "description": "now hourly",
    "ttl": "1200",
    "custom_claims": '{"tier": "gold"}',
    "auth_methods": ["client_secret_basic"],
}


@pytest.fixture
def acme_client(session, org) -> tuple[str, Client]:
    """A client of org Acme with its first secret, granted ``read write`` of
    ``https://api.example.com``; the org also has ``https://admin.example.com``."""
    made = make_client(session, org, name="billing-sync")
    make_api(session, org, identifier=ADMIN_API, name="Admin API", scopes=("admin",))
    return made


ADMIN_API = "https://admin.example.com"


def grants(**scopes: list[str]) -> dict[str, Any]:
    """Form fields ticking these APIs (``main``: api.example.com, ``admin``: admin.example.com)
    with these scopes; the first one named is the default."""
    ids = {name: get_session().scalar(select(Api.public_id).where(Api.identifier == identifier))
           for name, identifier in (("main", API_IDENTIFIER), ("admin", ADMIN_API))}
    fields: dict[str, Any] = {"api": [ids[n] for n in scopes],
                              "default_api": ids[next(iter(scopes))]}
    fields.update({f"scopes-{ids[n]}": names for n, names in scopes.items()})
    return fields


EDIT_GRANTS = {"main": ["read", "write"], "admin": ["admin"]}


def url(c: Client, suffix: str = "") -> str:
    return f"/clients/{c.public_id}{suffix}"


def token_status(http: Any, c: Client, secret: str) -> tuple[int, dict[str, Any]]:
    response = http.post("/oauth/token", data={"grant_type": "client_credentials"},
                         headers=basic(c.public_id, secret))
    return response.status_code, response.get_json()


def introspect(http: Any, c: Client, secret: str, token: str) -> dict[str, Any]:
    response = http.post("/oauth/introspect", data={"token": token},
                         headers=basic(c.public_id, secret))
    return dict(response.get_json())


def add_secret(portal: Any, c: Client, *, follow_redirects: bool = False, **data: Any) -> Any:
    """POST the page's add-secret form (with its nonce)."""
    page = portal.get(url(c)).get_data(as_text=True)
    fields = hidden_inputs(page, url(c, "/secrets"))
    return portal.http.post(url(c, "/secrets"), data={**fields, **data},
                            follow_redirects=follow_redirects)


def flashes(response: Any) -> str:
    return html.unescape(" ".join(re.findall(r'<p class="flash[^"]*"[^>]*>([^<]*)</p>',
                                             response.get_data(as_text=True))))


# -- the page -------------------------------------------------------------------------


def test_detail_shows_settings_secrets_tokens_usage_and_audit(owner, session, acme_client):
    secret, c = acme_client
    token = get_token(owner.http, c, secret)
    jti = introspect(owner.http, c, secret, token)["jti"]
    record_event(session, kind=UsageKind.TOKEN_FAILED, org_id=c.org_id, client_id=c.id)
    session.commit()

    page = html.unescape(owner.get(url(c)).get_data(as_text=True))

    assert "<h1>billing-sync" in page
    assert "https://api.example.com" in page and "3600 seconds" in page
    assert f"…{secret[-4:]}" in page and 'badge-active">active' in page
    assert jti in page and "token endpoint" in page
    assert 'id="client-usage-table"' in page
    assert re.search(r"<td>1</td><td>1</td>", page)  # this hour: 1 issued, 1 failed
    assert "client:created" in page
    for label in ("Edit settings", "Disable", "Delete client", "Add secret",
                  "Revoke all tokens", "Set expiry"):
        assert label in page
    assert secret not in page


def test_viewer_sees_the_page_without_change_buttons(viewer, session, acme_client):
    secret, c = acme_client
    get_token(viewer.http, c, secret)

    response = viewer.get(url(c))

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "billing-sync" in page and "Active tokens" in page and "Audit trail" in page
    for label in ("Edit settings", "Disable", "Delete client", "Add secret",
                  "Revoke all tokens", "Set expiry", ">Revoke<"):
        assert label not in page
    assert 'name="nonce"' not in page


def test_unknown_client_is_404(owner):
    assert owner.get("/clients/lkc_nothing_here").status_code == 404


def test_usage_link_only_when_the_usage_page_exists(app, owner, acme_client):
    _, c = acme_client
    page = owner.get(url(c)).get_data(as_text=True)

    has_usage = "portal.usage" in app.view_functions
    assert (f"/usage?client={c.public_id}" in page) is has_usage


# -- editing --------------------------------------------------------------------------


def test_edit_form_is_filled_with_the_current_settings(owner, acme_client):
    _, c = acme_client

    page = owner.get(url(c, "/edit")).get_data(as_text=True)

    assert 'value="billing-sync"' in page
    main = c.grants[0].api.public_id
    assert re.search(rf'name="api" value="{main}" id="grant-{main}" checked', page)
    for scope in ("read", "write"):
        assert re.search(rf'name="scopes-{main}" value="{scope}" id="[^"]+" checked', page)
    assert re.search(rf'name="default_api" value="{main}" id="default-{main}" checked', page)
    assert 'name="kind"' not in page


def test_edit_saves_and_audits_the_changed_fields(owner, session, acme_client):
    _, c = acme_client

    response = owner.form_post(url(c, "/edit"), {**EDIT, **grants(**EDIT_GRANTS)})

    assert response.status_code == 302
    session.expire_all()
    c = session.get(Client, c.id)
    assert c.name == "billing-sync v2" and c.token_ttl == 1200
    assert c.granted == {API_IDENTIFIER: GrantedApi(API_IDENTIFIER, ("read", "write")),
                         ADMIN_API: GrantedApi(ADMIN_API, ("admin",))}
    assert c.custom_claims == {"tier": "gold"} and c.auth_methods == ["client_secret_basic"]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "client:updated"))
    assert set(entry.details["changed"]) == {
        "name", "description", "grants", "token_ttl", "custom_claims", "auth_methods"}
    assert entry.details["grants"] == {API_IDENTIFIER: ["read", "write"], ADMIN_API: ["admin"]}
    assert entry.target_id == c.public_id and entry.actor == f"user:{owner.user.email}"
    assert entry.source_ip == "127.0.0.1"  # the request's address, with the actor


def test_edited_settings_apply_to_new_tokens(owner, session, acme_client):
    secret, c = acme_client
    owner.form_post(url(c, "/edit"), {**EDIT, **grants(admin=["admin"], main=["read"])})

    status, body = token_status(owner.http, c, secret)

    assert status == 200 and body["expires_in"] == 1200
    claims = introspect(owner.http, c, secret, body["access_token"])
    assert claims["scope"] == "admin" and claims["aud"] == ADMIN_API  # the new default API


def test_edit_with_nothing_changed_writes_no_audit_entry(owner, session, acme_client):
    _, c = acme_client

    unchanged = {"name": "billing-sync", "ttl": "3600", **grants(main=["read", "write"]),
                 "auth_methods": ["client_secret_basic", "client_secret_post"]}

    response = owner.form_post(url(c, "/edit"), unchanged, follow_redirects=True)

    assert "Nothing changed." in flashes(response)
    assert session.scalar(select(AuditEntry).where(AuditEntry.action == "client:updated")) is None


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"name": ""}, "name", "give the client a name"),
    ({"ttl": "299"}, "ttl", "between 300 and 86400"),
    ({"ttl": "86401"}, "ttl", "between 300 and 86400"),
    ({"ttl": "soon"}, "ttl", "not a valid integer"),
    ({"custom_claims": "{"}, "custom_claims", "not valid JSON"),
    ({"custom_claims": '{"aud": "x"}'}, "custom_claims", "reserved claim cannot be set: aud"),
    ({"api": [], "default_api": ""}, "grants", "choose at least one API"),
])
def test_edit_validates_like_create(owner, session, acme_client, changes, field, message):
    _, c = acme_client
    if field == "grants":  # nothing ticked at all
        changes = {**changes, **{k: [] for k in grants(**EDIT_GRANTS) if k.startswith("scopes-")}}

    response = owner.form_post(url(c, "/edit"), {**EDIT, **grants(**EDIT_GRANTS), **changes})

    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    error = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    assert error and message.lower() in error.group(1).lower()
    session.expire_all()
    assert session.get(Client, c.id).name == "billing-sync"
    assert session.scalar(select(AuditEntry).where(AuditEntry.action == "client:updated")) is None


# -- secrets --------------------------------------------------------------------------


def test_add_secret_shows_it_once_and_it_works(session, acme_client, editor):
    portal = editor
    old_secret, c = acme_client

    response = add_secret(portal, c)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    new_secret = input_value(page, "client-secret")
    assert input_value(page, "client-id") == c.public_id
    assert new_secret != old_secret and "will not be shown again" in page
    assert token_status(portal.http, c, new_secret)[0] == 200
    assert token_status(portal.http, c, old_secret)[0] == 200  # rotation without downtime


def test_add_secret_with_an_expiry(owner, session, acme_client):
    _, c = acme_client

    response = add_secret(owner, c, expires_at=FUTURE)

    assert response.status_code == 200
    session.expire_all()
    newest = session.scalars(select(ClientSecret).order_by(ClientSecret.id.desc())).first()
    assert newest.expires_at is not None
    assert newest.expires_at.strftime("%Y-%m-%dT%H:%M") == FUTURE


@pytest.mark.parametrize(("expires_at", "message"), [
    (PAST, "The expiry must be in the future."),
    ("next tuesday", "Enter the expiry as a date and time"),
])
def test_add_secret_with_a_bad_expiry_is_a_form_error(owner, session, acme_client, expires_at,
                                                      message):
    _, c = acme_client

    response = add_secret(owner, c, expires_at=expires_at)

    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    session.expire_all()
    assert len(session.get(Client, c.id).secrets) == 1


def test_resubmitted_add_secret_form_shows_nothing(owner, session, acme_client):
    _, c = acme_client
    page = owner.get(url(c)).get_data(as_text=True)
    fields = hidden_inputs(page, url(c, "/secrets"))
    first = owner.http.post(url(c, "/secrets"), data=fields)
    secret = input_value(first.get_data(as_text=True), "client-secret")

    again = owner.http.post(url(c, "/secrets"), data=fields, follow_redirects=True)

    assert "That form was already submitted; the secret is only shown once." in flashes(again)
    assert secret not in again.get_data(as_text=True)
    session.expire_all()
    assert len(session.get(Client, c.id).secrets) == 2


def test_sixth_active_secret_is_refused(owner, session, acme_client):
    _, c = acme_client
    for _ in range(4):
        assert add_secret(owner, c).status_code == 200

    response = add_secret(owner, c, follow_redirects=True)

    assert "A client can have at most 5 active secrets; revoke or expire one first." in flashes(
        response)
    assert 'id="client-secret"' not in response.get_data(as_text=True)
    session.expire_all()
    assert len(session.get(Client, c.id).secrets) == 5


def test_revoked_secret_no_longer_authenticates(owner, session, acme_client):
    secret, c = acme_client
    secret_id = c.secrets[0].id

    response = owner.post(url(c, f"/secrets/{secret_id}/revoke"), follow_redirects=True)

    assert f"Secret …{secret[-4:]} revoked." in flashes(response)
    status, body = token_status(owner.http, c, secret)
    assert status == 401 and body["error"] == "invalid_client"
    assert 'badge-revoked">revoked' in response.get_data(as_text=True)


def test_set_expiry_of_a_secret(owner, session, acme_client):
    _, c = acme_client
    secret_id = c.secrets[0].id

    response = owner.post(url(c, f"/secrets/{secret_id}/expiry"), {"expires_at": FUTURE})

    assert response.status_code == 302
    session.expire_all()
    assert session.get(ClientSecret, secret_id).expires_at.strftime("%Y-%m-%dT%H:%M") == FUTURE
    assert session.scalar(select(AuditEntry).where(
        AuditEntry.action == "client:secret:expiry_set")) is not None


@pytest.mark.parametrize(("expires_at", "message"), [
    (PAST, "The expiry must be in the future."),
    ("", "Choose the date and time the secret expires."),
    ("31/12/2030", "Enter the expiry as a date and time"),
])
def test_set_expiry_in_the_past_is_a_form_error(owner, session, acme_client, expires_at,
                                                message):
    _, c = acme_client
    secret_id = c.secrets[0].id

    response = owner.post(url(c, f"/secrets/{secret_id}/expiry"), {"expires_at": expires_at})

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert re.search(rf'id="expiry-{secret_id}-error"[^>]*>{re.escape(message)}', page)
    session.expire_all()
    assert session.get(ClientSecret, secret_id).expires_at is None


def test_expiry_of_a_revoked_secret_cannot_be_set(owner, session, acme_client):
    secret, c = acme_client
    secret_id = c.secrets[0].id
    owner.post(url(c, f"/secrets/{secret_id}/revoke"))

    response = owner.post(url(c, f"/secrets/{secret_id}/expiry"), {"expires_at": FUTURE})

    assert response.status_code == 400


def test_secret_of_another_client_is_404(owner, session, org, acme_client):
    _, c = acme_client
    _, other = make_client(session, org)
    their_secret = other.secrets[0].id

    assert owner.post(url(c, f"/secrets/{their_secret}/revoke")).status_code == 404
    assert owner.post(url(c, f"/secrets/{their_secret}/expiry"),
                      {"expires_at": FUTURE}).status_code == 404


# -- tokens ---------------------------------------------------------------------------


def test_revoked_token_introspects_inactive(owner, session, acme_client):
    secret, c = acme_client
    token = get_token(owner.http, c, secret)
    jti = introspect(owner.http, c, secret, token)["jti"]

    response = owner.post(url(c, f"/tokens/{jti}/revoke"), follow_redirects=True)

    assert f"Token {jti} revoked" in flashes(response)
    assert introspect(owner.http, c, secret, token) == {"active": False}
    revoked = session.scalars(select(UsageEvent).where(
        UsageEvent.kind == UsageKind.TOKEN_REVOKED, UsageEvent.jti == jti)).all()
    assert len(revoked) == 1 and revoked[0].client_id == c.id
    section = response.get_data(as_text=True).split("Active tokens")[1].split("Usage")[0]
    assert f"Token {jti} revoked" in section  # the message shows in the section acted on
    assert f"<code>{jti}</code>" not in section


def test_token_of_another_client_is_404(owner, session, org, acme_client):
    secret, c = acme_client
    other_secret, other = make_client(session, org)
    token = get_token(owner.http, other, other_secret)
    jti = introspect(owner.http, other, other_secret, token)["jti"]

    response = owner.post(url(c, f"/tokens/{jti}/revoke"))

    assert response.status_code == 404
    assert introspect(owner.http, other, other_secret, token)["active"] is True


def test_revoke_all_tokens(owner, session, acme_client):
    secret, c = acme_client
    tokens = [get_token(owner.http, c, secret) for _ in range(3)]
    issue(session, c, now=utcnow() - timedelta(hours=2))  # already expired: not counted

    response = owner.post(url(c, "/tokens/revoke-all"), follow_redirects=True)

    assert "Revoked 3 active tokens of billing-sync." in flashes(response)
    assert all(introspect(owner.http, c, secret, t) == {"active": False} for t in tokens)
    assert "No active tokens" in response.get_data(as_text=True)


def test_active_tokens_are_paginated(owner, session, acme_client):
    _, c = acme_client
    for _ in range(27):
        issue(session, c)

    first = owner.get(url(c)).get_data(as_text=True)
    second = owner.get(url(c, "?page=2")).get_data(as_text=True)

    revoke_token = re.compile(r'/tokens/[^/"]+/revoke"')
    assert len(revoke_token.findall(first)) == 25
    assert len(revoke_token.findall(second)) == 2
    assert 'rel="next"' in first and 'rel="prev"' in second


# -- disable, enable, delete -----------------------------------------------------------


def test_disabled_client_gets_no_tokens_and_can_be_enabled(owner, session, acme_client):
    secret, c = acme_client

    response = owner.post(url(c, "/disable"), follow_redirects=True)

    assert "billing-sync disabled" in flashes(response)
    assert 'badge-disabled">disabled' in response.get_data(as_text=True)
    status, body = token_status(owner.http, c, secret)
    assert status == 400 and body["error"] == "unauthorized_client"

    response = owner.post(url(c, "/enable"), follow_redirects=True)

    assert "billing-sync enabled" in flashes(response)
    assert token_status(owner.http, c, secret)[0] == 200
    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.target_id == c.public_id)).all()
    assert {"client:disabled", "client:enabled"} <= set(actions)


def test_delete_asks_for_the_name_first(owner, acme_client):
    _, c = acme_client

    page = owner.get(url(c, "/delete")).get_data(as_text=True)

    assert "Type the client&#39;s name to confirm" in page or "Type the client's name" in page


def test_delete_with_the_wrong_name_deletes_nothing(owner, session, acme_client):
    _, c = acme_client

    response = owner.form_post(url(c, "/delete"), {"confirm_name": "billing"})

    assert response.status_code == 400
    assert "nothing was deleted" in response.get_data(as_text=True)
    assert owner.get(url(c)).status_code == 200


def test_delete_removes_the_client_and_its_tokens(owner, session, org, acme_client):
    secret, c = acme_client
    token = get_token(owner.http, c, secret)
    witness_secret, witness = make_client(session, org)  # introspects the deleted client's token

    response = owner.form_post(url(c, "/delete"), {"confirm_name": "billing-sync"},
                               follow_redirects=True)

    assert response.request.path == "/clients"
    assert "Client billing-sync deleted" in flashes(response)
    assert owner.get(url(c)).status_code == 404
    assert introspect(owner.http, witness, witness_secret, token) == {"active": False}
    assert token_status(owner.http, c, secret)[0] == 401


# -- roles and tenancy ----------------------------------------------------------------


def post_routes(c: Client) -> list[str]:
    secret_id = c.secrets[0].id
    return [
        "/clients/new", url(c, "/edit"), url(c, "/secrets"),
        url(c, f"/secrets/{secret_id}/expiry"), url(c, f"/secrets/{secret_id}/revoke"),
        url(c, "/tokens/some-jti/revoke"), url(c, "/tokens/revoke-all"),
        url(c, "/disable"), url(c, "/enable"), url(c, "/delete"),
    ]


def test_viewer_gets_403_on_every_post(viewer, session, acme_client):
    secret, c = acme_client

    for route in post_routes(c):
        response = viewer.post(route, {"name": "x", "expires_at": FUTURE,
                                       "confirm_name": "billing-sync"})
        assert response.status_code == 403, route

    session.expire_all()
    assert session.get(Client, c.id).enabled and len(session.get(Client, c.id).secrets) == 1
    assert token_status(viewer.http, c, secret)[0] == 200


def test_viewer_gets_403_on_the_form_pages(viewer, acme_client):
    _, c = acme_client

    for route in ("/clients/new", url(c, "/edit"), url(c, "/delete")):
        assert viewer.get(route).status_code == 403, route


def test_outsider_gets_404_on_every_client_url(outsider, session, acme_client):
    secret, c = acme_client
    token = get_token(outsider.http, c, secret)
    jti = introspect(outsider.http, c, secret, token)["jti"]
    secret_id = c.secrets[0].id

    for route in (url(c), url(c, "/edit"), url(c, "/delete")):
        assert outsider.get(route).status_code == 404, route
    for route in [*post_routes(c)[1:], url(c, f"/tokens/{jti}/revoke")]:
        response = outsider.post(route, {"name": "x", "expires_at": FUTURE,
                                         "confirm_name": "billing-sync"})
        assert response.status_code == 404, route

    session.expire_all()
    kept = session.get(Client, c.id)
    assert kept.enabled and kept.name == "billing-sync"
    assert session.get(ClientSecret, secret_id).revoked_at is None
    assert introspect(outsider.http, c, secret, token)["active"] is True
