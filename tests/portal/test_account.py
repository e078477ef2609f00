"""One's own account: memberships, password change, forced change, sessions, org switching."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from sqlalchemy import select

from portal.core import crypto
from portal.core.actor import Actor
from portal.core.api_keys.models import ApiKey
from portal.core.audit.models import AuditEntry
from portal.core.users import services as users
from portal.core.users.models import Membership, User
from portal.views import PASSWORD_CHANGE_ENDPOINTS
from tests.factories import PASSWORD, TEST_ACTOR, make_client, make_org, make_user
from tests.portal.conftest import OrgObjects, Portal, csrf_token

NEW_PASSWORD = "another long passphrase"


def browser(app, email: str, password: str = PASSWORD) -> Portal:
    portal = Portal(app.test_client())
    portal.sign_in(email, password)
    return portal


def change(portal: Portal, current: str = PASSWORD, new: str = NEW_PASSWORD,
           confirm: str | None = None, **extra):
    return portal.post("/account/password", {
        "current_password": current, "new_password": new,
        "confirm": new if confirm is None else confirm, **extra})


def stored_hash(session, user) -> str:
    session.expire_all()
    return session.get(User, user.id).password_hash


def signed_in(portal: Portal) -> bool:
    return portal.get("/account").status_code == HTTPStatus.OK


# -- the account page --------------------------------------------------------------------


def test_account_page_shows_every_membership_with_its_role(app, session, org, other_org):
    user = make_user(session, org=org, role="viewer", email="two.orgs@example.com")
    users.add_membership(session, org=other_org, user=user, role="owner", actor=TEST_ACTOR)
    session.commit()
    make_user(session, org=org, role="owner", email="colleague@example.com")

    html = browser(app, user.email).get("/account").get_data(as_text=True)

    assert "<h1>Your account</h1>" in html and user.email in html
    rows = html.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 2
    assert f'<th scope="row">{org.name}</th>' in rows and "viewer" in rows
    assert f'<th scope="row">{other_org.name}</th>' in rows and "owner" in rows
    assert "colleague@example.com" not in html
    assert '<label for="current_password">Current password</label>' in html


def test_account_page_works_for_an_account_in_no_org(app, session):
    user = make_user(session, email="loner@example.com")
    portal = browser(app, user.email)

    response = portal.get("/account")

    assert response.status_code == HTTPStatus.OK
    assert "not a member of any organisation" in response.get_data(as_text=True)


# -- changing the password ---------------------------------------------------------------


def test_changing_the_password_needs_the_current_one(app, session, org):
    user = make_user(session, org=org)
    portal = browser(app, user.email)

    response = change(portal, current="not my password")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Current password is incorrect." in response.get_data(as_text=True)
    assert crypto.verify_password(stored_hash(session, user), PASSWORD)


@pytest.mark.parametrize(("new", "confirm", "message"), [
    ("short one", "short one", "Use at least 12 characters."),
    (NEW_PASSWORD, NEW_PASSWORD + "!", "The two passwords do not match."),
    (PASSWORD, PASSWORD, "Choose a password different from the current one."),
    ("", "", "Choose a new password."),
])
def test_a_new_password_is_checked_as_at_sign_up(app, session, org, new, confirm, message):
    user = make_user(session, org=org)
    portal = browser(app, user.email)

    response = change(portal, new=new, confirm=confirm)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert message in response.get_data(as_text=True)
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    assert crypto.verify_password(stored_hash(session, user), PASSWORD)


def test_changing_the_password_stores_argon2id_and_keeps_this_session(app, session, org):
    user = make_user(session, org=org)
    portal = browser(app, user.email)

    response = change(portal)

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/account"
    new_hash = stored_hash(session, user)
    assert new_hash.startswith("$argon2id$") and NEW_PASSWORD not in new_hash
    assert crypto.verify_password(new_hash, NEW_PASSWORD)
    assert "Password changed." in portal.get("/account").get_data(as_text=True)
    assert signed_in(portal)
    assert browser(app, user.email, NEW_PASSWORD)
    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.target_id == user.email))
    assert "user:password_changed" in list(actions)


def test_changing_the_password_signs_out_every_other_session(app, session, org):
    user = make_user(session, org=org)
    other = browser(app, user.email)
    portal = browser(app, user.email)

    change(portal)

    assert not signed_in(other)
    assert signed_in(portal)


def test_sign_out_other_sessions_keeps_this_one(app, session, org):
    user = make_user(session, org=org)
    other = browser(app, user.email)
    portal = browser(app, user.email)

    response = portal.post("/account/sessions/end-others")

    assert response.status_code == HTTPStatus.FOUND
    assert not signed_in(other)
    assert signed_in(portal)


def test_a_viewer_may_change_their_own_password(app, session, org):
    user = make_user(session, org=org, role="viewer")

    response = change(browser(app, user.email))

    assert response.status_code == HTTPStatus.FOUND
    assert crypto.verify_password(stored_hash(session, user), NEW_PASSWORD)


# -- sessions end server-side -------------------------------------------------------------


def session_cookie(portal: Portal) -> str:
    cookie = portal.http.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_a_copied_session_cookie_is_refused_after_sign_out(app, session, org):
    user = make_user(session, org=org)
    portal = browser(app, user.email)
    copied = session_cookie(portal)

    portal.post("/signout")

    thief = app.test_client()
    thief.set_cookie("session", copied)
    response = thief.get("/clients")
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"].startswith("/signin")


def test_a_copied_session_cookie_is_refused_after_a_password_change(app, session, org):
    user = make_user(session, org=org)
    victim = browser(app, user.email)
    copied = session_cookie(victim)
    portal = browser(app, user.email)

    change(portal)

    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/clients").status_code == HTTPStatus.FOUND


# -- forced change after an owner's reset ---------------------------------------------------


@pytest.fixture
def reset_member(app, session, org):
    """A member whose password an owner reset: (temporary password, user)."""
    owner = make_user(session, org=org, role="owner")
    member = make_user(session, org=org, role="admin", email="reset.me@example.com")
    membership = session.scalar(select(Membership).where(Membership.user_id == member.id))
    temporary = users.new_temporary_password()
    users.reset_password(session, membership=membership,
                         temporary=users.hash_new_password(temporary), actor_user_id=owner.id,
                         actor=Actor(f"user:{owner.email}"))
    session.commit()
    return temporary, member


def test_signing_in_with_a_temporary_password_leads_to_choosing_a_new_one(app, reset_member):
    temporary, member = reset_member
    portal = Portal(app.test_client())
    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))

    response = portal.post("/signin?next=/usage", {"email": member.email,
                                                   "password": temporary})

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/account/password?next=/usage"
    page = portal.get("/account/password?next=/usage").get_data(as_text=True)
    assert "<h1 id=\"password-heading\">Choose a new password</h1>" in page
    assert 'aria-label="Portal"' not in page  # no navigation to pages that do not work


def test_until_the_password_is_changed_nothing_else_works(app, session, org, reset_member,
                                                          org_objects):
    temporary, member = reset_member
    portal = browser(app, member.email, temporary)
    problems = []
    for method in ("GET", "POST"):
        for rule in OrgObjects.rules(app, method):
            if rule.endpoint in PASSWORD_CHANGE_ENDPOINTS or rule.endpoint in (
                    "portal.invitation", "portal.invitation_accept", "portal.signup"):
                continue
            url = org_objects.url(rule)
            response = portal.get(url) if method == "GET" else portal.post(url, {})
            location = response.headers.get("Location", "")
            if response.status_code != HTTPStatus.FOUND or location != "/account/password":
                problems.append(f"{method} {url}: {response.status_code} {location!r}")
    assert not problems, "\n".join(problems)
    session.expire_all()
    assert session.get(User, member.id).must_change_password


def test_the_temporary_password_cannot_be_kept(app, reset_member):
    temporary, member = reset_member
    portal = browser(app, member.email, temporary)

    response = change(portal, current=temporary, new=temporary)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Choose a password different from the current one." in \
        response.get_data(as_text=True)


def test_after_choosing_a_new_password_everything_works(app, session, reset_member):
    temporary, member = reset_member
    portal = browser(app, member.email, temporary)

    response = change(portal, current=temporary, next="/usage")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/usage"
    assert portal.get("/clients").status_code == HTTPStatus.OK
    session.expire_all()
    user = session.get(User, member.id)
    assert not user.must_change_password
    assert crypto.verify_password(user.password_hash, NEW_PASSWORD)
    assert not crypto.verify_password(user.password_hash, temporary)


# -- choosing the org ------------------------------------------------------------------------


@pytest.fixture
def two_orgs(app, session, tenants):
    """A user who is an admin of Acme (``tenants.ours``) and a viewer of Globex
    (``tenants.theirs``), each org with a client."""
    acme, globex = tenants.ours.org, tenants.theirs.org
    user = make_user(session, org=acme, role="admin", email="both@example.com")
    users.add_membership(session, org=globex, user=user, role="viewer", actor=TEST_ACTOR)
    session.commit()
    make_client(session, acme, name="acme-billing")
    make_client(session, globex, name="globex-billing")
    return user, acme, globex


def switch(portal: Portal, org, next_page: str = "/clients"):
    response = portal.post("/orgs/switch", {"org": org.public_id, "next": next_page})
    portal.refresh_token()  # switching gives the session a new CSRF token
    return response


def test_signing_in_with_two_orgs_asks_which_one(app, two_orgs):
    user, acme, globex = two_orgs
    portal = Portal(app.test_client())
    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))

    response = portal.post("/signin?next=/usage", {"email": user.email, "password": PASSWORD})

    assert response.headers["Location"] == "/orgs?next=/usage"
    html = portal.get("/orgs?next=/usage").get_data(as_text=True)
    assert "Choose an organisation" in html
    assert "Work in Acme" in html and "Work in Globex" in html
    # Until one is chosen, org pages ask for it.
    clients = portal.get("/clients")
    assert clients.status_code == HTTPStatus.FOUND
    assert clients.headers["Location"] == "/orgs?next=/clients"


def test_a_user_in_two_orgs_sees_each_orgs_clients_only_when_it_is_chosen(app, two_orgs):
    user, acme, globex = two_orgs
    portal = browser(app, user.email)

    assert switch(portal, acme).headers["Location"] == "/clients"
    in_acme = portal.get("/clients").get_data(as_text=True)
    switch(portal, globex)
    in_globex = portal.get("/clients").get_data(as_text=True)
    switch(portal, acme)
    back_in_acme = portal.get("/clients").get_data(as_text=True)

    assert "acme-billing" in in_acme and "globex-billing" not in in_acme
    assert "globex-billing" in in_globex and "acme-billing" not in in_globex
    assert "acme-billing" in back_in_acme and "globex-billing" not in back_in_acme


def test_the_role_follows_the_chosen_org(app, two_orgs):
    user, acme, globex = two_orgs
    portal = browser(app, user.email)

    switch(portal, globex)
    as_viewer = portal.get("/clients/new")
    switch(portal, acme)
    as_admin = portal.get("/clients/new")

    assert as_viewer.status_code == HTTPStatus.FORBIDDEN
    assert as_admin.status_code == HTTPStatus.OK


def test_switching_to_an_org_one_is_not_in_is_not_found(app, two_orgs, session):
    user, acme, _globex = two_orgs
    stranger = make_org(session, name="Stranger Org")
    make_client(session, stranger, name="stranger-billing")
    portal = browser(app, user.email)
    switch(portal, acme)

    response = portal.post("/orgs/switch", {"org": stranger.public_id, "next": "/clients"})

    assert response.status_code == HTTPStatus.NOT_FOUND
    html = portal.get("/clients").get_data(as_text=True)
    assert "acme-billing" in html and "stranger-billing" not in html


def test_a_form_opened_before_switching_cannot_act_in_the_new_org(app, two_orgs, session):
    user, acme, globex = two_orgs
    portal = browser(app, user.email)
    switch(portal, acme)
    stale_token = portal.token

    portal.post("/orgs/switch", {"org": globex.public_id, "next": "/clients"})
    response = portal.post("/api-keys", {"name": "made in the wrong org",
                                         "csrf_token": stale_token})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "The form expired" in response.get_data(as_text=True)


def test_the_top_bar_switcher_lists_the_users_orgs(app, two_orgs, session, org):
    user, acme, globex = two_orgs
    portal = browser(app, user.email)
    switch(portal, globex)
    single = browser(app, make_user(session, org=org).email)

    html = portal.get("/clients").get_data(as_text=True)

    assert '<form method="post" action="/orgs/switch" class="org-switcher">' in html
    assert f'<option value="{globex.public_id}" selected>Globex (viewer)</option>' in html
    assert f'<option value="{acme.public_id}">Acme (admin)</option>' in html
    assert 'class="org-switcher"' not in single.get("/clients").get_data(as_text=True)


def test_a_removed_membership_falls_back_to_the_org_left(app, two_orgs, session):
    user, acme, globex = two_orgs
    portal = browser(app, user.email)
    switch(portal, globex)

    session.delete(session.scalar(select(Membership).where(
        Membership.user_id == user.id, Membership.org_id == globex.id)))
    session.commit()

    html = portal.get("/clients").get_data(as_text=True)
    assert "acme-billing" in html and "globex-billing" not in html


def test_removed_from_the_chosen_org_with_two_left_asks_again(app, two_orgs, session):
    user, acme, globex = two_orgs
    third = make_org(session, name="Third Org")
    users.add_membership(session, org=third, user=user, role="admin", actor=TEST_ACTOR)
    session.commit()
    portal = browser(app, user.email)
    switch(portal, globex)

    session.delete(session.scalar(select(Membership).where(
        Membership.user_id == user.id, Membership.org_id == globex.id)))
    session.commit()

    response = portal.get("/clients")
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/orgs?next=/clients"


def test_a_change_before_choosing_an_org_asks_to_choose_and_changes_nothing(app, two_orgs,
                                                                           session):
    user, _acme, _globex = two_orgs
    portal = browser(app, user.email)

    response = portal.post("/api-keys", {"name": "which org?"})

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/orgs"
    assert session.scalar(select(ApiKey.id)) is None
