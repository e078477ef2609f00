"""The members page: everyone reads it; owners invite people, change roles, reset passwords
and remove members."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from portal.core import crypto, settings
from portal.core.audit.models import AuditEntry
from portal.core.users import services as users
from portal.core.users.models import Invitation, Membership, Role, User
from tests.factories import PASSWORD, TEST_ACTOR, basic, get_token, make_client, make_user
from tests.portal.conftest import Portal, hidden_fields

TEMPORARY_PASSWORD = re.compile(
    r'<input id="temporary-password" type="text" readonly value="([^"]+)"')


def membership_of(session, user, org) -> Membership:
    session.expire_all()
    return session.scalar(select(Membership).where(
        Membership.user_id == user.id, Membership.org_id == org.id))


def audit_actions(session, org) -> list[tuple[str, str, dict]]:
    session.expire_all()
    rows = session.execute(select(AuditEntry.action, AuditEntry.target_id, AuditEntry.details)
                           .where(AuditEntry.org_id == org.id).order_by(AuditEntry.id))
    return [tuple(row) for row in rows]


def add(owner: Portal, email: str, role: str = "viewer"):
    """Submit the invite form as a browser would (with the page's one-time nonce)."""
    return owner.form_post("/members", {"email": email, "role": role}, action="/members/add")


# -- reading -------------------------------------------------------------------------


def test_owner_sees_members_with_roles_and_the_add_form(owner, session, org):
    colleague = make_user(session, org=org, role="viewer", email="grace@example.com")

    response = owner.get("/members")

    html = response.get_data(as_text=True)
    assert response.status_code == HTTPStatus.OK
    assert "<h1>Members</h1>" in html
    assert owner.user.email in html and colleague.email in html
    assert "(you)" in html
    assert "Last sign-in" in html and "Joined" in html
    assert 'action="/members/add"' in html
    role_select = f"role-{membership_of(session, colleague, org).id}"
    assert f'<label class="visually-hidden" for="{role_select}">Role of {colleague.email}' in html


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_admins_and_viewers_read_the_list_without_controls(app, session, org, role):
    owner = make_user(session, org=org, role="owner", email="boss@example.com")
    reader = Portal(app.test_client())
    reader.sign_in(make_user(session, org=org, role=role).email)

    response = reader.get("/members")

    html = response.get_data(as_text=True)
    assert response.status_code == HTTPStatus.OK
    assert owner.email in html
    assert "/members/add" not in html
    assert "/role" not in html and "/remove" not in html
    assert "Only owners can change who is a member." in html


def test_other_orgs_members_are_not_listed(owner, outsider):
    html = owner.get("/members").get_data(as_text=True)

    assert outsider.user.email not in html


# -- inviting ------------------------------------------------------------------------

INVITATION_LINK = re.compile(
    r'<input id="invitation-link" type="text" readonly value="([^"]+)"')


def link_of(response) -> str:
    match = INVITATION_LINK.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:2000]
    return unescape(match.group(1))


def invitations_of(session, org) -> list[Invitation]:
    session.expire_all()
    return list(session.scalars(select(Invitation).where(Invitation.org_id == org.id)
                                .order_by(Invitation.id)))


def test_inviting_shows_a_single_use_link_once_and_creates_no_account(owner, session, org):
    response = add(owner, "New.Person@example.com", "admin")

    assert response.status_code == HTTPStatus.OK
    assert response.headers["Cache-Control"] == "no-store"
    link = link_of(response)
    assert link.startswith("http://localhost/invitation?token=lk_invite_")
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert len(token) >= len("lk_invite_") + 43  # 256 bits
    assert session.scalar(select(User).where(User.email == "new.person@example.com")) is None
    [invitation] = invitations_of(session, org)
    assert (invitation.email, invitation.role) == ("new.person@example.com", Role.ADMIN)
    assert invitation.token_hash == crypto.hmac_digest(settings.hmac_key(), token)
    assert token.encode() not in invitation.token_hash
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    assert ("invitation:created", "new.person@example.com") in [
        (a, t) for a, t, _ in audit_actions(session, org)]


def _page_without_secrets(response) -> str:
    """The page with the link's secret, the CSRF token and the times taken out."""
    html = response.get_data(as_text=True)
    html = re.sub(r"lk_invite_[A-Za-z0-9_-]+", "SECRET", html)
    # The CSRF token is signed with the time in seconds: two pages a second apart differ.
    for token in re.findall(r'(?:name="csrf_token"[^>]*value|data-csrf)="([^"]+)"', html):
        html = html.replace(token, "CSRF")
    return re.sub(r"<time[^>]*>[^<]*</time>", "TIME", html)


