"""With ``WRITE_DELAY_MS`` (the default outside tests), the protocol endpoints' usage
events are written in batches (and the token endpoint's records with them:
tests/api/test_deferred_records.py)."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from sqlalchemy import func, select

from portal.core.db import get_engine
from portal.core.tokens.store import EXTENSION_KEY as STORE_KEY
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import basic

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def extra_config():
    # Long enough that the queue's own thread never writes during a test.
    return {"WRITE_DELAY_MS": 60_000}


def count(session, kind: UsageKind) -> int:
    """How many such events are written (the read's transaction ends at once: on SQLite
    the arranging session's would hold the write lock the queue needs)."""
    session.commit()
    found = int(session.scalar(
        select(func.count()).select_from(UsageEvent).where(UsageEvent.kind == kind)) or 0)
    session.commit()
    return found


def test_introspections_and_failures_are_written_together(app, client, session, acme, token):
    secret, c = acme
    for _ in range(3):
        answer = client.post("/oauth/introspect", data={"token": token},
                             headers=basic(c.public_id, secret))
        assert answer.get_json()["active"] is True
    refused = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "wrong"))
    assert refused.status_code == HTTPStatus.UNAUTHORIZED
    assert count(session, UsageKind.TOKEN_INTROSPECTED) == 0

    app.extensions[STORE_KEY].queue.flush()

    assert count(session, UsageKind.TOKEN_INTROSPECTED) == 3
    assert count(session, UsageKind.TOKEN_FAILED) == 1


def test_the_queue_is_written_when_the_engine_is_disposed(app, client, session, acme, token):
    secret, c = acme
    client.post("/oauth/introspect", data={"token": token}, headers=basic(c.public_id, secret))
    get_engine().dispose()
    assert count(session, UsageKind.TOKEN_INTROSPECTED) == 1


def test_the_queue_writes_on_its_own_after_its_delay(app, client, session, acme, monkeypatch):
    import time

    queue = app.extensions[STORE_KEY].queue
    monkeypatch.setattr(queue, "delay", 0.05)  # before its thread starts, with the first event
    secret, c = acme
    client.post("/oauth/introspect", data={"token": "x"}, headers=basic(c.public_id, secret))
    deadline = time.monotonic() + 10
    while count(session, UsageKind.TOKEN_INTROSPECTED) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(session, UsageKind.TOKEN_INTROSPECTED) == 1
