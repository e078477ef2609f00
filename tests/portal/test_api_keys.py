"""The API keys page: create (shown once, stored hashed) and revoke."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from portal.core.api_keys.models import ApiKey
from portal.core.audit.models import AuditEntry
from portal.core.types import utcnow
from tests.factories import bearer, get_token, make_api_key, make_client

SHOWN_KEY = re.compile(r'<input id="api-key" type="text" readonly value="([^"]+)"')


def create(portal, name: str = "terraform-ci"):
    return portal.form_post("/api-keys", {"name": name})


def shown_key(response) -> str:
    match = SHOWN_KEY.search(response.get_data(as_text=True))
    assert match, "no API key on the page"
    return html.unescape(match.group(1))


def key_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(ApiKey))


def introspect_with(http, api_key: str, token: str):
    return http.post("/oauth/introspect", data={"token": token}, headers=bearer(api_key))


@pytest.mark.parametrize("portal_name", ["owner", "admin", "viewer"])
def test_list_shows_the_orgs_keys(request, session, org, other_org, portal_name):
    portal = request.getfixturevalue(portal_name)
    _plain, ours = make_api_key(session, org)
    _plain, theirs = make_api_key(session, other_org)
    ours.last_used_at = utcnow()
    session.commit()

    response = portal.get("/api-keys")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'<tr id="api-key-{ours.id}">' in page and f"…{ours.hint}" in page
    assert f'<tr id="api-key-{theirs.id}">' not in page
    assert '<span class="badge badge-active">active</span>' in page
    assert ("Create an API key" in page) == (portal_name != "viewer")


def test_empty_state(owner):
    assert "No API keys yet" in owner.get("/api-keys").get_data(as_text=True)


def test_create_shows_the_key_once_and_stores_only_its_hash(session, editor):
    portal = editor

    response = create(portal)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    plaintext = shown_key(response)
    assert plaintext.startswith("lk_apikey_")
    page = html.unescape(response.get_data(as_text=True))
    assert "will not be shown again" in page
    assert f"Authorization: Bearer {plaintext}" in page and "/oauth/introspect" in page
    key = session.scalar(select(ApiKey))
    assert key.name == "terraform-ci" and key.created_by == f"user:{portal.user.email}"
    assert plaintext.encode() != key.key_hash and plaintext[-4:] == key.hint
    assert plaintext not in portal.get("/api-keys").get_data(as_text=True)


def test_created_key_introspects_tokens_of_the_org(owner, session, org):
    secret, client = make_client(session, org)
    token = get_token(owner.http, client, secret)

    plaintext = shown_key(create(owner))

    assert introspect_with(owner.http, plaintext, token).get_json()["active"] is True


def test_reloading_the_created_page_creates_and_shows_nothing(owner, session):
    page = owner.get("/api-keys").get_data(as_text=True)
    nonce = re.search(r'name="nonce" type="hidden" value="([^"]+)"', page).group(1)
    data = {"name": "ci", "nonce": nonce, "csrf_token": owner.token}
    first = owner.http.post("/api-keys", data=data)
    assert first.status_code == 200

    again = owner.http.post("/api-keys", data=data)

    assert again.status_code == 302 and again.headers["Location"].endswith("/api-keys")
    assert key_count(session) == 1
    assert "only shown once" in owner.get("/api-keys").get_data(as_text=True)


@pytest.mark.parametrize(("name", "message"), [
    ("", "Give the key a name"),
    ("x" * 201, "Field cannot be longer than 200 characters"),
])
def test_bad_name_is_a_form_error(owner, session, name, message):
    response = create(owner, name)

    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert key_count(session) == 0


def test_create_is_audited(owner, session):
    create(owner)

    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api_key:created"))
    assert entry.actor == f"user:{owner.user.email}" and entry.details["name"] == "terraform-ci"
    assert entry.source_ip == "127.0.0.1"  # the request's address, with the actor


def test_revoked_key_is_refused_at_introspection(session, org, editor):
    portal = editor
    secret, client = make_client(session, org)
    token = get_token(portal.http, client, secret)
    plaintext, key = make_api_key(session, org)
    assert introspect_with(portal.http, plaintext, token).status_code == 200

    response = portal.post(f"/api-keys/{key.id}/revoke")

    assert response.status_code == 302
    page = portal.get(response.headers["Location"]).get_data(as_text=True)
    assert f"API key test key (…{key.hint}) revoked" in page
    assert '<span class="badge badge-revoked">revoked</span>' in page
    assert introspect_with(portal.http, plaintext, token).status_code == 401


def test_revoking_twice_says_already_revoked(owner, session, org):
    _plain, key = make_api_key(session, org)
    owner.post(f"/api-keys/{key.id}/revoke")

    response = owner.post(f"/api-keys/{key.id}/revoke")

    assert "was already revoked" in owner.get(response.headers["Location"]).get_data(as_text=True)


def test_another_orgs_key_is_not_found(owner, session, other_org):
    plaintext, theirs = make_api_key(session, other_org)

    response = owner.post(f"/api-keys/{theirs.id}/revoke")

    assert response.status_code == 404
    session.expire_all()
    assert session.get(ApiKey, theirs.id).revoked_at is None


def test_unknown_key_is_not_found(owner):
    assert owner.post("/api-keys/999999/revoke").status_code == 404


def test_viewer_cannot_create_or_revoke(viewer, session, org):
    _plain, key = make_api_key(session, org)

    created = viewer.post("/api-keys", {"name": "sneaky"})
    revoked = viewer.post(f"/api-keys/{key.id}/revoke")

    assert created.status_code == revoked.status_code == 403
    assert key_count(session) == 1
    session.expire_all()
    assert session.get(ApiKey, key.id).revoked_at is None


def test_posts_without_csrf_token_are_refused(owner, session, org):
    _plain, key = make_api_key(session, org)

    created = owner.post("/api-keys", {"name": "ci"}, csrf=False)
    revoked = owner.post(f"/api-keys/{key.id}/revoke", csrf=False)

    assert created.status_code == revoked.status_code == 400
    assert key_count(session) == 1
    session.expire_all()
    assert session.get(ApiKey, key.id).revoked_at is None


def test_create_picks_the_role_and_the_page_shows_it_with_a_curl_example(owner, session):
    response = owner.form_post("/api-keys", {"name": "terraform", "role": "admin"})

    assert response.status_code == 200
    plaintext = shown_key(response)
    page = html.unescape(response.get_data(as_text=True))
    assert "/api/v1/clients" in page and f"Authorization: Bearer {plaintext}" in page
    key = session.scalar(select(ApiKey))
    assert key.role.value == "admin"
    listing = owner.get("/api-keys").get_data(as_text=True)
    assert '<span class="badge">admin</span>' in listing
    assert 'id="api-key-curl"' in listing and "/api/v1/clients" in listing
    assert 'href="/api/v1/docs"' in listing


def test_an_unknown_role_is_a_form_error(owner, session):
    response = owner.form_post("/api-keys", {"name": "x", "role": "owner"})
    assert response.status_code == 400
    assert key_count(session) == 0