def test_inviting_an_existing_account_attaches_nothing_and_says_the_same(
        owner, session, org, other_org):
    existing = make_user(session, org=other_org, email="ada@example.com")

    for_existing = add(owner, "ada@example.com", "admin")
    for_new = add(owner, "bob@example.com", "admin")

    assert for_existing.status_code == for_new.status_code == HTTPStatus.OK
    assert _page_without_secrets(for_existing).replace("ada@", "x@") == \
        _page_without_secrets(for_new).replace("bob@", "x@")
    assert membership_of(session, existing, org) is None
    assert "already had an account" not in owner.get("/members").get_data(as_text=True)
    assert crypto.verify_password(session.get(User, existing.id).password_hash, PASSWORD)


def test_resubmitting_the_invite_form_shows_no_link_and_invites_nothing(owner, session, org):
    page = owner.get("/members").get_data(as_text=True)
    hidden = hidden_fields(page)
    body = {**hidden, "email": "once@example.com", "role": "viewer"}
    first = owner.http.post("/members/add", data=body)
    assert first.status_code == HTTPStatus.OK

    again = owner.http.post("/members/add", data=body)  # a reload re-posts the same form

    assert again.status_code == HTTPStatus.FOUND
    assert "invitation-link" not in again.get_data(as_text=True)
    assert "only shown once" in owner.get("/members").get_data(as_text=True)
    assert len(invitations_of(session, org)) == 1


def test_inviting_the_same_email_again_replaces_the_pending_link(app, owner, session, org):
    first = link_of(add(owner, "again@example.com"))

    second = link_of(add(owner, "again@example.com", "admin"))

    pending = [i for i in invitations_of(session, org) if i.revoked_at is None]
    assert [(i.email, i.role) for i in pending] == [("again@example.com", Role.ADMIN)]
    visitor = app.test_client()
    assert visitor.get(first.removeprefix("http://localhost")).status_code == 404
    assert visitor.get(second.removeprefix("http://localhost")).status_code == 200
    assert ("invitation:revoked", "again@example.com",
            {"role": "viewer", "replaced": True}) in audit_actions(session, org)


def test_owner_sees_pending_invitations_and_revokes_one(app, owner, session, org):
    link = link_of(add(owner, "pending@example.com", "admin"))
    page = owner.get("/members").get_data(as_text=True)
    assert 'id="pending-invitations"' in page
    assert "pending@example.com" in page
    [invitation] = invitations_of(session, org)

    response = owner.post(f"/members/invitations/{invitation.id}/revoke")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/members#pending-invitations"
    assert invitations_of(session, org)[0].revoked_at is not None
    assert app.test_client().get(link.removeprefix("http://localhost")).status_code == 404
    assert ("invitation:revoked", "pending@example.com", {"role": "admin"}) in \
        audit_actions(session, org)
    assert "pending@example.com" not in owner.get("/members").get_data(as_text=True).split(
        'id="add-member-heading"')[0].split('id="pending-invitations"')[1]


def test_another_orgs_invitation_cannot_be_revoked(outsider, owner, session, org):
    add(owner, "mine@example.com")
    [invitation] = invitations_of(session, org)

    response = outsider.post(f"/members/invitations/{invitation.id}/revoke")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert invitations_of(session, org)[0].revoked_at is None


def test_inviting_someone_already_in_the_org_is_a_form_error(owner, session, org):
    member = make_user(session, org=org, role="viewer", email="grace@example.com")

    response = add(owner, member.email, "admin")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    html = response.get_data(as_text=True)
    assert "grace@example.com is already a member of this organisation." in html, \
        re.findall(r'class="error"[^>]*>([^<]*)', html)
    assert membership_of(session, member, org).role is Role.VIEWER
    assert invitations_of(session, org) == []


@pytest.mark.parametrize(("email", "role", "message"), [
    ("not an email", "viewer", "Enter a valid email address."),
    ("", "viewer", "Enter an email address."),
    ("someone@example.com", "superuser", "Not a valid choice"),
])
def test_bad_add_input_is_shown_next_to_the_field(owner, session, email, role, message):
    before = session.scalar(select(func.count(Invitation.id)))

    response = add(owner, email, role)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    html = response.get_data(as_text=True)
    assert message in html
    assert 'aria-invalid="true"' in html
    assert session.scalar(select(func.count(Invitation.id))) == before


# -- roles ---------------------------------------------------------------------------


def test_owner_changes_a_role(owner, session, org):
    member = make_user(session, org=org, role="viewer")
    membership = membership_of(session, member, org)

    response = owner.post(f"/members/{membership.id}/role", {"role": "admin"})

    assert response.status_code == HTTPStatus.FOUND
    assert membership_of(session, member, org).role is Role.ADMIN
    assert ("member:role_changed", member.email, {"from": "viewer", "to": "admin"}) in \
        audit_actions(session, org)
    assert f"{member.email} is now admin." in owner.get("/members").get_data(as_text=True)


