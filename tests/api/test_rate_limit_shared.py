"""Without Redis, failure limits are counted in the database: one count per deployment,
not per worker process (review L3)."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from sqlalchemy import func, select

from portal.core.ratelimit.models import RateLimitCounter
from tests.api.conftest import BACKEND_DOORS, wrong_secrets_then_the_right_one_elsewhere
from tests.conftest import base_config
from tests.factories import basic, make_client, make_org

GRANT = {"grant_type": "client_credentials"}
SHARED = {"RATELIMIT_STORAGE_URI": None, "REDIS_URL": None,
          "TOKEN_FAILURE_RATE_LIMIT": "3/minute"}


@pytest.fixture(params=[p for p in BACKEND_DOORS if p.values[0][1] == "wsgi"])
def backend_door(request):
    """A limit's storage does not depend on the door."""
    return tuple(request.param)


@pytest.fixture
def extra_config():
    return SHARED


def test_failures_counted_by_one_process_limit_another(app, client, session, database_url,
                                                       another_app):
    secret, c = make_client(session, make_org(session))
    # A second app is what a second worker or machine would be: only the database
    # can carry the count between them.
    other = another_app(base_config(database_url, **SHARED))

    response = wrong_secrets_then_the_right_one_elsewhere(client, other, c, secret)

    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.get_json()["error"] == "invalid_request"
    assert int(response.headers["Retry-After"]) >= 1


def test_the_count_lives_in_the_database(client, session):
    client.post("/oauth/token", data=GRANT, headers=basic("lkc_nobody", "wrong"))
    session.commit()
    counted = session.scalar(select(func.sum(RateLimitCounter.hits)).where(
        RateLimitCounter.key.contains("client-auth-failures")))
    assert counted == 1


def test_sign_in_attempts_are_counted_in_the_database_too(app, session, database_url,
                                                          another_app):
    from tests.portal.conftest import csrf_token

    limits = {**SHARED, "SIGNIN_RATE_LIMIT_PER_ACCOUNT": "2/minute"}
    first = another_app(base_config(database_url, **limits)).test_client()
    second = another_app(base_config(database_url, **limits)).test_client()

    def attempt(http):
        token = csrf_token(http.get("/signin").get_data(as_text=True))
        return http.post("/signin", data={"email": "who@example.com", "password": "wrong pass",
                                          "csrf_token": token})

    statuses = [attempt(first).status_code, attempt(second).status_code,
                attempt(first).status_code]
    assert statuses == [HTTPStatus.BAD_REQUEST, HTTPStatus.BAD_REQUEST,
                        HTTPStatus.TOO_MANY_REQUESTS]
