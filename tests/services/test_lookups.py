"""Lookups the portal views and the management API call instead of building queries:
each filters by the org in SQL, so another org's row reads exactly like a missing one."""

from __future__ import annotations

import pytest

from portal.core.clients import services as clients
from portal.core.users import services as users
from tests.factories import TEST_ACTOR, make_client, make_user


def test_enabled_clients_are_the_orgs_own_by_name(session, tenants):
    acme, globex = tenants.ours.org, tenants.theirs.org
    _, zeta = make_client(session, acme, name="zeta")
    _, alpha = make_client(session, acme, name="alpha")
    _, off = make_client(session, acme, name="beta")
    clients.set_enabled(session, off, enabled=False, actor=TEST_ACTOR)
    make_client(session, globex, name="aardvark")

    assert clients.list_enabled_clients(session, org_id=acme.id) == [alpha, zeta]


def test_another_orgs_client_is_not_found(session, tenants):
    ours, theirs = tenants.ours, tenants.theirs

    for org, client in ((ours.org, theirs.client), (theirs.org, ours.client)):
        assert clients.find_client(session, org_id=org.id, public_id=client.public_id) is None
    for org, client in ((ours.org, ours.client), (theirs.org, theirs.client)):
        assert clients.find_client(session, org_id=org.id, public_id=client.public_id) is client


@pytest.mark.parametrize("public_id", ["\x00", "lkc_\x00", "lkc_" + "a" * 70, ""])
def test_an_id_no_client_can_have_is_a_miss_not_a_database_error(session, tenants, public_id):
    org = tenants.ours.org
    tenants.ours.client  # noqa: B018 (the org has a client)

    assert clients.find_client(session, org_id=org.id, public_id=public_id) is None
    assert clients.find_client_for_auth(session, public_id) is None


def test_a_user_of_another_org_is_not_a_member(session, tenants):
    acme, globex = tenants.ours.org, tenants.theirs.org
    stranger = make_user(session, org=globex)

    assert users.find_member(session, org_id=acme.id, public_id=stranger.public_id) is None
    assert users.find_member(session, org_id=globex.id, public_id=stranger.public_id) is stranger
