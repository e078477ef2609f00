"""Invitation links: the invitee chooses their own password or signs in to their account."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from sqlalchemy import select

from portal.core import crypto
from portal.core.actor import Actor
from portal.core.audit.models import AuditEntry
from portal.core.types import utcnow
from portal.core.users.invitations import invite
from portal.core.users.models import Invitation, Membership, Role, User
from tests.factories import PASSWORD, make_user
from tests.portal.conftest import Portal, csrf_token, hidden_fields

NEW_PASSWORD = "a brand new passphrase"
NOT_VALID = "This invitation link does not work"


def make_invitation(session, org, email="invitee@example.com", role="admin", **kwargs):
    token, invitation = invite(session, org=org, email=email, role=role,
                               actor=Actor("user:owner@example.com"), **kwargs)
    session.commit()
    return token, invitation


def url(token: str) -> str:
    return f"/invitation?token={token}"


def visitor(app) -> Portal:
    """A signed-out browser."""
    return Portal(app.test_client())


def accept_new(portal: Portal, token: str, password: str = NEW_PASSWORD, confirm=None, **extra):
    """Fill in the new-account form of the invitation page and submit it."""
    return portal.form_post(url(token), {"password": password,
                                         "confirm": password if confirm is None else confirm,
                                         **extra}, action="/invitation/accept")


def membership(session, email, org) -> Membership | None:
    session.expire_all()
    return session.scalar(select(Membership).join(User).where(
        User.email == email, Membership.org_id == org.id))


def org_actions(session, org) -> list[tuple[str, str]]:
    session.expire_all()
    return [(a, t) for a, t in session.execute(
        select(AuditEntry.action, AuditEntry.target_id)
        .where(AuditEntry.org_id == org.id).order_by(AuditEntry.id))]


# -- opening the link ------------------------------------------------------------------


def test_the_page_offers_both_ways_and_says_nothing_about_the_email(app, session, org,
                                                                     other_org):
    make_user(session, org=other_org, email="has.account@example.com")
    with_account, _ = make_invitation(session, org, email="has.account@example.com")
    without, _ = make_invitation(session, org, email="no.account@example.com")

    pages = [visitor(app).get(url(t)) for t in (with_account, without)]

    assert [p.status_code for p in pages] == [HTTPStatus.OK, HTTPStatus.OK]
    for page, email in zip(pages, ("has.account@example.com", "no.account@example.com"),
                           strict=True):
        html = page.get_data(as_text=True)
        assert page.headers["Cache-Control"] == "no-store"
        assert f"Join {org.name}" in html and email in html
        assert "Sign in to accept" in html
        assert "Create account and join" in html
        assert '<label for="password">Password</label>' in html


@pytest.mark.parametrize("query", [
    "", "token=", "token=lk_invite_", "token=lk_invite_" + "x" * 43, "token=not-a-token",
    "token=lk_invite_" + "a" * 5000, "token=lk_invite_%ED%A0%80", "token=lk_invite_%00",
    "token=a&token=b",
])
def test_a_wrong_or_malformed_link_is_not_valid(app, session, org, query):
    make_invitation(session, org)

    response = visitor(app).get("/invitation?" + query)

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert NOT_VALID in response.get_data(as_text=True)


def test_an_expired_link_is_not_valid(app, session, org):
    token, _ = make_invitation(session, org, now=utcnow() - timedelta(days=7, seconds=1))

    assert visitor(app).get(url(token)).status_code == HTTPStatus.NOT_FOUND
    assert accept_new_raw(app, token).status_code == HTTPStatus.NOT_FOUND
    assert membership(session, "invitee@example.com", org) is None


def accept_new_raw(app, token: str):
    """Post the new-account form without having a valid page for it (CSRF from sign-in)."""
    portal = visitor(app)
    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))
    return portal.post("/invitation/accept", {"token": token, "password": NEW_PASSWORD,
                                              "confirm": NEW_PASSWORD})


# -- a new account -----------------------------------------------------------------------


def test_a_new_invitee_chooses_a_password_and_joins(app, session, org):
    token, invitation = make_invitation(session, org, role="admin")
    portal = visitor(app)

    response = accept_new(portal, token, name="Ivy Invitee")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/"
    session.expire_all()
    user = session.scalar(select(User).where(User.email == "invitee@example.com"))
    assert user.name == "Ivy Invitee"
    assert user.password_hash.startswith("$argon2id$")
    assert crypto.verify_password(user.password_hash, NEW_PASSWORD)
    assert not user.must_change_password
    assert membership(session, user.email, org).role is Role.ADMIN
    assert session.get(Invitation, invitation.id).accepted_at is not None
    # Signed in, in the org joined.
    clients = portal.get("/clients")
    assert clients.status_code == HTTPStatus.OK
    assert f'<span class="org-name">{org.name}</span>' in clients.get_data(as_text=True)
    assert ("invitation:accepted", user.email) in org_actions(session, org)
    assert ("member:added", user.email) in org_actions(session, org)
    # The org's log does not say whether the account was new.
    assert ("user:created", user.email) not in org_actions(session, org)


def test_the_link_works_once(app, session, org):
    token, _ = make_invitation(session, org)
    assert accept_new(visitor(app), token).status_code == HTTPStatus.FOUND

    again = visitor(app).get(url(token))

    assert again.status_code == HTTPStatus.NOT_FOUND
    assert accept_new_raw(app, token).status_code == HTTPStatus.NOT_FOUND


def test_a_revoked_link_is_not_valid(app, session, org):
    token, invitation = make_invitation(session, org)
    invitation.revoked_at = utcnow()
    session.commit()

    assert visitor(app).get(url(token)).status_code == HTTPStatus.NOT_FOUND
    assert accept_new_raw(app, token).status_code == HTTPStatus.NOT_FOUND
    assert membership(session, "invitee@example.com", org) is None


@pytest.mark.parametrize(("password", "confirm", "message"), [
    ("short pass", "short pass", "Use at least 12 characters."),
    (NEW_PASSWORD, NEW_PASSWORD + "!", "The two passwords do not match."),
    ("", "", "Choose a password."),
])
def test_a_bad_password_is_a_form_error_and_the_link_still_works(app, session, org, password,
                                                                 confirm, message):
    token, _ = make_invitation(session, org)

    response = accept_new(visitor(app), token, password=password, confirm=confirm)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert message in response.get_data(as_text=True)
    assert session.scalar(select(User).where(User.email == "invitee@example.com")) is None
    assert visitor(app).get(url(token)).status_code == HTTPStatus.OK


def test_a_link_never_sets_the_password_of_an_existing_account(app, session, org, other_org):
    existing = make_user(session, org=other_org, email="invitee@example.com")
    token, _ = make_invitation(session, org)

    response = accept_new(visitor(app), token)

    assert response.status_code == HTTPStatus.CONFLICT
    assert "already exists: sign in to it to accept the invitation" in \
        response.get_data(as_text=True)
    session.expire_all()
    assert crypto.verify_password(session.get(User, existing.id).password_hash, PASSWORD)
    assert membership(session, existing.email, org) is None
    assert visitor(app).get(url(token)).status_code == HTTPStatus.OK  # still usable


# -- an existing account -----------------------------------------------------------------


def test_an_existing_account_signs_in_through_the_link_and_accepts(app, session, org,
                                                                    other_org):
    existing = make_user(session, org=other_org, role="owner", email="invitee@example.com")
    token, _ = make_invitation(session, org, role="viewer")
    portal = visitor(app)
    page = portal.get(url(token)).get_data(as_text=True)
    assert '/signin?next=/invitation?token%3D' in page.replace("&amp;", "&")

    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))
    signed_in = portal.post("/signin?" + f"next=/invitation?token%3D{token}",
                            {"email": existing.email, "password": PASSWORD})
    assert signed_in.headers["Location"] == url(token)
    page = portal.get(url(token))
    assert "Accept and join" in page.get_data(as_text=True)
    response = portal.http.post("/invitation/accept",
                                data=hidden_fields(page.get_data(as_text=True)))

    assert response.status_code == HTTPStatus.FOUND
    assert membership(session, existing.email, org).role is Role.VIEWER
    assert membership(session, existing.email, other_org).role is Role.OWNER
    session.expire_all()
    assert crypto.verify_password(session.get(User, existing.id).password_hash, PASSWORD)
    # Now working in the org just joined.
    html = portal.get("/clients").get_data(as_text=True)
    assert f'<option value="{org.public_id}" selected>' in html


def test_another_signed_in_account_cannot_accept(app, session, org):
    make_user(session, email="invitee@example.com")
    token, _ = make_invitation(session, org)
    other = make_user(session, org=org, role="viewer", email="someone.else@example.com")
    portal = Portal(app.test_client())
    portal.sign_in(other.email)
    page = portal.get(url(token)).get_data(as_text=True)
    assert "This invitation is for" in page and "Accept and join" not in page

    response = portal.post("/invitation/accept", {"token": token})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "this invitation is for invitee@example.com, and you are signed in as " \
        "someone.else@example.com" in response.get_data(as_text=True).lower()
    assert membership(session, "invitee@example.com", org) is None
    assert membership(session, other.email, org).role is Role.VIEWER
