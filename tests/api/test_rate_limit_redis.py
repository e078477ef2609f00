"""Failed-authentication limits are shared through Redis when LATCHKEY_REDIS_URL is set."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from tests.api.conftest import wrong_secrets_then_the_right_one_elsewhere
from tests.conftest import REDIS_URL, base_config, unavailable
from tests.factories import basic, make_client, make_org

pytestmark = pytest.mark.redis
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def redis_url():
    import redis

    connection = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        connection.ping()
    except redis.RedisError as e:
        unavailable("Redis", str(e))
    connection.flushdb()  # database 15 is the tests' own
    yield REDIS_URL
    connection.flushdb()


@pytest.fixture
def app_config(redis_url):
    return {"REDIS_URL": redis_url, "RATELIMIT_STORAGE_URI": None,
            "TOKEN_FAILURE_RATE_LIMIT": "3/minute"}


def test_failures_counted_by_one_process_limit_another(app, client, session, database_url,
                                                       app_config, another_app):
    secret, c = make_client(session, make_org(session))
    # A second app is what a second gunicorn worker or machine would be: it
    # builds its own storage connection, so only Redis can carry the count.
    other = another_app(base_config(database_url, **app_config))

    response = wrong_secrets_then_the_right_one_elsewhere(client, other, c, secret)

    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.get_json()["error"] == "invalid_request"


def test_failure_count_lives_in_redis(app, client, session, redis_url):
    import redis

    _secret, c = make_client(session, make_org(session))
    client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "wrong"))

    keys = redis.Redis.from_url(redis_url).keys("*client-auth-failures*")
    assert len(keys) == 1
