"""Fixtures shared by the protocol suites: an org, a client of it, a token, another org."""

from __future__ import annotations

import pytest

from tests.factories import get_token, make_client, make_org


@pytest.fixture
def org(session):
    return make_org(session)


@pytest.fixture
def other_org(session):
    """A second tenant, for isolation tests."""
    return make_org(session)


@pytest.fixture
def acme(session, org):
    """``(client, secret)``: scopes ``read write``, audience ``https://api.example.com``."""
    return make_client(session, org)


@pytest.fixture
def token(client, acme):
    c, secret = acme
    return get_token(client, c, secret)
