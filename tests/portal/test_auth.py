"""Sign in, sign out and sign-up: passwords, rate limits, safe redirects."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from portal.core import crypto
from portal.core.audit.models import AuditEntry
from portal.core.orgs.models import Organization
from portal.core.users.models import Membership, Role, User
from tests.factories import PASSWORD, make_org, make_user
from tests.portal.conftest import Portal, csrf_token


def fresh(app) -> Portal:
    """A signed-out browser with the sign-in page's CSRF token."""
    portal = Portal(app.test_client())
    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))
    return portal


def signed_in(portal: Portal) -> bool:
    """Whether the portal shows a signed-in page (signed-out visitors go to /signin)."""
    return portal.get("/members").status_code == HTTPStatus.OK


def sign_in(portal: Portal, email: str, password: str = PASSWORD, **kwargs):
    return portal.post("/signin", {"email": email, "password": password}, **kwargs)


# -- sign in -----------------------------------------------------------------------


def test_signin_page_labels_its_fields_and_hides_signup_when_off(client):
    html = client.get("/signin").get_data(as_text=True)

    assert '<label for="email">Email</label>' in html
    assert '<label for="password">Password</label>' in html
    assert 'autocomplete="current-password"' in html
    assert "/signup" not in html


def test_right_password_signs_in_and_records_last_sign_in(app, session):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)

    response = sign_in(portal, user.email)

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/"
    assert signed_in(portal)
    session.expire_all()
    assert session.get(User, user.id).last_login_at is not None


def test_wrong_password_is_a_form_error(app, session):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)

    response = sign_in(portal, user.email, "not the password")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Email or password is incorrect." in response.get_data(as_text=True)
    assert not signed_in(portal)


def test_unknown_email_gets_the_same_answer_as_a_wrong_password(app):
    response = sign_in(fresh(app), "nobody@example.com", "whatever it is")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Email or password is incorrect." in response.get_data(as_text=True)


def test_password_is_stored_as_argon2id(session):
    user = make_user(session)

    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


@pytest.mark.production_argon2
def test_sign_in_rehashes_a_password_hashed_with_old_argon2_parameters(app, session):
    user = make_user(session, org=make_org(session))
    old_hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    old_hash = old_hasher.hash(PASSWORD)
    user.password_hash = old_hash
    session.commit()
    assert crypto.password_needs_rehash(old_hash)

    response = sign_in(fresh(app), user.email)

    assert response.status_code == HTTPStatus.FOUND
    session.expire_all()
    new_hash = session.get(User, user.id).password_hash
    assert new_hash != old_hash
    assert new_hash.startswith("$argon2id$")
    assert not crypto.password_needs_rehash(new_hash)
    assert crypto.verify_password(new_hash, PASSWORD)
    again = sign_in(fresh(app), user.email)
    assert again.status_code == HTTPStatus.FOUND, again.get_data(as_text=True)


def test_eleventh_attempt_for_one_account_in_a_minute_is_refused_even_with_the_password(
        app, session):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)
    for _ in range(10):
        assert sign_in(portal, user.email, "wrong password").status_code == 400

    response = sign_in(portal, user.email)

    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    html = response.get_data(as_text=True)
    assert "Too many sign-in attempts. Wait a minute, then try again." in html
    assert '<label for="email">Email</label>' in html  # the form is still there
    assert not signed_in(portal)


def test_account_limit_is_per_account(app, session):
    org = make_org(session)
    locked, other = make_user(session, org=org), make_user(session, org=org)
    portal = fresh(app)
    for _ in range(11):
        sign_in(portal, locked.email, "wrong password")

    assert sign_in(portal, other.email).status_code == HTTPStatus.FOUND


def test_one_address_is_limited_across_accounts(app, session):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)
    here = {"REMOTE_ADDR": "203.0.113.7"}
    for n in range(30):
        response = sign_in(portal, f"guess{n}@example.com", "guess", environ_base=here)
        assert response.status_code == HTTPStatus.BAD_REQUEST

    refused = sign_in(portal, user.email, environ_base=here)
    elsewhere = sign_in(fresh(app), user.email, environ_base={"REMOTE_ADDR": "198.51.100.9"})

    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many sign-in attempts" in refused.get_data(as_text=True)
    assert elsewhere.status_code == HTTPStatus.FOUND


def test_sign_in_returns_to_a_safe_next_page(app, session):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)

    response = sign_in(portal, user.email, query_string={"next": "/members?page=2"})

    assert response.headers["Location"] == "/members?page=2"


@pytest.mark.parametrize("target", [
    "//evil.com", "https://evil.com", "http://evil.com/", "/\\evil.com", "\\\\evil.com",
    "javascript:alert(1)", "/\t/evil.com", "evil.com", "",
])
def test_sign_in_never_redirects_off_site(app, session, target):
    user = make_user(session, org=make_org(session))
    portal = fresh(app)

    response = sign_in(portal, user.email, query_string={"next": target})

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/"


