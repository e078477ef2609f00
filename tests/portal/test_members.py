"""The members page: everyone reads it; owners add people, change roles and remove them."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from sqlalchemy import func, select

from portal.core import crypto
from portal.core.audit.models import AuditEntry
from portal.core.users.models import Membership, Role, User
from tests.factories import make_user
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
    """Submit the add form as a browser would (with the page's one-time nonce)."""
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


# -- adding --------------------------------------------------------------------------


def test_adding_an_existing_account_makes_it_a_member(owner, session, org):
    existing = make_user(session, email="ada@example.com")  # in no org yet

    response = add(owner, "Ada@Example.com", "admin")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/members"
    assert membership_of(session, existing, org).role is Role.ADMIN
    assert ("member:added", "ada@example.com", {"role": "admin"}) in audit_actions(session, org)
    page = owner.get("/members").get_data(as_text=True)
    assert "ada@example.com already had an account and can now sign in to Acme as admin." in page


def test_adding_a_new_email_shows_a_temporary_password_once(app, owner, session, org):
    response = add(owner, "new.person@example.com", "viewer")

    assert response.status_code == HTTPStatus.OK
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    temporary = TEMPORARY_PASSWORD.search(html).group(1)
    assert len(temporary) >= 20
    assert '<label for="temporary-password">' in html
    session.expire_all()
    user = session.scalar(select(User).where(User.email == "new.person@example.com"))
    assert user.password_hash.startswith("$argon2id$")
    assert temporary not in user.password_hash
    assert crypto.verify_password(user.password_hash, temporary)
    assert membership_of(session, user, org).role is Role.VIEWER
    actions = [a for a, target, _ in audit_actions(session, org) if target == user.email]
    assert actions == ["user:created", "member:added"]
    newcomer = Portal(app.test_client())
    newcomer.sign_in(user.email, temporary)
    assert newcomer.get("/members").status_code == HTTPStatus.OK


def test_resubmitting_the_add_form_shows_no_password_and_adds_nothing(owner, session):
    page = owner.get("/members").get_data(as_text=True)
    hidden = hidden_fields(page)
    body = {**hidden, "email": "once@example.com", "role": "viewer"}
    first = owner.http.post("/members/add", data=body)
    assert first.status_code == HTTPStatus.OK

    again = owner.http.post("/members/add", data=body)  # a reload re-posts the same form

    assert again.status_code == HTTPStatus.FOUND
    assert "temporary-password" not in again.get_data(as_text=True)
    assert "only shown once" in owner.get("/members").get_data(as_text=True)
    assert session.scalar(select(func.count(User.id)).where(User.email == "once@example.com")) == 1


def test_adding_someone_already_in_the_org_is_a_form_error(owner, session, org):
    member = make_user(session, org=org, role="viewer", email="grace@example.com")

    response = add(owner, member.email, "admin")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    html = response.get_data(as_text=True)
    assert "grace@example.com is already a member of this organisation." in html, \
        re.findall(r'class="error"[^>]*>([^<]*)', html)
    assert membership_of(session, member, org).role is Role.VIEWER


@pytest.mark.parametrize(("email", "role", "message"), [
    ("not an email", "viewer", "Enter a valid email address."),
    ("", "viewer", "Enter an email address."),
    ("someone@example.com", "superuser", "Not a valid choice"),
])
def test_bad_add_input_is_shown_next_to_the_field(owner, session, email, role, message):
    before = session.scalar(select(func.count(User.id)))

    response = add(owner, email, role)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    html = response.get_data(as_text=True)
    assert message in html
    assert 'aria-invalid="true"' in html
    assert session.scalar(select(func.count(User.id))) == before


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
    assert ("member:removed", member.email, {"role": "admin"}) in audit_actions(session, org)
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
