"""``latchkey rotate-signing-key``: refused (or waited for) while the next key is too young,
and the org keeps its algorithm."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.cli import cli
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState
from tests.factories import age_next_key


def invoke(runner, *args):
    return runner.invoke(cli, list(args))


def keys(session, org):
    session.expire_all()
    return {k.state: k for k in signing_keys.org_keys(session, org_id=org.id)
            if k.state is not KeyState.RETIRED}


def test_rotation_too_soon_is_refused_with_when_it_can_happen(session, runner, acme):
    before = keys(session, acme)

    result = invoke(runner, "rotate-signing-key", "--org", "acme")

    assert result.exit_code == 2
    ready = signing_keys.ready_at(before[KeyState.NEXT])
    assert f"can start signing only after {ready:%Y-%m-%d %H:%M:%S} UTC" in result.output
    assert "(or pass --wait)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert keys(session, acme)[KeyState.ACTIVE].kid == before[KeyState.ACTIVE].kid


def test_every_org_that_can_rotates_and_the_others_are_named(session, runner, acme, globex):
    age_next_key(session, acme)
    upcoming = keys(session, acme)[KeyState.NEXT].kid

    result = invoke(runner, "rotate-signing-key")

    assert result.exit_code == 2
    assert f"acme: now signing with {upcoming}" in result.output
    assert "globex: The next key" in result.output
    assert keys(session, acme)[KeyState.ACTIVE].kid == upcoming
    assert keys(session, globex)[KeyState.NEXT].state is KeyState.NEXT


@pytest.mark.parametrize("app_config", [{"JWKS_MAX_AGE": 1, "KEY_CACHE_SECONDS": 0}])
def test_wait_waits_until_the_next_key_may_sign_then_rotates(session, runner, acme, app_config):
    upcoming = keys(session, acme)[KeyState.NEXT].kid

    result = invoke(runner, "rotate-signing-key", "--org", "acme", "--wait")

    assert result.exit_code == 0, result.output
    assert "acme: waiting" in result.output
    assert f"acme: now signing with {upcoming}" in result.output
    assert keys(session, acme)[KeyState.ACTIVE].kid == upcoming


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_rotation_without_alg_keeps_the_orgs_algorithm(session, runner, alg):
    assert invoke(runner, "create-org", "--name", "Curvy", "--slug", "curvy",
                  "--alg", alg).exit_code == 0
    from portal.core.orgs.models import Organization

    org = session.scalar(select(Organization).where(Organization.slug == "curvy"))
    for _ in range(2):
        age_next_key(session, org)
        result = invoke(runner, "rotate-signing-key", "--org", "curvy")
        assert result.exit_code == 0, result.output

    assert {k.alg for k in keys(session, org).values()} == {alg}


def test_alg_option_sets_the_algorithm_of_the_new_next_key(session, runner, acme):
    age_next_key(session, acme)

    result = invoke(runner, "rotate-signing-key", "--org", "acme", "--alg", "ES256")

    assert result.exit_code == 0, result.output
    assert keys(session, acme)[KeyState.NEXT].alg == "ES256"
    assert keys(session, acme)[KeyState.ACTIVE].alg == "RS256"
