"""argon2 never runs while the request holds a database transaction (review H3).

Every password hash or verification is watched: at that moment the request's
session must have no transaction open (on SQLite an open one may hold the one
write lock that token issuance waits for; on PostgreSQL it holds a connection).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest
from flask import g
from sqlalchemy import select

from portal.core import crypto
from portal.core.actor import Actor
from portal.core.users.invitations import invite
from portal.core.users.models import Membership
from tests.factories import PASSWORD, make_user
from tests.portal.conftest import Portal, csrf_token

NEW_PASSWORD = "a different passphrase"


@pytest.fixture
def hashing(monkeypatch) -> list[tuple[str, bool]]:
    """Each argon2 call made from now on: (what, whether a transaction was open)."""
    calls: list[tuple[str, bool]] = []
    real_hash, real_verify = crypto.hash_password, crypto.verify_password

    def open_transaction() -> bool:
        session = g.get("db_session")
        return session is not None and session.in_transaction()

    def hash_password(password: str) -> str:
        calls.append(("hash", open_transaction()))
        return real_hash(password)

    def verify_password(password_hash: str, password: str) -> bool:
        calls.append(("verify", open_transaction()))
        return real_verify(password_hash, password)

    monkeypatch.setattr(crypto, "hash_password", hash_password)
    monkeypatch.setattr(crypto, "verify_password", verify_password)
    return calls


def assert_outside(calls: list[tuple[str, bool]], *expected: str) -> None:
    assert [what for what, _ in calls] == list(expected)
    assert [open_ for _, open_ in calls] == [False] * len(expected), calls


def signin_page(app) -> Portal:
    portal = Portal(app.test_client())
    portal.token = csrf_token(portal.get("/signin").get_data(as_text=True))
    return portal


@pytest.mark.parametrize(("password", "known"), [
    (PASSWORD, True), ("wrong password", True), ("whatever", False)],
    ids=["right", "wrong", "unknown-email"])
def test_sign_in(app, session, org, hashing, password, known):
    user = make_user(session, org=org)
    portal = signin_page(app)
    hashing.clear()

    response = portal.post("/signin", {"email": user.email if known else "no@example.com",
                                       "password": password})

    assert response.status_code in (HTTPStatus.FOUND, HTTPStatus.BAD_REQUEST)
    assert_outside(hashing, "verify")


class TestSignUp:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"SIGNUP": True}

    def test_sign_up(self, app, hashing):
        portal = signin_page(app)
        hashing.clear()

        response = portal.post("/signup", {"org_name": "Hashco", "email": "h@hashco.test",
                                           "password": PASSWORD, "confirm": PASSWORD})

        assert response.status_code == HTTPStatus.FOUND
        assert_outside(hashing, "hash")


def test_invitation_with_a_new_account(app, session, org, hashing):
    token, _ = invite(session, org=org, email="new@example.com", role="viewer",
                      actor=Actor("test"))
    session.commit()
    portal = signin_page(app)
    hashing.clear()

    response = portal.post("/invitation/accept", {"token": token, "password": NEW_PASSWORD,
                                                  "confirm": NEW_PASSWORD})

    assert response.status_code == HTTPStatus.FOUND
    assert_outside(hashing, "hash")


def test_password_change(app, session, org, hashing):
    user = make_user(session, org=org)
    portal = Portal(app.test_client())
    portal.sign_in(user.email)
    hashing.clear()

    response = portal.post("/account/password", {
        "current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

    assert response.status_code == HTTPStatus.FOUND
    assert_outside(hashing, "verify", "verify", "hash")


def test_owner_reset(app, session, org, hashing, owner):
    member = make_user(session, org=org, role="viewer")
    membership = session.scalar(select(Membership).where(Membership.user_id == member.id))
    hashing.clear()

    response = owner.form_post(f"/members/{membership.id}/reset-password", {})

    assert response.status_code == HTTPStatus.OK
    assert_outside(hashing, "hash")
