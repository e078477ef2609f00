"""Two orgs, every way of asking for a token: no org can get a token for another org's API.

Org ``beta`` asks for org ``acme``'s API identifier every way (HTTP Basic,
form body, JSON body, ``private_key_jwt``, each through both doors; the portal's mint), as
``audience`` and as ``resource``: each is refused (``invalid_target``, or a form
error) and no token is recorded as issued; nor does ``acme`` get one for ``beta``'s API
(the pair is ``tenants``, tests/conftest.py). The same doors give ``beta`` tokens
for its own API and for a deployment API, which carry ``beta``'s ``oid``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import func, select

from portal.core.tokens.models import IssuedToken
from tests.factories import basic, make_api, make_client

ACME_API = "https://api.acme.test"
BETA_API = "https://api.beta.test"
PLATFORM = "https://platform.example.com"


@pytest.fixture(scope="module")
def beta_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def world(session, tenants, beta_key) -> dict[str, Any]:
    """acme (``tenants.ours``) with its API and a client of it; beta (``tenants.theirs``)
    with its API and two clients (secret, private_key_jwt), both also granted the
    deployment API."""
    acme, beta = tenants.ours.org, tenants.theirs.org
    make_api(session, acme, identifier=ACME_API, scopes=("orders:read", "orders:write"))
    acme_secret, acme_client = make_client(session, acme, audiences=[ACME_API],
                                           scopes=["orders:read", "orders:write"])
    platform = make_api(session, None, identifier=PLATFORM, scopes=("platform:use",))
    beta_api = make_api(session, beta, identifier=BETA_API, scopes=("beta:read",))
    grants = [(beta_api, ["beta:read"]), (platform, ["platform:use"])]
    jwk = {**ECAlgorithm.to_jwk(beta_key.public_key(), as_dict=True), "kid": "beta-1"}
    secret, secret_client = make_client(session, beta, grants=grants)
    _, key_client = make_client(session, beta, grants=grants, auth_methods=["private_key_jwt"],
                                jwks={"keys": [jwk]})
    return {"acme": acme, "beta": beta, "secret_client": secret_client, "secret": secret,
            "key_client": key_client, "acme_client": acme_client, "acme_secret": acme_secret}


def _assertion(client_id: str, key: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iss": client_id, "sub": client_id, "aud": "http://localhost/oauth/token",
                       "iat": now, "exp": now + 60, "jti": f"{client_id}-{time.time_ns()}"},
                      key, algorithm="ES256", headers={"kid": "beta-1"})


Door = Callable[[Any, dict[str, Any], dict[str, str]], Any]


def basic_door(http, w, params):
    return http.post("/oauth/token", data={"grant_type": "client_credentials", **params},
                     headers=basic(w["secret_client"].public_id, w["secret"]))


def post_door(http, w, params):
    return http.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": w["secret_client"].public_id,
        "client_secret": w["secret"], **params})


def json_door(http, w, params):
    return http.post("/oauth/token", json={
        "grant_type": "client_credentials", "client_id": w["secret_client"].public_id,
        "client_secret": w["secret"], **params})


def key_door(http, w, params):
    client_id = w["key_client"].public_id
    return http.post("/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _assertion(client_id, w["key"]), **params})


#: Every way of asking for a token; each runs through both doors (``door``, conftest).
WAYS = {"basic": basic_door, "post": post_door, "json": json_door, "private_key_jwt": key_door}


@pytest.fixture
def w(world, beta_key):
    return {**world, "key": beta_key}


def issued_to(session, org) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(IssuedToken).where(
        IssuedToken.org_id == org.id))


def issued_to_beta(session, w) -> int:
    return issued_to(session, w["beta"])


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("parameter", ["audience", "resource"])
def test_another_orgs_api_is_invalid_target_and_nothing_is_issued(client, session, w, way,
                                                                   parameter):
    response = WAYS[way](client, w, {parameter: ACME_API})

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.get_json()
    assert response.get_json() == {
        "error": "invalid_target",
        "error_description": f"audience not granted to this client: {ACME_API}"}
    assert response.headers["Cache-Control"] == "no-store"
    assert issued_to_beta(session, w) == 0


@pytest.mark.parametrize("parameter", ["audience", "resource"])
def test_and_the_other_way_round_acme_gets_nothing_for_betas_api(client, session, w, parameter):
    response = client.post("/oauth/token", data={"grant_type": "client_credentials",
                                                 parameter: BETA_API},
                           headers=basic(w["acme_client"].public_id, w["acme_secret"]))

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.get_json()
    assert response.get_json() == {
        "error": "invalid_target",
        "error_description": f"audience not granted to this client: {BETA_API}"}
    assert issued_to(session, w["acme"]) == 0


@pytest.mark.parametrize("way", WAYS)
def test_another_orgs_api_among_own_ones_is_refused_too(client, session, w, way):
    response = WAYS[way](client, w, {"audience": [BETA_API, ACME_API]})

    assert response.get_json()["error"] == "invalid_target"
    assert issued_to_beta(session, w) == 0


@pytest.mark.parametrize("way", WAYS)
def test_own_api_and_the_deployment_api_are_issued_with_the_orgs_oid(client, session, w, way):
    for audience, scope in ((BETA_API, "beta:read"), (PLATFORM, "platform:use")):
        response = WAYS[way](client, w, {"audience": audience})

        assert response.status_code == HTTPStatus.OK, response.get_json()
        claims = jwt.decode(response.get_json()["access_token"],
                            options={"verify_signature": False})
        assert claims["aud"] == audience and claims["scope"] == scope
        assert claims["oid"] == w["beta"].public_id
    assert issued_to_beta(session, w) == 2


@pytest.mark.parametrize("way", WAYS)
def test_no_audience_gets_the_default_api(client, w, way):
    response = WAYS[way](client, w, {})

    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == BETA_API


@pytest.mark.parametrize("way", WAYS)
def test_a_scope_not_granted_on_the_api_is_invalid_scope(client, session, w, way):
    response = WAYS[way](client, w, {"audience": BETA_API, "scope": "platform:use"})  # PLATFORM's

    assert response.get_json() == {
        "error": "invalid_scope",
        "error_description": "scope not granted to this client on this API: platform:use"}
    assert issued_to_beta(session, w) == 0


# -- the portal's mint --------------------------------------------------------------------


def mint_as_betas_admin(app, tenants, w, audience: str) -> Any:
    """Beta's admin, signed in to the portal, mints for beta's secret client."""
    from tests.portal.conftest import Portal, hidden_fields

    portal = Portal(app.test_client())
    portal.sign_in(tenants.theirs.admin.email)
    target = w["secret_client"]
    page = portal.get(f"/tokens/mint?client={target.public_id}").get_data(as_text=True)
    return portal.http.post("/tokens/mint", data={
        **hidden_fields(page), "audience": [audience], "ttl": "900", "custom_claims": ""})


def test_the_portal_mint_refuses_another_orgs_api_and_issues_nothing(app, session, tenants, w):
    response = mint_as_betas_admin(app, tenants, w, ACME_API)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    text = response.get_data(as_text=True)
    assert f"Audience not granted to this client: {ACME_API}." in text
    assert "minted-token" not in text
    assert issued_to_beta(session, w) == 0


def test_the_portal_mint_issues_for_the_deployment_api_with_the_orgs_oid(app, session, tenants,
                                                                          w):
    response = mint_as_betas_admin(app, tenants, w, PLATFORM)

    assert response.status_code == HTTPStatus.OK
    record = session.scalar(select(IssuedToken).where(IssuedToken.org_id == w["beta"].id))
    assert record.audience == [PLATFORM] and record.scopes == ["platform:use"]
