"""Plain factories: each makes real rows through the services and commits them."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from sqlalchemy.orm import Session

from portal.core.actor import Actor
from portal.core.api_keys import services as api_keys
from portal.core.api_keys.models import ApiKey
from portal.core.apis import services as apis
from portal.core.apis.models import Api
from portal.core.clients import services as clients
from portal.core.clients.models import Client
from portal.core.orgs import services as orgs
from portal.core.orgs.models import Organization
from portal.core.users import services as users
from portal.core.users.models import User

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"
API_IDENTIFIER = "https://api.example.com"
TEST_ACTOR = Actor("test")


def make_org(session: Session, *, name: str | None = None, **kwargs: Any) -> Organization:
    org = orgs.create_org(session, name=name or f"Org {next(_seq)}", actor=TEST_ACTOR, **kwargs)
    session.commit()
    return org


def make_user(session: Session, *, org: Organization | None = None, role: str = "admin",
              email: str | None = None, password: str = PASSWORD) -> User:
    user = users.create_user(session, email=email or f"user{next(_seq)}@example.com",
                             password=password, org=org, role=role, actor=TEST_ACTOR)
    session.commit()
    return user


def make_client(session: Session, org: Organization, **overrides: Any) -> tuple[str, Client]:
    """A client granted scopes ``read write`` of the org's API ``https://api.example.com``
    (see :func:`_default_identifier` for a second org).

    ``scopes`` and ``audiences`` work as ``latchkey create-client`` takes them: each
    audience is the org's API of that identifier (registered when missing) or a
    deployment API, granted those scopes. ``grants`` ([(api, scopes)]) bypasses that.
    """
    scopes = overrides.pop("scopes", ["read", "write"])
    audiences = overrides.pop("audiences", None) or [_default_identifier(session, org)]
    values: dict[str, Any] = {"name": f"client {next(_seq)}"}
    values.update(overrides)
    if "grants" not in values:
        values["grants"] = apis.apis_for_audiences(session, org=org, audiences=audiences,
                                                   scopes=scopes, actor=TEST_ACTOR)
    secret, client = clients.create_client(session, org=org, actor=TEST_ACTOR, **values)
    session.commit()
    return secret or "", client


def _default_identifier(session: Session, org: Organization) -> str:
    """``https://api.example.com`` for the first org that uses it; identifiers are unique
    across orgs, so another org's clients get ``https://api.example.com/<slug>``."""
    api = apis.find_api(session, API_IDENTIFIER)
    if api is None or api.org_id == org.id:
        return API_IDENTIFIER
    return f"{API_IDENTIFIER}/{org.slug}"


def make_api(session: Session, org: Organization | None, *, identifier: str | None = None,
             scopes: tuple[str, ...] = ("read", "write"), **kwargs: Any) -> Api:
    """An API of ``org`` (None: a deployment API) with these scopes."""
    api = apis.create_api(
        session, org=org, identifier=identifier or f"https://api{next(_seq)}.example.com",
        name=kwargs.pop("name", f"API {next(_seq)}"), scopes=[(s, "") for s in scopes],
        actor=TEST_ACTOR, **kwargs)
    session.commit()
    return api


def make_api_key(session: Session, org: Organization, *, role: str = "introspect",
                 name: str = "test key") -> tuple[str, ApiKey]:
    plaintext, key = api_keys.create_api_key(session, org=org, name=name, role=role,
                                             actor=TEST_ACTOR)
    session.commit()
    return plaintext, key


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An Authorization header for client_secret_basic."""
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def get_token(http: Any, client: Client, secret: str, **params: Any) -> str:
    """A token from the token endpoint, asserting success."""
    response = http.post("/oauth/token", data={"grant_type": "client_credentials", **params},
                         headers=basic(client.public_id, secret))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def bearer(api_key: str) -> dict[str, str]:
    """An Authorization header presenting an org API key."""
    return {"Authorization": f"Bearer {api_key}"}


def mint(session: Session, client: Client, *, now: Any = None, **asked: Any) -> Any:
    """A token minted through the service as an admin would (``now`` in the past makes
    it expired); ``asked``: the fields of a ``TokenRequest`` (scopes, audiences, ttl,
    extra_claims)."""
    from portal.core.actor import Actor
    from portal.core.tokens.exchange import TokenRequest
    from portal.core.tokens.models import TokenSource
    from portal.core.tokens.services import mint as mint_token

    issued = mint_token(session, org_id=client.org_id, client_public_id=client.public_id,
                        wanted=TokenRequest(**asked), source=TokenSource.PORTAL,
                        actor=Actor("test"), now=now)
    session.commit()
    return issued


def issue(session: Session, client: Client, *, now: Any = None, **asked: Any) -> str:
    """The access token of :func:`mint`."""
    return str(mint(session, client, now=now, **asked).access_token)


def decode(token: str) -> dict[str, Any] | None:
    """The claims of one of our tokens if it verifies now with the key its header names
    (``verified_claims`` with that key as the record's), else None."""
    from portal.core import settings
    from portal.core.signing_keys.services import keyring
    from portal.core.tokens.jws import read_token
    from portal.core.tokens.services import verified_claims
    from portal.core.types import utcnow

    unverified = read_token(token)
    claims, _org = verified_claims(unverified, kid=unverified.kid if unverified else None,
                                   keys=keyring(), issuer=settings.issuer(), now=utcnow())
    return claims


def jti_of(token: str) -> str:
    """A token's ``jti``, read without verifying it."""
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def token_records(session: Session) -> list[Any]:
    """Every token record written, oldest first: read in a transaction of its own, so the
    arranging session's transaction does not hold SQLite's write lock the writers need."""
    from sqlalchemy import select

    from portal.core.tokens.models import IssuedToken

    session.commit()
    found = list(session.scalars(select(IssuedToken).order_by(IssuedToken.id)))
    session.commit()
    return found


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
