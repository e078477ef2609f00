"""The signing keys page: states, the org's JWKS, and rotating now."""

from __future__ import annotations

import html
import json
import re

import jwt
import pytest
from sqlalchemy import select

from portal.core.audit.models import AuditEntry
from portal.core.db import get_session
from portal.core.orgs.models import Organization
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState, SigningKey
from tests.factories import age_next_key, get_token, make_client


def org_keys(session, org) -> dict[KeyState, list[SigningKey]]:
    session.expire_all()
    keys: dict[KeyState, list[SigningKey]] = {}
    for key in session.scalars(select(SigningKey).where(SigningKey.org_id == org.id)
                               .order_by(SigningKey.id)):
        keys.setdefault(key.state, []).append(key)
    return keys


def jwks_kids(http) -> set[str]:
    return {k["kid"] for k in http.get("/.well-known/jwks.json").get_json()["keys"]}


def rotate(portal, alg: str = "RS256", *, aged: bool = True):
    """Rotate through the page's form; ``aged``: as if the next key had been published
    long enough (rotation refuses a key published too recently)."""
    if aged:
        session = get_session()
        for org in session.scalars(select(Organization)):
            age_next_key(session, org)
    return portal.form_post("/keys", {"alg": alg}, action="/keys/rotate")


@pytest.mark.parametrize("portal_name", ["owner", "admin", "viewer"])
def test_page_lists_the_orgs_keys_and_jwks(request, session, org, portal_name):
    portal = request.getfixturevalue(portal_name)
    keys = org_keys(session, org)
    active, upcoming = keys[KeyState.ACTIVE][0], keys[KeyState.NEXT][0]

    response = portal.get("/keys")

    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    assert f'<tr id="key-{active.kid}">' in page and f'<tr id="key-{upcoming.kid}">' in page
    assert '<span class="badge badge-active">active</span>' in page
    assert '<span class="badge badge-next">next</span>' in page
    jwks = json.loads(re.search(r'<textarea id="org-jwks"[^>]*>(.*?)</textarea>', page,
                                re.S).group(1))
    assert [k["kid"] for k in jwks["keys"]] == [active.kid, upcoming.kid]
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    assert 'value="http://localhost/.well-known/jwks.json"' in page


def test_page_does_not_show_another_orgs_keys(owner, session, other_org):
    theirs = [k.kid for ks in org_keys(session, other_org).values() for k in ks]

    page = owner.get("/keys").get_data(as_text=True)

    assert theirs and not any(kid in page for kid in theirs)


def test_viewer_sees_no_rotate_form_and_cannot_rotate(viewer, session, org):
    before = org_keys(session, org)[KeyState.ACTIVE][0].kid

    page = viewer.get("/keys").get_data(as_text=True)
    response = viewer.post("/keys/rotate", {"alg": "RS256"})

    assert "Rotate signing key" not in page
    assert response.status_code == 403
    assert org_keys(session, org)[KeyState.ACTIVE][0].kid == before


def test_rotation_changes_the_active_kid_and_keeps_both_published(session, org, editor):
    portal = editor
    secret, client = make_client(session, org)
    token = get_token(portal.http, client, secret)  # signed by the old key
    old = org_keys(session, org)[KeyState.ACTIVE][0].kid
    upcoming = org_keys(session, org)[KeyState.NEXT][0].kid
    assert {old, upcoming} <= jwks_kids(portal.http)

    response = rotate(portal)

    assert response.status_code == 302
    keys = org_keys(session, org)
    assert keys[KeyState.ACTIVE][0].kid == upcoming
    assert [k.kid for k in keys[KeyState.RETIRED]] == [old]
    new_next = keys[KeyState.NEXT][0].kid
    assert {old, upcoming, new_next} <= jwks_kids(portal.http)
    assert jwt.get_unverified_header(get_token(portal.http, client, secret))["kid"] == upcoming
    assert jwt.get_unverified_header(token)["kid"] == old
    page = html.unescape(portal.get(response.headers["Location"]).get_data(as_text=True))
    assert f"Rotated: key {upcoming} (RS256) now signs new tokens." in page
    assert f"The old key {old} stays in the JWKS until" in page


