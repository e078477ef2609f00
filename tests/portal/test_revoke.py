"""Revoking a token from the portal by pasting it or its jti; other orgs' tokens are never found."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from portal.core.audit.models import AuditEntry
from portal.core.tokens.models import IssuedToken
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import basic, get_token, jti_of, make_client


@pytest.fixture
def billing(session, org):
    secret, client = make_client(session, org, name="billing")
    client.plaintext_secret = secret
    return client


def record(session, jti: str) -> IssuedToken:
    session.expire_all()
    return session.scalar(select(IssuedToken).where(IssuedToken.jti == jti))


def introspect(http, client, token: str) -> dict:
    response = http.post("/oauth/introspect", data={"token": token},
                         headers=basic(client.public_id, client.plaintext_secret))
    assert response.status_code == 200
    return response.get_json()


def field_error(response) -> str:
    match = re.search(r'<p class="error" id="token-error">([^<]*)</p>',
                      response.get_data(as_text=True))
    assert match, "no error on the token field"
    return html.unescape(match.group(1))


def test_page_has_a_labelled_field(owner):
    page = owner.get("/tokens/revoke").get_data(as_text=True)

    assert '<label for="token">Access token or jti</label>' in page
    assert "Revoke token" in page


def test_revoke_by_pasted_token_says_what_and_introspects_inactive(session, billing, editor):
    portal = editor
    token = get_token(portal.http, billing, billing.plaintext_secret)
    assert introspect(portal.http, billing, token)["active"] is True

    response = portal.post("/tokens/revoke", {"token": token})

    assert response.status_code == 302
    page = html.unescape(portal.get(response.headers["Location"]).get_data(as_text=True))
    row = record(session, jti_of(token))
    assert f"Revoked token {row.jti} of billing, which was valid until " \
           f"{row.expires_at:%Y-%m-%d %H:%M} UTC" in page
    assert row.revoked_at is not None and row.revoked_by == f"user:{portal.user.email}"
    assert introspect(portal.http, billing, token) == {"active": False}


def test_revoke_by_jti(owner, session, billing):
    token = get_token(owner.http, billing, billing.plaintext_secret)
    jti = jti_of(token)

    response = owner.post("/tokens/revoke", {"token": f"  {jti}\n"})

    assert response.status_code == 302
    assert record(session, jti).revoked_at is not None
    assert introspect(owner.http, billing, token) == {"active": False}


def test_revocation_is_audited_and_in_the_usage_history(owner, session, billing):
    token = get_token(owner.http, billing, billing.plaintext_secret)

    owner.post("/tokens/revoke", {"token": token})

    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "token:revoked"))
    assert entry.target_id == jti_of(token) and entry.actor == f"user:{owner.user.email}"
    assert entry.source_ip == "127.0.0.1"  # the request's address, with the actor
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_REVOKED))
    assert event.jti == jti_of(token) and event.client_id == billing.id


def test_revoking_twice_says_already_revoked(owner, session, billing):
    token = get_token(owner.http, billing, billing.plaintext_secret)
    owner.post("/tokens/revoke", {"token": token})
    first = record(session, jti_of(token)).revoked_at

    response = owner.post("/tokens/revoke", {"token": jti_of(token)})

    page = owner.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Token {jti_of(token)} of billing was already revoked" in page
    assert record(session, jti_of(token)).revoked_at == first


@pytest.mark.parametrize("value", ["no-such-jti", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 65])
def test_unknown_token_revokes_nothing(owner, session, billing, value):
    token = get_token(owner.http, billing, billing.plaintext_secret)

    response = owner.post("/tokens/revoke", {"token": value})

    assert response.status_code == 400
    assert field_error(response) == "No token of this organisation matches. Nothing was revoked."
    assert record(session, jti_of(token)).revoked_at is None


def test_another_orgs_token_looks_unknown_and_stays_active(owner, outsider, session, other_org):
    secret, theirs = make_client(session, other_org)
    theirs.plaintext_secret = secret
    token = get_token(owner.http, theirs, secret)

    by_token = owner.post("/tokens/revoke", {"token": token})
    by_jti = owner.post("/tokens/revoke", {"token": jti_of(token)})
    unknown = owner.post("/tokens/revoke", {"token": "no-such-jti"})

    for response in (by_token, by_jti):
        assert response.status_code == unknown.status_code == 400
        assert field_error(response) == field_error(unknown)
    assert record(session, jti_of(token)).revoked_at is None
    assert introspect(owner.http, theirs, token)["active"] is True


def test_empty_value_is_a_form_error(owner):
    response = owner.post("/tokens/revoke", {"token": "  "})

    assert response.status_code == 400
    assert field_error(response) == "Paste an access token or its jti."


def test_viewer_sees_the_page_but_cannot_revoke(viewer, session, billing):
    token = get_token(viewer.http, billing, billing.plaintext_secret)

    page = viewer.get("/tokens/revoke")
    response = viewer.post("/tokens/revoke", {"token": token})

    assert page.status_code == 200 and "read-only" in page.get_data(as_text=True)
    assert response.status_code == 403
    assert record(session, jti_of(token)).revoked_at is None


def test_revoke_without_csrf_token_is_refused(owner, session, billing):
    token = get_token(owner.http, billing, billing.plaintext_secret)

    response = owner.post("/tokens/revoke", {"token": token}, csrf=False)

    assert response.status_code == 400
    assert record(session, jti_of(token)).revoked_at is None