def test_signed_out_visitor_is_sent_to_sign_in_with_next(client):
    response = client.get("/members")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"].startswith("/signin?next=")
    assert "members" in response.headers["Location"]


def test_sign_out_is_a_post_and_ends_the_session(owner):
    assert owner.get("/signout").status_code == HTTPStatus.METHOD_NOT_ALLOWED

    response = owner.post("/signout")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"] == "/signin"
    assert not signed_in(owner)


# -- sign-up -------------------------------------------------------------------------


def test_sign_up_is_not_found_when_off(app):
    portal = fresh(app)

    assert portal.get("/signup").status_code == HTTPStatus.NOT_FOUND
    response = portal.post("/signup", {"org_name": "Initech", "email": "a@initech.test",
                                       "password": PASSWORD, "confirm": PASSWORD})
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert "Page not found" in response.get_data(as_text=True)


class TestSignUp:
    @pytest.fixture
    def app_config(self):
        return {"SIGNUP": True}

    @staticmethod
    def sign_up(portal: Portal, **fields):
        data = {"org_name": "Initech", "email": "peter@initech.test",
                "password": PASSWORD, "confirm": PASSWORD, **fields}
        return portal.post("/signup", data)

    def test_sign_in_page_links_to_sign_up(self, client):
        assert 'href="/signup"' in client.get("/signin").get_data(as_text=True)

    def test_sign_up_page_labels_every_field(self, client):
        html = client.get("/signup").get_data(as_text=True)

        for name, label in [("org_name", "Organisation name"), ("email", "Your email"),
                            ("password", "Password"), ("confirm", "Confirm password")]:
            assert f'<label for="{name}">{label}</label>' in html

    def test_creates_the_org_and_its_owner_and_signs_in(self, app, session):
        portal = fresh(app)

        response = self.sign_up(portal, email="Peter@Initech.test")

        assert response.status_code == HTTPStatus.FOUND
        assert response.headers["Location"] in ("/clients", "/")
        org = session.scalar(select(Organization).where(Organization.name == "Initech"))
        user = session.scalar(select(User).where(User.email == "peter@initech.test"))
        membership = session.scalar(select(Membership).where(Membership.user_id == user.id))
        assert (membership.org_id, membership.role) == (org.id, Role.OWNER)
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash
        actions = set(session.scalars(select(AuditEntry.action).where(
            AuditEntry.org_id == org.id)))
        assert {"org:created", "user:created", "member:added"} <= actions
        members = portal.get("/members")
        assert members.status_code == HTTPStatus.OK
        assert "peter@initech.test" in members.get_data(as_text=True)
        assert '<span class="org-name">Initech</span>' in members.get_data(as_text=True)

    def test_the_new_owner_can_sign_in_again(self, app):
        self.sign_up(fresh(app))

        assert sign_in(fresh(app), "peter@initech.test").status_code == HTTPStatus.FOUND

    def test_an_existing_email_is_a_form_error(self, app, session):
        make_user(session, email="peter@initech.test")
        before = session.scalar(select(func.count(Organization.id)))

        response = self.sign_up(fresh(app), email="PETER@initech.test")

        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert "cannot be used to sign up" in response.get_data(as_text=True)
        assert session.scalar(select(func.count(Organization.id))) == before

    def test_an_existing_org_name_gets_its_own_slug(self, app, session):
        taken = make_org(session, name="Initech")

        response = self.sign_up(fresh(app))

        assert response.status_code == HTTPStatus.FOUND
        slugs = set(session.scalars(select(Organization.slug).where(
            Organization.name == "Initech")))
        assert slugs == {taken.slug, "initech-2"}

    @pytest.mark.parametrize(("fields", "message"), [
        ({"password": "short pass", "confirm": "short pass"}, "Use at least 12 characters."),
        ({"confirm": PASSWORD + "!"}, "The two passwords do not match."),
        ({"email": "not-an-email"}, "Enter a valid email address."),
        ({"org_name": ""}, "Enter your organisation&#39;s name."),
        ({"org_name": "x" * 201}, "Field cannot be longer than 200 characters."),
    ])
    def test_bad_input_is_shown_next_to_the_field(self, app, session, fields, message):
        response = self.sign_up(fresh(app), **fields)

        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert message in response.get_data(as_text=True)
        assert session.scalar(select(func.count(User.id))) == 0

    def test_sign_up_is_rate_limited_per_address(self, app):
        portal = fresh(app)
        for _ in range(10):
            assert self.sign_up(portal, confirm="mismatch").status_code == 400

        response = self.sign_up(portal)

        assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
        assert "Too many sign-ups" in response.get_data(as_text=True)