def test_an_unknown_role_is_refused(owner, session, org):
    member = make_user(session, org=org, role="viewer")
    membership = membership_of(session, member, org)

    response = owner.post(f"/members/{membership.id}/role", {"role": "root"})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Choose a role: owner, admin or viewer." in response.get_data(as_text=True)
    assert membership_of(session, member, org).role is Role.VIEWER


def test_the_last_owner_cannot_be_demoted(owner, session, org):
    mine = membership_of(session, owner.user, org)

    response = owner.post(f"/members/{mine.id}/role", {"role": "admin"})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "last owner cannot be demoted" in response.get_data(as_text=True)
    assert membership_of(session, owner.user, org).role is Role.OWNER


def test_an_owner_can_step_down_when_another_owner_remains(owner, session, org):
    make_user(session, org=org, role="owner")
    mine = membership_of(session, owner.user, org)

    response = owner.post(f"/members/{mine.id}/role", {"role": "admin"})

    assert response.status_code == HTTPStatus.FOUND
    assert membership_of(session, owner.user, org).role is Role.ADMIN
    assert owner.post(f"/members/{mine.id}/role", {"role": "owner"}).status_code == 403


# -- removing ------------------------------------------------------------------------


def test_owner_removes_a_member_whose_account_stays(app, owner, session, org):
    member = make_user(session, org=org, role="admin")
    membership = membership_of(session, member, org)

    response = owner.post(f"/members/{membership.id}/remove")

    assert response.status_code == HTTPStatus.FOUND
    assert membership_of(session, member, org) is None
    assert session.get(User, member.id) is not None
    assert ("member:removed", member.email, {"role": "admin", "tokens_revoked": 0}) in \
        audit_actions(session, org)
    removed = Portal(app.test_client())
    removed.sign_in(member.email)
    assert removed.get("/members").status_code == HTTPStatus.FORBIDDEN


def test_the_last_owner_cannot_be_removed(owner, session, org):
    mine = membership_of(session, owner.user, org)

    response = owner.post(f"/members/{mine.id}/remove")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "last owner cannot be removed" in response.get_data(as_text=True)
    assert membership_of(session, owner.user, org) is not None


def test_an_owner_cannot_remove_themselves(owner, session, org):
    make_user(session, org=org, role="owner")
    mine = membership_of(session, owner.user, org)

    response = owner.post(f"/members/{mine.id}/remove")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "You cannot remove yourself" in response.get_data(as_text=True)
    assert membership_of(session, owner.user, org) is not None


# -- who may change members ----------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_only_owners_change_members(app, session, org, role):
    member = make_user(session, org=org, role="viewer")
    membership = membership_of(session, member, org)
    portal = Portal(app.test_client())
    portal.sign_in(make_user(session, org=org, role=role).email)
    before = audit_actions(session, org)

    responses = [
        portal.form_post("/members", {"email": "x@example.com", "role": "owner"},
                         action="/members/add"),
        portal.post(f"/members/{membership.id}/role", {"role": "owner"}),
        portal.post(f"/members/{membership.id}/remove"),
    ]

    assert [r.status_code for r in responses] == [HTTPStatus.FORBIDDEN] * 3
    assert "You don&#39;t have permission to do this" in responses[0].get_data(as_text=True)
    assert audit_actions(session, org) == before
    assert membership_of(session, member, org).role is Role.VIEWER


def test_another_orgs_member_is_not_found(outsider, session, org):
    member = make_user(session, org=org, role="viewer")
    membership = membership_of(session, member, org)

    role = outsider.post(f"/members/{membership.id}/role", {"role": "owner"})
    remove = outsider.post(f"/members/{membership.id}/remove")

    assert (role.status_code, remove.status_code) == (HTTPStatus.NOT_FOUND, HTTPStatus.NOT_FOUND)
    assert membership_of(session, member, org).role is Role.VIEWER


# -- removing revokes what acts for them -----------------------------------------------


def introspect(http, caller, secret: str, token: str) -> dict:
    response = http.post("/oauth/introspect", data={"token": token},
                         headers=basic(caller.public_id, secret))
    assert response.status_code == HTTPStatus.OK, response.get_data(as_text=True)
    return response.get_json()


def test_removing_a_member_revokes_tokens_of_user_clients_acting_for_them(
        app, owner, session, org, other_org):
    leaver = make_user(session, org=org, role="admin", email="leaver@example.com")
    make_user(session, org=other_org, role="admin", email="leaver2@example.com")
    acting_secret, acting = make_client(session, org, name="acts for leaver", kind="user",
                                        user=leaver, ttl=86400)
    service_secret, service = make_client(session, org, name="org client")
    http = app.test_client()
    leavers_token = get_token(http, acting, acting_secret)
    orgs_token = get_token(http, service, service_secret)
    assert introspect(http, service, service_secret, leavers_token)["active"] is True

    response = owner.post(f"/members/{membership_of(session, leaver, org).id}/remove")

    assert response.status_code == HTTPStatus.FOUND
    assert introspect(http, service, service_secret, leavers_token) == {"active": False}
    assert introspect(http, service, service_secret, orgs_token)["active"] is True
    assert ("member:removed", leaver.email, {"role": "admin", "tokens_revoked": 1}) in \
        audit_actions(session, org)
    assert "1 active token of clients acting for them was revoked" in \
        owner.get("/members").get_data(as_text=True)


