"""SQLite's write lock: portal pages (GET) never hold it; changes (POST) take it first.

The probe is a second, plain ``sqlite3`` connection that tries ``BEGIN
IMMEDIATE`` without waiting, from inside the request while the page renders
(Flask's ``template_rendered`` signal): what the token endpoint's write would
meet at that moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask, template_rendered
from sqlalchemy import select

from portal.core.db import get_session
from portal.core.orgs.models import Organization
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from tests.factories import make_client


def write_lock_free(app: Flask) -> bool:
    """Whether another connection could take the write lock right now."""
    path = app.config["DATABASE_URL"].split("sqlite:///", 1)[1]
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
        return False
    finally:
        probe.close()


@contextmanager
def probing_while_rendering(app: Flask) -> Iterator[list[bool]]:
    """Probe the write lock each time a template renders; yields the outcomes."""
    seen: list[bool] = []

    def probe(_sender: Flask, **_extra: object) -> None:
        seen.append(write_lock_free(app))

    with template_rendered.connected_to(probe, app):
        yield seen


@pytest.fixture
def usage_history(session, org):
    _, client = make_client(session, org, name="billing")
    for _ in range(20):
        usage.record_event(session, kind=UsageKind.TOKEN_ISSUED, org_id=org.id,
                           client_id=client.id, client_ref=client.public_id)
    session.commit()
    return client


@pytest.mark.parametrize("path", ["/usage?period=30d", "/clients", "/keys", "/audit"])
def test_portal_page_does_not_hold_the_write_lock_while_it_renders(app, viewer, usage_history,
                                                                   path):
    with probing_while_rendering(app) as seen:
        response = viewer.get(path)

    assert response.status_code == 200
    assert seen and all(seen), "a GET held SQLite's write lock while rendering"


def test_sign_in_page_does_not_hold_the_write_lock(app, client):
    with probing_while_rendering(app) as seen:
        response = client.get("/signin")

    assert response.status_code == 200
    assert seen == [True]


def test_portal_change_takes_the_write_lock_before_it_reads(app, admin):
    # A refused change still renders its form inside the write transaction,
    # which began IMMEDIATE at the request's first read (loading the user).
    with probing_while_rendering(app) as seen:
        response = admin.post("/keys/rotate", {"alg": "HS256"})

    assert response.status_code == 400
    assert seen == [False]


def test_write_lock_is_free_again_after_the_page(app, viewer, usage_history):
    viewer.get("/usage")

    assert write_lock_free(app)


@pytest.fixture
def page_that_writes(app, org) -> str:
    """A GET view that (wrongly) changes the org; added before any request is served."""

    @app.get("/test-writes-on-get")
    def writes_on_get() -> str:
        get_session().get(Organization, org.id).name = "Changed by a GET"  # type: ignore[union-attr]
        get_session().flush()
        return "wrote"

    return "/test-writes-on-get"


def test_page_that_writes_fails_loudly_and_writes_nothing(app, session, page_that_writes, viewer,
                                                          org, caplog):
    response = viewer.get(page_that_writes)

    assert response.status_code == 500
    assert "ReadOnlyTransaction" in caplog.text
    session.expire_all()
    assert session.scalar(select(Organization.name).where(Organization.id == org.id)) == "Acme"
