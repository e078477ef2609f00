"""The per-key limit of /api/v1 is counted in Redis when LATCHKEY_REDIS_URL is set, so
every worker and machine shares it."""

from __future__ import annotations

import pytest

from tests.api.test_rate_limit_redis import redis_url  # noqa: F401 (a fixture)
from tests.conftest import base_config
from tests.factories import bearer, make_api_key

pytestmark = pytest.mark.redis


@pytest.fixture
def app_config(redis_url):  # noqa: F811
    return {"REDIS_URL": redis_url, "RATELIMIT_STORAGE_URI": None, "API_RATE_LIMIT": "2/minute"}


def test_requests_counted_by_one_process_limit_another(client, session, org, database_url,
                                                       app_config, another_app, redis_url):  # noqa: F811
    import redis

    key, _ = make_api_key(session, org, role="viewer")
    assert [client.get("/api/v1/clients", headers=bearer(key)).status_code
            for _ in range(2)] == [200, 200]
    assert redis.Redis.from_url(redis_url).keys("*api-v1-key*")

    other = another_app(base_config(database_url, **app_config))
    response = other.test_client().get("/api/v1/clients", headers=bearer(key))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_a_redis_app_built_after_a_database_one_counts_in_redis(session, org, database_url,
                                                                app_config, another_app):
    """Flask-Limiter keeps storage options across apps of a process: the database's
    connections must not reach the Redis storage of an app built after it."""
    key, _ = make_api_key(session, org, role="viewer")
    another_app(base_config(database_url, RATELIMIT_STORAGE_URI=None, REDIS_URL=None))

    on_redis = another_app(base_config(database_url, **app_config)).test_client()

    assert on_redis.get("/api/v1/clients", headers=bearer(key)).status_code == 200
