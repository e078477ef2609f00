"""Lookups the portal views and the management API call instead of building queries:
each filters by the org in SQL, so another org's row reads exactly like a missing one."""

from __future__ import annotations

from portal.core.clients import services as clients
from portal.core.users import services as users
from tests.factories import TEST_ACTOR, make_client, make_org, make_user


def test_enabled_clients_are_the_orgs_own_by_name(session):
    acme, globex = make_org(session), make_org(session)
    _, zeta = make_client(session, acme, name="zeta")
    _, alpha = make_client(session, acme, name="alpha")
    _, off = make_client(session, acme, name="beta")
    clients.set_enabled(session, off, enabled=False, actor=TEST_ACTOR)
    make_client(session, globex, name="aardvark")

    assert clients.list_enabled_clients(session, org_id=acme.id) == [alpha, zeta]


def test_another_orgs_client_is_not_found(session):
    acme, globex = make_org(session), make_org(session)
    _, theirs = make_client(session, globex)

    assert clients.find_client(session, org_id=acme.id, public_id=theirs.public_id) is None
    assert clients.find_client(session, org_id=globex.id, public_id=theirs.public_id) is theirs


def test_a_user_of_another_org_is_not_a_member(session):
    acme, globex = make_org(session), make_org(session)
    stranger = make_user(session, org=globex)

    assert users.find_member(session, org_id=acme.id, public_id=stranger.public_id) is None
    assert users.find_member(session, org_id=globex.id, public_id=stranger.public_id) is stranger
