"""Probes and metrics are never rate limited, even under a default limit for every route."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from tests.factories import make_org


@pytest.fixture
def default_limit():
    """A default limit for every route, for one test: the limiter is one object shared
    by every app, which keeps the first default limit it is given (Flask-Limiter)."""
    from portal.extensions import limiter

    manager = limiter.limit_manager
    saved = manager._default_limits
    yield {"RATELIMIT_DEFAULT": "2/minute"}
    manager.set_default_limits(saved)


@pytest.fixture
def app_config(default_limit):
    return default_limit


def test_probes_and_metrics_are_never_rate_limited(client, session):
    make_org(session)
    statuses = [client.get(path).status_code for _ in range(5)
                for path in ("/healthz", "/readyz", "/metrics")]

    assert set(statuses) == {HTTPStatus.OK}
    # The limit is really in force: a portal page gets 429.
    assert [client.get("/signin").status_code for _ in range(3)][-1] == 429


