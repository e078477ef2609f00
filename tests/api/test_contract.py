"""One contract, every door: each refusal the exchange can raise, and each kind of token
introspection has to judge, gets the same answer through every door.

The doors are the WSGI door and the Flask views (``door``, from ``conftest``), and for
the rules that hold for an admin too, the portal's and the management API's mint
(``tokens.mint``). A rule added to :mod:`portal.core.tokens.exchange` holds for the
common request — a client with a secret, through the WSGI door — because that request
is one of the rows here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from portal.core.clients import services as clients
from portal.core.clients.models import ClientSecret
from portal.core.ratelimit.models import RateLimitCounter
from portal.core.rawdb import RawStatement
from portal.core.signing_keys.services import keyring
from portal.core.tokens import services as tokens
from portal.core.tokens.exchange import Refused, TokenRequest
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageKind
from portal.core.users.models import Membership
from tests.factories import (
    TEST_ACTOR,
    basic,
    bearer,
    get_token,
    issue,
    make_api_key,
    make_client,
    make_org,
    make_user,
    mint,
)

GRANT = {"grant_type": "client_credentials"}


@dataclass(frozen=True)
class Case:
    """A client set up to be refused, how it asks, and the refusal it must get."""

    arrange: Callable[[Any, Any], tuple[str, Any]]  # (session, org) -> (secret, client)
    error: str
    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    ask: dict[str, str] | None = None  # extra token request parameters
    admin_too: bool = False  # also refused to an admin's mint


def plain(session, org):
    return make_client(session, org)


def unknown_client(session, org):
    _, c = make_client(session, org)
    return "lk_secret_x", type("Ghost", (), {"public_id": "lkc_" + "g" * 22, "id": None})()


def wrong_secret(session, org):
    _, c = make_client(session, org)
    return "lk_secret_" + "w" * 43, c


def revoked_secret(session, org):
    secret, c = make_client(session, org)
    clients.revoke_secret(session, c, secret_id=c.secrets[0].id, actor=TEST_ACTOR)
    session.commit()
    return secret, c


def expired_secret(session, org):
    secret, c = make_client(session, org)
    stored = session.get(ClientSecret, c.secrets[0].id)
    stored.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    return secret, c


def post_only(session, org):
    return make_client(session, org, auth_methods=["client_secret_post"])


def disabled(session, org):
    secret, c = make_client(session, org)
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()
    return secret, c


def user_who_left(session, org):
    user = make_user(session, org=org)
    secret, c = make_client(session, org, kind="user", user=user)
    for membership in session.scalars(select(Membership).where(Membership.user_id == user.id)):
        session.delete(membership)
    session.commit()
    return secret, c


CASES = {
    "unknown-client": Case(unknown_client, "invalid_client", HTTPStatus.UNAUTHORIZED),
    "wrong-secret": Case(wrong_secret, "invalid_client", HTTPStatus.UNAUTHORIZED),
    "revoked-secret": Case(revoked_secret, "invalid_client", HTTPStatus.UNAUTHORIZED),
    "expired-secret": Case(expired_secret, "invalid_client", HTTPStatus.UNAUTHORIZED),
    "method-not-allowed": Case(post_only, "invalid_client", HTTPStatus.UNAUTHORIZED),
    "disabled-client": Case(disabled, "unauthorized_client", admin_too=True),
    "user-who-left": Case(user_who_left, "invalid_grant", admin_too=True),
    "scope-not-granted": Case(plain, "invalid_scope", ask={"scope": "read admin"},
                              admin_too=True),
    "audience-not-granted": Case(plain, "invalid_target",
                                 ask={"audience": "https://elsewhere.example"},
                                 admin_too=True),
    "resource-not-granted": Case(plain, "invalid_target",
                                 ask={"resource": "https://elsewhere.example/api"},
                                 admin_too=True),
    "unsupported-grant-type": Case(plain, "unsupported_grant_type",
                                   ask={"grant_type": "password"}),
}


def issued_count(session) -> int:
    session.commit()
    return int(session.scalar(select(func.count()).select_from(IssuedToken)) or 0)


@pytest.mark.parametrize("name", list(CASES))
def test_every_refusal_is_the_same_through_the_door(client, session, org, name):
    case = CASES[name]
    secret, c = case.arrange(session, org)
    response = client.post("/oauth/token", data={**GRANT, **(case.ask or {})},
                           headers=basic(c.public_id, secret))
    body = response.get_json()
    assert (response.status_code, body["error"]) == (case.status, case.error), body
    assert response.headers["Cache-Control"] == "no-store"
    assert ("WWW-Authenticate" in response.headers) == (case.status == HTTPStatus.UNAUTHORIZED)
    assert issued_count(session) == 0
    failed = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_FAILED))
    assert failed is not None and failed.reason.startswith(case.error)


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case.admin_too])
def test_every_refusal_that_binds_an_admin_is_the_same_at_the_mint(session, org, door, name):
    if door != "wsgi":
        pytest.skip("the mint is not behind the HTTP doors; one run of it per backend")
    case = CASES[name]
    _secret, c = case.arrange(session, org)
    ask = case.ask or {}
    wanted = {"scopes": tuple(ask["scope"].split())} if "scope" in ask else {}
    if "audience" in ask or "resource" in ask:
        wanted["audiences"] = (ask.get("audience") or ask["resource"],)
    with pytest.raises(Refused) as refused:
        mint(session, c, **wanted)
    session.rollback()
    assert refused.value.error == case.error
    assert issued_count(session) == 0


def test_the_common_request_is_granted_through_the_door(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["scope"] == "read write"


# -- introspection: every kind of token, through every door ---------------------------------


def forged_with_another_orgs_key(session, client, c, secret):
    """A real token's very claims (real jti), signed with another org's published key."""
    real = get_token(client, c, secret)
    other = make_org(session)
    claims = jwt.decode(real, options={"verify_signature": False})
    return keyring().active_key(other.id).sign(claims)


def forged_with_a_foreign_key(session, client, c, secret):
    from cryptography.hazmat.primitives.asymmetric import rsa

    real = get_token(client, c, secret)
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, foreign, algorithm="RS256", headers={"typ": "at+jwt",
                                                                   "kid": header["kid"]})


def revoked(session, client, c, secret):
    token = get_token(client, c, secret)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    record = tokens.get_record(session, org_id=c.org_id, jti=jti)
    tokens.revoke(session, record, actor=TEST_ACTOR)
    session.commit()
    return token


def expired(session, client, c, secret):
    return issue(session, c, now=utcnow() - timedelta(hours=2))


def of_a_disabled_client(session, client, c, secret):
    owner_secret, owner = make_client(session, session.get(type(c), c.id).org)
    token = get_token(client, owner, owner_secret)
    clients.set_enabled(session, owner, enabled=False, actor=TEST_ACTOR)
    session.commit()
    return token


TOKENS: dict[str, tuple[Callable[..., str], bool]] = {
    "live": (lambda session, client, c, secret: get_token(client, c, secret), True),
    "revoked": (revoked, False),
    "expired": (expired, False),
    "forged-with-another-orgs-key": (forged_with_another_orgs_key, False),
    "forged-with-a-foreign-key": (forged_with_a_foreign_key, False),
    "of-a-disabled-client": (of_a_disabled_client, False),
    "garbage": (lambda *a: "not-a-token", False),
}


@pytest.mark.parametrize("kind", list(TOKENS))
def test_every_kind_of_token_is_judged_the_same_through_the_door(client, session, acme, kind):
    secret, c = acme
    make, active = TOKENS[kind]
    token = make(session, client, c, secret)
    response = client.post("/oauth/introspect", data={"token": token},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    body = response.get_json()
    assert body["active"] is active
    if not active:
        assert body == {"active": False}


def test_a_token_signed_with_another_orgs_key_is_not_revoked(client, session, acme):
    """Keys are bound to their org (review H1): org B's key cannot vouch for org A's token,
    so revoking the forgery changes nothing and the real token stays active."""
    secret, c = acme
    real = get_token(client, c, secret)
    other = make_org(session)
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = keyring().active_key(other.id).sign(claims)
    response = client.post("/oauth/revoke", data={"token": forged},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    answer = client.post("/oauth/introspect", data={"token": real},
                         headers=basic(c.public_id, secret)).get_json()
    assert answer["active"] is True


def test_the_mint_and_the_endpoint_sign_the_same_claims(client, session, acme):
    secret, c = acme
    minted = mint(session, c)
    endpoint = jwt.decode(get_token(client, c, secret), options={"verify_signature": False})
    volatile = {"jti", "iat", "nbf", "exp"}
    assert {k: v for k, v in minted.claims.items() if k not in volatile} == \
        {k: v for k, v in endpoint.items() if k not in volatile}


def test_mint_of_another_orgs_client_is_not_found(session, acme, other_org):
    from portal.core.actor import Actor
    from portal.core.errors import NotFound
    from portal.core.tokens.models import TokenSource

    _secret, c = acme
    with pytest.raises(NotFound):
        tokens.mint(session, org_id=other_org.id, client_public_id=c.public_id,
                    wanted=TokenRequest(), source=TokenSource.PORTAL, actor=Actor("test"))


# -- the failure limit: before every other refusal, read with the caller ---------------------

#: The limit with its counters in the database (read with the caller), and in memory.
IN_DATABASE = {"TOKEN_FAILURE_RATE_LIMIT": "2/minute", "RATELIMIT_STORAGE_URI": "latchkey+db://"}
LIMITED = [pytest.param(IN_DATABASE, id="database"),
           pytest.param({**IN_DATABASE, "RATELIMIT_STORAGE_URI": "memory://"}, id="memory")]
AS_JSON = {"Content-Type": "application/json"}

#: name -> (path, form or raw body, headers) from (secret, client, api key, token).
OVER_LIMIT: dict[str, Callable[[str, Any, str, str], tuple[str, Any, dict[str, str]]]] = {
    "token, right secret": lambda s, c, k, t: ("/oauth/token", GRANT, basic(c.public_id, s)),
    "token, unknown client": lambda s, c, k, t: (
        "/oauth/token", GRANT, basic("lkc_" + "u" * 22, s)),
    "token, unusable client id": lambda s, c, k, t: ("/oauth/token", GRANT, basic("x", s)),
    "token, malformed body": lambda s, c, k, t: (
        "/oauth/token", b"{not json", {**basic(c.public_id, s), **AS_JSON}),
    "token, no grant type": lambda s, c, k, t: ("/oauth/token", {}, basic(c.public_id, s)),
    "introspect, right secret": lambda s, c, k, t: (
        "/oauth/introspect", {"token": t}, basic(c.public_id, s)),
    "introspect, api key": lambda s, c, k, t: ("/oauth/introspect", {"token": t}, bearer(k)),
    "introspect, malformed api key": lambda s, c, k, t: (
        "/oauth/introspect", {"token": t}, bearer("nope")),
    "revoke, right secret": lambda s, c, k, t: (
        "/oauth/revoke", {"token": t}, basic(c.public_id, s)),
    "revoke, api key": lambda s, c, k, t: ("/oauth/revoke", {"token": t}, bearer(k)),
}


def recorded(session) -> tuple[int, int, int]:
    """Token records, usage events and failures counted in the database."""
    session.commit()
    return (int(session.scalar(select(func.count()).select_from(IssuedToken)) or 0),
            int(session.scalar(select(func.count()).select_from(UsageEvent)) or 0),
            int(session.scalar(select(func.coalesce(func.sum(RateLimitCounter.hits), 0)))
                or 0))


@pytest.mark.parametrize("extra_config", LIMITED)
@pytest.mark.parametrize("name", list(OVER_LIMIT))
def test_an_address_over_the_failure_limit_is_told_so_whatever_it_sends(
        client, session, org, acme, extra_config, name):
    """The limit comes before every other refusal and before authentication, whether
    the request gets as far as reading its caller (the count comes in the same read)
    or not (it is read on its own), and nothing of the refused request is recorded."""
    secret, c = acme
    token = get_token(client, c, secret)
    key, _ = make_api_key(session, org)
    for _ in range(2):
        client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "lk_secret_wrong"))
    before = recorded(session)
    path, body, headers = OVER_LIMIT[name](secret, c, key, token)
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS, response.get_json()
    assert response.get_json()["error"] == "invalid_request"
    assert int(response.headers["Retry-After"]) >= 1
    assert recorded(session) == before


@pytest.mark.parametrize("extra_config", [IN_DATABASE])
def test_under_the_limit_the_count_is_read_with_the_client_not_on_its_own(
        client, session, org, acme, extra_config, monkeypatch):
    """With the counters in the database, a token, an introspection and a revocation each
    read the failure count in the statement that reads their caller: no statement of the
    limit's own."""
    secret, c = acme
    key, _ = make_api_key(session, org)
    client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "lk_secret_wrong"))
    token = get_token(client, c, secret)
    reads: list[str] = []
    real_first = RawStatement.first
    monkeypatch.setattr(RawStatement, "first",
                        lambda self, *a: reads.append(self.sql) or real_first(self, *a))
    answers = [
        client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)),
        client.post("/oauth/introspect", data={"token": token},
                    headers=basic(c.public_id, secret)),
        client.post("/oauth/introspect", data={"token": token}, headers=bearer(key)),
        client.post("/oauth/revoke", data={"token": token}, headers=basic(c.public_id, secret)),
    ]
    assert [a.status_code for a in answers] == [HTTPStatus.OK] * 4
    limit_reads = [sql for sql in reads if "rate_limit_counters" in sql]
    assert len(limit_reads) == 4
    assert all("clients" in sql or "api_keys" in sql for sql in limit_reads)