# -- password reset ------------------------------------------------------------------


def reset(owner: Portal, membership: Membership):
    """Confirm a reset as a browser would (the confirmation page carries a one-time nonce)."""
    url = f"/members/{membership.id}/reset-password"
    return owner.form_post(url, {})


def test_reset_asks_for_confirmation_on_a_page(owner, session, org):
    member = make_user(session, org=org, role="viewer")

    page = owner.get(f"/members/{membership_of(session, member, org).id}/reset-password")

    assert page.status_code == HTTPStatus.OK
    html = page.get_data(as_text=True)
    assert f"Reset the password of {member.email}?" in html
    assert "before anything else" in html
    assert crypto.verify_password(session.get(User, member.id).password_hash, PASSWORD)


def test_owner_resets_a_password_shown_once_and_recorded(app, owner, session, org):
    member = make_user(session, org=org, role="viewer")

    response = reset(owner, membership_of(session, member, org))

    assert response.status_code == HTTPStatus.OK
    assert response.headers["Cache-Control"] == "no-store"
    temporary = unescape(TEMPORARY_PASSWORD.search(response.get_data(as_text=True)).group(1))
    assert len(temporary) >= 20
    session.expire_all()
    user = session.get(User, member.id)
    assert user.password_hash.startswith("$argon2id$")
    assert crypto.verify_password(user.password_hash, temporary)
    assert not crypto.verify_password(user.password_hash, PASSWORD)
    assert user.must_change_password
    assert ("member:password_reset", member.email, {}) in audit_actions(session, org)


def test_reset_ends_the_members_sessions(app, owner, session, org):
    member = make_user(session, org=org, role="viewer")
    members_browser = Portal(app.test_client())
    members_browser.sign_in(member.email)

    reset(owner, membership_of(session, member, org))

    assert members_browser.get("/members").status_code == HTTPStatus.FOUND


def test_reset_is_refused_for_a_member_of_another_org_too(owner, session, org, other_org):
    member = make_user(session, org=org, role="viewer")
    users.add_membership(session, org=other_org, user=member, role="admin", actor=TEST_ACTOR)
    session.commit()
    membership = membership_of(session, member, org)

    page = owner.get(f"/members/{membership.id}/reset-password")
    response = reset(owner, membership)

    assert page.status_code == HTTPStatus.CONFLICT
    message = (f"{member.email} is also a member of another organisation, so only they can "
               "change their password (on their account page).")
    assert message in page.get_data(as_text=True)
    assert "temporary-password" not in response.get_data(as_text=True)
    assert message in owner.get("/members").get_data(as_text=True)
    session.expire_all()
    assert crypto.verify_password(session.get(User, member.id).password_hash, PASSWORD)
    assert not session.get(User, member.id).must_change_password
    assert "member:password_reset" not in [a for a, _, _ in audit_actions(session, org)]


def test_an_owner_cannot_reset_their_own_password_here(owner, session, org):
    response = reset(owner, membership_of(session, owner.user, org))

    assert "temporary-password" not in response.get_data(as_text=True)
    assert "Change your own password on your account page." in \
        owner.get("/members").get_data(as_text=True)


def test_replaying_a_reset_shows_no_password_and_resets_nothing(owner, session, org):
    member = make_user(session, org=org, role="viewer")
    url = f"/members/{membership_of(session, member, org).id}/reset-password"
    body = hidden_fields(owner.get(url).get_data(as_text=True))
    first = owner.http.post(url, data=body)
    session.expire_all()
    after_first = session.get(User, member.id).password_hash

    again = owner.http.post(url, data=body)

    assert first.status_code == HTTPStatus.OK
    assert again.status_code == HTTPStatus.FOUND
    session.expire_all()
    assert session.get(User, member.id).password_hash == after_first


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_only_owners_reset_passwords(app, session, org, role):
    member = make_user(session, org=org, role="viewer")
    url = f"/members/{membership_of(session, member, org).id}/reset-password"
    portal = Portal(app.test_client())
    portal.sign_in(make_user(session, org=org, role=role).email)

    assert portal.get(url).status_code == HTTPStatus.FORBIDDEN
    assert portal.post(url, {}).status_code == HTTPStatus.FORBIDDEN
    session.expire_all()
    assert not session.get(User, member.id).must_change_password
