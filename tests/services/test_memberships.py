"""Membership rules on every backend: the last owner under concurrency, removal revoking
the tokens that act for the member, invitations stored as keyed hashes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.db import new_session
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.tokens import services as tokens
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.users import invitations
from portal.core.users import services as users
from portal.core.users.models import Invitation, Membership, Role
from tests.factories import TEST_ACTOR, make_client, make_org, make_user, mint

ACTOR = Actor("user:owner@example.com", "192.0.2.1")


def membership_of(session, user, org) -> Membership:
    return session.scalar(select(Membership).where(
        Membership.user_id == user.id, Membership.org_id == org.id))


def owners(session, org) -> int:
    session.expire_all()
    return session.scalar(select(func.count(Membership.id)).where(
        Membership.org_id == org.id, Membership.role == Role.OWNER)) or 0


# -- the last owner, concurrently (review L10) ---------------------------------------------


def race(app, *actions: Callable[[Any, Membership], Any], targets: list[int]) -> list[str]:
    """Run each action in its own thread and session, all released at once by a barrier.

    Each thread first reads its target membership (as the view does), then
    waits, then calls the service and commits. Returns "done" or "refused" per action.
    """
    barrier = threading.Barrier(len(actions))
    outcome = ["?"] * len(actions)

    def run(i: int) -> None:
        with app.app_context():
            db = new_session()
            try:
                membership = db.get(Membership, targets[i])
                barrier.wait(timeout=10)
                actions[i](db, membership)
                db.commit()
                outcome[i] = "done"
            except (ValidationFailed, NotFound):
                db.rollback()
                outcome[i] = "refused"
            except Exception as e:  # reported, not swallowed
                db.rollback()
                outcome[i] = f"error: {type(e).__name__}: {e}"
            finally:
                db.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


def demote(db, membership):
    users.set_role(db, membership=membership, role="viewer", actor=ACTOR)


def remove(db, membership):
    users.remove_membership(db, membership=membership, actor=ACTOR)


# SQLite runs one writer at a time: the race is PostgreSQL's (READ COMMITTED).
@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize(("first", "second"), [(demote, demote), (remove, remove),
                                               (demote, remove)],
                         ids=["demote-demote", "remove-remove", "demote-remove"])
def test_two_owners_acting_on_each_other_at_once_leave_an_owner(app, session, first, second):
    org = make_org(session)
    for round_ in range(8):
        a = make_user(session, org=org, role="owner", email=f"a{round_}@example.com")
        b = make_user(session, org=org, role="owner", email=f"b{round_}@example.com")
        for m in session.scalars(select(Membership).where(
                Membership.org_id == org.id, Membership.user_id.not_in([a.id, b.id]))):
            session.delete(m)
        session.commit()
        assert owners(session, org) == 2

        outcome = race(app, first, second,
                       targets=[membership_of(session, b, org).id,
                                membership_of(session, a, org).id])

        assert sorted(outcome) == ["done", "refused"], outcome
        assert owners(session, org) == 1, f"round {round_}: {outcome}"


def test_the_last_owner_cannot_be_demoted_or_removed(session, database_url):
    org = make_org(session)
    owner = make_user(session, org=org, role="owner")
    membership = membership_of(session, owner, org)

    with pytest.raises(ValidationFailed, match="last owner cannot be demoted"):
        users.set_role(session, membership=membership, role="admin", actor=ACTOR)
    with pytest.raises(ValidationFailed, match="last owner cannot be removed"):
        users.remove_membership(session, membership=membership, actor=ACTOR)


# -- removal revokes the tokens acting for the member (review M1) ------------------------


def test_removal_revokes_only_live_tokens_of_user_clients_acting_for_the_member(session, tenants):
    org, other = tenants.ours.org, tenants.theirs.org
    leaver = make_user(session, org=org, role="admin")
    users.add_membership(session, org=other, user=leaver, role="admin", actor=TEST_ACTOR)
    stayer = make_user(session, org=org, role="admin")
    session.commit()
    _, for_leaver = make_client(session, org, kind="user", user=leaver)
    _, for_leaver_elsewhere = make_client(session, other, kind="user", user=leaver)
    _, for_stayer = make_client(session, org, kind="user", user=stayer)
    _, org_client = make_client(session, org)
    now = utcnow()

    def issue(client, **kwargs):
        return mint(session, client, **kwargs).values["jti"]

    live = issue(for_leaver)
    expired = issue(for_leaver, now=now - timedelta(days=2))
    already = issue(for_leaver)
    tokens.revoke(session, tokens.get_record(session, org_id=org.id, jti=already),
                  actor=Actor("user:earlier"))
    session.commit()
    untouched = [issue(for_leaver_elsewhere), issue(for_stayer), issue(org_client)]

    revoked = users.remove_membership(session, membership=membership_of(session, leaver, org),
                                      actor=ACTOR)
    session.commit()

    assert revoked == 1
    records = {r.jti: r for r in session.scalars(select(IssuedToken))}
    assert records[live].revoked_at is not None
    assert records[live].revoked_by == ACTOR.label
    assert records[expired].revoked_at is None
    assert records[already].revoked_by == "user:earlier"
    assert all(records[jti].revoked_at is None for jti in untouched)


# -- invitations --------------------------------------------------------------------------


def test_an_invitation_secret_is_stored_only_as_a_keyed_hash(session):
    org = make_org(session)

    token, invitation = invitations.invite(session, org=org, email="Someone@Example.com",
                                           role="viewer", actor=ACTOR)
    session.commit()

    assert token.startswith(crypto.INVITATION_PREFIX)
    row = session.scalar(select(Invitation).where(Invitation.id == invitation.id))
    assert row.email == "someone@example.com"
    assert row.token_hash == crypto.hmac_digest(settings.hmac_key(), token)
    assert token.encode() not in row.token_hash and token[-20:].encode() not in row.token_hash
    assert invitations.find_pending(session, token).id == invitation.id
    other_last = "B" if token.endswith("A") else "A"  # a token one character off
    assert invitations.find_pending(session, token[:-1] + other_last) is None


def test_accepting_an_invitation_of_another_org_does_not_touch_this_one(session, tenants):
    org, other = tenants.ours.org, tenants.theirs.org
    token, _ = invitations.invite(session, org=org, email="x@example.com", role="admin",
                                  actor=ACTOR)
    session.commit()

    with pytest.raises(NotFound):
        invitations.revoke_invitation(session, org_id=other.id,
                                      invitation_id=invitations.find_pending(session, token).id,
                                      actor=ACTOR)
    session.rollback()
    assert invitations.find_pending(session, token) is not None


def test_reset_is_refused_once_the_account_joined_another_org(session, tenants):
    org, other = tenants.ours.org, tenants.theirs.org
    owner = make_user(session, org=org, role="owner")
    member = make_user(session, org=org, role="viewer", email="member@example.com")
    token, _ = invitations.invite(session, org=other, email=member.email, role="viewer",
                                  actor=ACTOR)
    session.commit()
    membership = membership_of(session, member, org)
    users.check_reset_allowed(session, membership=membership, actor_user_id=owner.id)
    temporary = users.hash_new_password(users.new_temporary_password())
    invitations.accept_as_user(session, token=token, user_id=member.id, source_ip="")  # meanwhile
    session.commit()

    with pytest.raises(Conflict, match="also a member of another organisation"):
        users.reset_password(session, membership=membership, temporary=temporary,
                             actor_user_id=owner.id, actor=ACTOR)
