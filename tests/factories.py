"""Plain factories: each makes real rows through the services and commits them."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from sqlalchemy.orm import Session

from portal.core.api_keys import services as api_keys
from portal.core.api_keys.models import ApiKey
from portal.core.clients import services as clients
from portal.core.clients.models import Client
from portal.core.orgs import services as orgs
from portal.core.orgs.models import Organization
from portal.core.users import services as users
from portal.core.users.models import User

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


def make_org(session: Session, *, name: str | None = None, **kwargs: Any) -> Organization:
    org = orgs.create_org(session, name=name or f"Org {next(_seq)}", actor="test", **kwargs)
    session.commit()
    return org


def make_user(session: Session, *, org: Organization | None = None, role: str = "admin",
              email: str | None = None, password: str = PASSWORD) -> User:
    user = users.create_user(session, email=email or f"user{next(_seq)}@example.com",
                             password=password, org=org, role=role, actor="test")
    session.commit()
    return user


def make_client(session: Session, org: Organization, **overrides: Any) -> tuple[Client, str]:
    """A client with scopes ``read write`` and audience ``https://api.example.com``."""
    values: dict[str, Any] = {
        "name": f"client {next(_seq)}",
        "scopes": ["read", "write"],
        "audiences": ["https://api.example.com"],
    }
    values.update(overrides)
    client, secret = clients.create_client(session, org=org, actor="test", **values)
    session.commit()
    return client, secret or ""


def make_api_key(session: Session, org: Organization) -> tuple[str, ApiKey]:
    plaintext, key = api_keys.create_api_key(session, org=org, name="test key", actor="test")
    session.commit()
    return plaintext, key


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization header for client_secret_basic."""
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def get_token(http: Any, client: Client, secret: str, **params: Any) -> str:
    """A token from the token endpoint, asserting success."""
    response = http.post("/oauth/token", data={"grant_type": "client_credentials", **params},
                         headers=basic(client.client_id, secret))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def bearer(api_key: str) -> dict[str, str]:
    """An Authorization header presenting an org API key."""
    return {"Authorization": f"Bearer {api_key}"}


def issue(session: Session, client: Client, *, now: Any = None, **kwargs: Any) -> str:
    """A token issued straight through the service (``now`` in the past makes it expired)."""
    from portal.core.tokens.services import issue_token

    issued = issue_token(session, client=client, org_public_id=client.org.public_id, now=now,
                         **kwargs)
    session.commit()
    return issued.access_token


def age_next_key(session: Session, org: Organization, *, ready_by: Any = None) -> None:
    """Backdate the org's ``next`` key as if it had been published long enough to start
    signing by ``ready_by`` (default now): rotation refuses a key published too recently."""
    from datetime import timedelta

    from portal.core.signing_keys.models import KeyState
    from portal.core.signing_keys.services import org_keys, publication_delay
    from portal.core.types import utcnow

    (key,) = [k for k in org_keys(session, org_id=org.id) if k.state is KeyState.NEXT]
    key.created_at = (ready_by or utcnow()) - publication_delay() - timedelta(seconds=1)
    session.commit()
