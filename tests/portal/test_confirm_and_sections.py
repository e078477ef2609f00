"""Destructive actions ask first without JavaScript (a confirmation page), actions on the
long client page land back at their section with the message there, and the small
items of issue 16 (lines 2, 5 and 8)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.core.api_keys.models import ApiKey
from portal.core.clients import services as clients
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.users.models import Membership
from tests.factories import TEST_ACTOR, issue, make_api_key, make_client, make_user
from tests.portal.conftest import hidden_fields


def confirmation_form(page: str, action: str) -> str:
    match = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>',
                      page, re.S)
    assert match, f"no POST form to {action}"
    assert 'name="csrf_token"' in match.group(1)
    return match.group(1)


def destructive_actions(session, org):
    """(confirmation URL, what the page must say, cancel link, is it still undone?) of each."""
    _, c = make_client(session, org, name="billing-sync")
    secret = c.secrets[0]
    access_token = issue(session, c)
    token = session.scalar(select(IssuedToken).where(IssuedToken.client_id == c.id))
    assert token is not None and access_token
    _plain, key = make_api_key(session, org)
    member = make_user(session, org=org, role="viewer", email="leaving@example.com")
    membership = session.scalar(select(Membership).where(Membership.user_id == member.id))
    detail = f"/clients/{c.public_id}"
    return [
        (f"{detail}/disable", "Disable billing-sync?", detail,
         lambda: (session.refresh(c), c.enabled)[1]),
        (f"{detail}/tokens/revoke-all", "Revoke every active token", f"{detail}#tokens",
         lambda: (session.refresh(token), token.revoked_at is None)[1]),
        (f"{detail}/tokens/{token.jti}/revoke", f"Revoke token {token.jti}", f"{detail}#tokens",
         lambda: (session.refresh(token), token.revoked_at is None)[1]),
        (f"{detail}/secrets/{secret.id}/revoke", f"Revoke secret …{secret.hint}",
         f"{detail}#secrets", lambda: (session.refresh(secret), secret.revoked_at is None)[1]),
        ("/keys/rotate?alg=ES256", "Rotate the signing key now?", "/keys", lambda: True),
        (f"/members/{membership.id}/remove", "Remove leaving@example.com", "/members",
         lambda: session.get(Membership, membership.id) is not None),
        (f"/api-keys/{key.id}/revoke", "Revoke API key", "/api-keys",
         lambda: (session.refresh(key), key.revoked_at is None)[1]),
    ]


def test_every_destructive_action_has_a_confirmation_page_that_changes_nothing(
        owner, session, org):
    for url, question, back, unchanged in destructive_actions(session, org):
        response = owner.get(url)

        assert response.status_code == 200, url
        page = response.get_data(as_text=True)
        assert question in page, url
        confirmation_form(page, url.split("?")[0])
        assert f'href="{back}">Cancel</a>' in page, url
        assert unchanged(), f"GET {url} changed something"


def test_rotate_confirmation_carries_the_chosen_algorithm_and_nothing_else(owner):
    page = owner.get("/keys/rotate?alg=ES256&evil=1").get_data(as_text=True)
    form = confirmation_form(page, "/keys/rotate")
    assert '<input type="hidden" name="alg" value="ES256">' in form
    assert "evil" not in form

    page = owner.get("/keys/rotate?alg=none").get_data(as_text=True)
    assert 'name="alg"' not in confirmation_form(page, "/keys/rotate")


def test_buttons_lead_to_the_confirmation_page_without_scripts(owner, session, org):
    _, c = make_client(session, org, name="billing-sync")
    issue(session, c)

    page = owner.get(f"/clients/{c.public_id}").get_data(as_text=True)

    for action in (f"/clients/{c.public_id}/disable", f"/clients/{c.public_id}/tokens/revoke-all",
                   f"/clients/{c.public_id}/secrets/{c.secrets[0].id}/revoke"):
        form = re.search(rf'<form method="get" action="{re.escape(action)}"[^>]*>', page)
        assert form, action
        assert "data-confirm-post=" in form.group(0)  # scripts ask in a dialog instead


def test_confirmation_pages_are_for_those_who_may_act(viewer, admin, session, org):
    _, c = make_client(session, org)
    member = make_user(session, org=org, role="viewer")
    membership = session.scalar(select(Membership).where(Membership.user_id == member.id))

    assert viewer.get(f"/clients/{c.public_id}/disable").status_code == 403
    assert admin.get(f"/members/{membership.id}/remove").status_code == 403
    assert admin.get(f"/clients/{c.public_id}/disable").status_code == 200


def test_confirming_acts_and_lands_at_the_section_with_the_message(owner, session, org):
    _, c = make_client(session, org, name="billing-sync")
    secret = c.secrets[0]

    response = owner.post(f"/clients/{c.public_id}/secrets/{secret.id}/revoke")

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/clients/{c.public_id}#secrets")
    page = owner.get(f"/clients/{c.public_id}").get_data(as_text=True)
    section = page.split('id="secrets"')[1].split("</section>")[0]
    assert f"Secret …{secret.hint} revoked." in section
    top = page.split('id="settings"')[0]
    assert "revoked." not in top  # shown once, in its section


@pytest.mark.parametrize(("path", "section"), [
    ("/disable", "settings"), ("/tokens/revoke-all", "tokens")])
def test_client_actions_land_at_their_section(owner, session, org, path, section):
    _, c = make_client(session, org)

    response = owner.post(f"/clients/{c.public_id}{path}")

    assert response.headers["Location"].endswith(f"#{section}")
    page = owner.get(f"/clients/{c.public_id}").get_data(as_text=True)
    part = page.split(f'id="{section}"')[1].split("</section>")[0]
    assert 'class="flash flash-success"' in part


def test_a_past_expiry_keeps_the_date_typed_and_lands_at_secrets(owner, session, org):
    _, c = make_client(session, org)

    response = owner.form_post(f"/clients/{c.public_id}", {"expires_at": "2001-01-01T10:00"},
                               action=f"/clients/{c.public_id}/secrets")

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'value="2001-01-01T10:00"' in page
    assert '<div class="error-summary" id="secrets-errors" tabindex="-1" autofocus' in page
    assert '<a href="#new-secret-expiry">Expires: The expiry must be in the future.</a>' in page


def test_add_secret_is_disabled_at_the_limit_with_a_reason(owner, session, org):
    _, c = make_client(session, org)
    for _ in range(4):
        clients.add_secret(session, c, actor=TEST_ACTOR)
    session.commit()

    page = owner.get(f"/clients/{c.public_id}").get_data(as_text=True)

    assert re.search(r'<button type="submit" disabled aria-describedby="secret-limit-reason">'
                     r'Add secret</button>', page)
    assert "5 of 5 secrets are active" in page


def test_acts_for_is_shown_only_for_user_clients(owner, session, org):
    member = make_user(session, org=org, role="viewer", email="ana@example.com")
    _, user_client = make_client(session, org, kind="user", user=member)
    _, org_client = make_client(session, org)

    assert "Acts for" in owner.get(f"/clients/{user_client.public_id}").get_data(as_text=True)
    assert "Acts for" not in owner.get(f"/clients/{org_client.public_id}").get_data(
        as_text=True)


def test_audit_trail_says_never_for_a_secret_without_expiry(owner, session, org):
    _, c = make_client(session, org)
    clients.add_secret(session, c, actor=TEST_ACTOR)
    clients.add_secret(session, c, actor=TEST_ACTOR, expires_at=utcnow() + timedelta(days=2))
    session.commit()

    for url in (f"/clients/{c.public_id}", "/audit"):
        page = owner.get(url).get_data(as_text=True)
        assert "expires_at: None" not in page
        assert "expires_at: never" in page
        assert re.search(r"expires_at: <time datetime=\"[^\"]+\">\d{4}-\d\d-\d\d \d\d:\d\d UTC",
                         page)


def test_api_keys_page_promises_only_what_ships(owner, session, org):
    make_api_key(session, org)

    page = owner.get("/api-keys").get_data(as_text=True)

    assert "introspect" in page
    # The management API it mentions is there, with its reference.
    assert "management API" in page and 'href="/api/v1/docs"' in page
    assert owner.get("/api/v1/docs").status_code == 200
    assert owner.get("/api/v1/openapi.json").get_json()["openapi"].startswith("3.1")
    assert session.scalar(select(ApiKey.id)) is not None


def test_mint_note_about_empty_choices_only_when_something_starts_unticked(owner, session, org):
    _, one = make_client(session, org, name="one api")
    _, two = make_client(session, org, name="two apis",
                         audiences=["https://a.example.test", "https://b.example.test"])

    single = owner.get(f"/tokens/mint?client={one.public_id}").get_data(as_text=True)
    double = owner.get(f"/tokens/mint?client={two.public_id}").get_data(as_text=True)

    assert "no scope ticked" not in single
    assert "Every granted API and scope is ticked" in single
    assert "no scope ticked on a ticked API: every scope granted there" in double


def test_minted_token_shows_exp_iat_nbf_as_utc_times(owner, session, org):
    _, c = make_client(session, org)
    page = owner.get(f"/tokens/mint?client={c.public_id}").get_data(as_text=True)
    grant = c.grants[0]

    minted = owner.http.post("/tokens/mint", data={
        **hidden_fields(page), "audience": [grant.api.identifier], "ttl": "600",
        "custom_claims": ""}).get_data(as_text=True)

    for name in ("iat", "nbf", "exp"):
        assert re.search(rf"<dt><code>{name}</code> \d{{10}}</dt><dd>[a-z ]+ <time "
                         rf"datetime=\"[^\"]+\">\d{{4}}-\d\d-\d\d \d\d:\d\d UTC</time>", minted)
