"""An org API key's "last used" (the portal's API keys page, ``last_used_at`` of the API):
written when the key authenticates a request on /api/v1, at most once a minute, and only
for that key. The protocol endpoints' side is in tests/api/test_introspect.py."""

from __future__ import annotations

from datetime import timedelta

from portal.core.api_keys.models import ApiKey
from portal.core.clients.models import Client
from portal.core.types import utcnow
from tests.api_v1.conftest import new_client_body
from tests.conftest import database_url  # noqa: F401 (both backends here: a write of its own)
from tests.factories import bearer, make_api_key


def last_used(session, key: ApiKey):
    session.expire_all()
    return session.get(ApiKey, key.id).last_used_at


def set_last_used(session, key: ApiKey, ago: timedelta) -> None:
    session.get(ApiKey, key.id).last_used_at = utcnow() - ago
    session.commit()


def test_a_key_shows_when_it_last_authenticated_a_read_or_a_change(
        client, session, org, other_org, orders_api):
    plaintext, key = make_api_key(session, org, role="admin")
    _, theirs = make_api_key(session, other_org, role="admin")
    started = utcnow() - timedelta(seconds=1)

    assert client.get("/api/v1/clients", headers=bearer(plaintext)).status_code == 200
    first = last_used(session, key)
    assert first is not None and first >= started
    assert last_used(session, theirs) is None

    # A change's transaction holds SQLite's write lock: the write waits for nothing, and
    # the change itself lands.
    set_last_used(session, key, timedelta(minutes=5))
    response = client.post("/api/v1/clients", json=new_client_body(name="after"),
                           headers=bearer(plaintext))
    assert response.status_code == 201
    assert last_used(session, key) >= started
    session.expire_all()
    assert session.query(Client).filter_by(name="after", org_id=org.id).count() == 1


def test_within_a_minute_a_key_is_not_written_again(client, session, org):
    plaintext, key = make_api_key(session, org, role="viewer")
    set_last_used(session, key, timedelta(seconds=10))
    recent = last_used(session, key)

    assert client.get("/api/v1/clients", headers=bearer(plaintext)).status_code == 200
    assert last_used(session, key) == recent


def test_a_refused_key_is_not_marked_used(client, session, org):
    plaintext, key = make_api_key(session, org)  # introspect: may not read clients
    assert client.get("/api/v1/clients", headers=bearer(plaintext)).status_code == 403
    assert last_used(session, key) is None