def test_rotation_sets_the_algorithm_of_the_new_next_key(owner, session, org):
    rotate(owner, "ES256")

    keys = org_keys(session, org)
    assert keys[KeyState.NEXT][0].alg == "ES256"
    assert keys[KeyState.ACTIVE][0].alg == "RS256"


def test_rotation_is_audited(owner, session, org):
    rotate(owner)

    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "signing_key:rotated"))
    assert entry.actor == f"user:{owner.user.email}"
    assert entry.source_ip == "127.0.0.1"  # the request's address, with the actor
    assert entry.target_id == org_keys(session, org)[KeyState.ACTIVE][0].kid


def test_unknown_algorithm_is_a_form_error(owner, session, org):
    before = org_keys(session, org)[KeyState.ACTIVE][0].kid

    response = rotate(owner, "HS256")

    assert response.status_code == 400
    assert "Not a valid choice" in response.get_data(as_text=True)
    assert org_keys(session, org)[KeyState.ACTIVE][0].kid == before


def test_rotation_leaves_other_orgs_alone(owner, session, other_org):
    before = org_keys(session, other_org)[KeyState.ACTIVE][0].kid

    rotate(owner)

    assert org_keys(session, other_org)[KeyState.ACTIVE][0].kid == before


def test_rotate_form_defaults_to_the_current_algorithm(owner):
    page = owner.get("/keys").get_data(as_text=True)

    assert re.search(r'<option selected value="RS256">|<option value="RS256" selected>', page)
    assert '<label for="alg">' in page


def test_rotate_without_csrf_token_is_refused(owner, session, org):
    before = org_keys(session, org)[KeyState.ACTIVE][0].kid

    response = owner.post("/keys/rotate", {"alg": "RS256"}, csrf=False)

    assert response.status_code == 400
    assert org_keys(session, org)[KeyState.ACTIVE][0].kid == before


def test_rotation_too_soon_is_refused_with_when_it_can_happen(owner, session, org):
    before = org_keys(session, org)
    ready = signing_keys.ready_at(before[KeyState.NEXT][0])

    response = rotate(owner, aged=False)

    assert response.status_code == 409
    page = html.unescape(response.get_data(as_text=True))
    assert f"can start signing only after {ready:%Y-%m-%d %H:%M:%S} UTC" in page
    assert 'role="alert" id="rotate-error"' in page
    after = org_keys(session, org)
    assert after[KeyState.ACTIVE][0].kid == before[KeyState.ACTIVE][0].kid
    assert KeyState.RETIRED not in after


def test_page_says_when_a_recently_published_next_key_can_start_signing(owner, session, org):
    ready = signing_keys.ready_at(org_keys(session, org)[KeyState.NEXT][0])

    page = owner.get("/keys").get_data(as_text=True)

    assert f'it can start signing after <time datetime="{ready.isoformat()}">' in page


def test_page_says_nothing_about_waiting_once_the_next_key_may_sign(owner, session, org):
    age_next_key(session, org)

    page = owner.get("/keys").get_data(as_text=True)

    assert 'id="rotate-ready"' not in page


def test_second_rotation_right_after_the_first_is_refused(owner, session, org):
    assert rotate(owner).status_code == 302
    active = org_keys(session, org)[KeyState.ACTIVE][0].kid

    response = rotate(owner, aged=False)

    assert response.status_code == 409
    assert org_keys(session, org)[KeyState.ACTIVE][0].kid == active


def test_rotate_form_defaults_to_the_algorithm_the_next_key_has(owner, session, org):
    rotate(owner, "ES256")  # the new next key is ES256: the org moves to ES256

    page = owner.get("/keys").get_data(as_text=True)

    assert re.search(r'<option selected value="ES256">|<option value="ES256" selected>', page)
