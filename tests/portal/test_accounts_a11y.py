"""The accounts pages meet the same basics as every portal page (tests/portal/test_a11y.py):
the ones the route walk cannot reach with content, each in its states."""

from __future__ import annotations

from http import HTTPStatus

from sqlalchemy import select

from portal.core.actor import Actor
from portal.core.users import services as users
from portal.core.users.invitations import invite
from portal.core.users.models import Membership
from tests.factories import TEST_ACTOR, make_org, make_user
from tests.portal.conftest import Portal
from tests.portal.test_a11y import check


def test_invitation_pages_meet_the_basics(app, session, org):
    token, _ = invite(session, org=org, email="a11y@example.com", role="viewer",
                      actor=Actor("test"))
    session.commit()
    signed_out = Portal(app.test_client())
    signed_in = Portal(app.test_client())
    signed_in.sign_in(make_user(session, org=org, email="someone@example.com").email)
    errors = signed_out.form_post(f"/invitation?token={token}",
                                  {"password": "short", "confirm": "other"},
                                  action="/invitation/accept")

    pages = {
        "signed out": signed_out.get(f"/invitation?token={token}"),
        "signed in as another account": signed_in.get(f"/invitation?token={token}"),
        "with errors": errors,
        "not valid": signed_out.get("/invitation?token=lk_invite_nope"),
    }

    assert [r.status_code for r in pages.values()] == [200, 200, 400, 404]
    assert not [p for name, r in pages.items() for p in check(r, name)]


def test_forced_password_page_meets_the_basics(app, session, org):
    owner = make_user(session, org=org, role="owner")
    member = make_user(session, org=org, role="viewer")
    membership = session.scalar(select(Membership).where(Membership.user_id == member.id))
    temporary = users.new_temporary_password()
    users.reset_password(session, membership=membership,
                         temporary=users.hash_new_password(temporary),
                         actor_user_id=owner.id, actor=Actor("test"))
    session.commit()
    portal = Portal(app.test_client())
    portal.sign_in(member.email, temporary)

    page = portal.get("/account/password")
    errors = portal.post("/account/password", {"current_password": "x", "new_password": "y",
                                               "confirm": "z"})

    assert (page.status_code, errors.status_code) == (HTTPStatus.OK, HTTPStatus.BAD_REQUEST)
    assert not check(page, "forced change") + check(errors, "forced change with errors")


def test_choosing_an_org_and_the_switcher_meet_the_basics(app, session, org):
    other = make_org(session, name="Second Org")
    user = make_user(session, org=org, role="admin")
    users.add_membership(session, org=other, user=user, role="viewer", actor=TEST_ACTOR)
    session.commit()
    portal = Portal(app.test_client())
    portal.sign_in(user.email)

    chooser = portal.get("/orgs")
    portal.post("/orgs/switch", {"org": org.public_id, "next": "/clients"})
    with_switcher = portal.get("/clients")

    assert (chooser.status_code, with_switcher.status_code) == (200, 200)
    assert 'class="org-switcher"' in with_switcher.get_data(as_text=True)
    assert not check(chooser, "choose org") + check(with_switcher, "clients with switcher")


def test_reset_confirmation_pages_meet_the_basics(owner, session, org, other_org):
    member = make_user(session, org=org, role="viewer")
    users.add_membership(session, org=other_org, user=member, role="viewer", actor=TEST_ACTOR)
    session.commit()
    alone = make_user(session, org=org, role="viewer")
    ids = {u.id: session.scalar(select(Membership.id).where(
        Membership.user_id == u.id, Membership.org_id == org.id)) for u in (member, alone)}

    refused = owner.get(f"/members/{ids[member.id]}/reset-password")
    allowed = owner.get(f"/members/{ids[alone.id]}/reset-password")

    assert (refused.status_code, allowed.status_code) == (409, 200)
    assert not check(refused, "reset refused") + check(allowed, "reset confirm")
