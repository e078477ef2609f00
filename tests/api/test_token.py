"""POST /oauth/token: client credentials, every authentication method, every error."""

from __future__ import annotations

from http import HTTPStatus

import jwt
import pytest
from sqlalchemy import select

from portal.core.tokens.models import IssuedToken
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import basic, make_client

GRANT = {"grant_type": "client_credentials"}


def test_basic_auth_issues_bearer_token(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.OK
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_client_secret_post_issues_token(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.client_id,
                                                 "client_secret": secret})
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["access_token"]


def test_json_body_issues_token(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", json={**GRANT, "client_id": c.client_id,
                                                 "client_secret": secret,
                                                 "audience": "https://api.example.com",
                                                 "scope": "read"})
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["scope"] == "read"


def test_token_is_rfc9068_jwt(client, acme, org):
    c, secret = acme
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == "http://localhost"
    assert claims["sub"] == c.client_id == claims["client_id"]
    assert claims["aud"] == "https://api.example.com"
    assert claims["scope"] == "read write"
    assert claims["oid"] == org.public_id
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert "uid" not in claims and claims["jti"]


def test_token_verifies_against_served_jwks(client, acme):
    c, secret = acme
    token = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    jwks = client.get("/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(token["access_token"])["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token["access_token"], key.key, algorithms=["RS256"],
                        audience="https://api.example.com", issuer="http://localhost")
    assert claims["client_id"] == c.client_id


def test_requested_scope_subset_is_granted(client, acme):
    c, secret = acme
    body = client.post("/oauth/token", data={**GRANT, "scope": "write"},
                       headers=basic(c.client_id, secret)).get_json()
    assert body["scope"] == "write"


def test_scope_outside_allowed_is_invalid_scope(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data={**GRANT, "scope": "read admin"},
                           headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "invalid_scope",
                                   "error_description":
                                   "scope not granted to this client on this API: admin"}
    assert response.headers["Cache-Control"] == "no-store"


def test_resource_parameter_selects_audience(client, session, org):
    c, secret = make_client(session, org, audiences=["https://a.example.com",
                                                     "https://b.example.com"])
    body = client.post("/oauth/token", data={**GRANT, "resource": "https://b.example.com"},
                       headers=basic(c.client_id, secret)).get_json()
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == \
        "https://b.example.com"


def test_no_audience_gets_the_clients_default_api(client, session, org):
    c, secret = make_client(session, org, audiences=["https://a.example.com",
                                                     "https://b.example.com"])
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    aud = jwt.decode(body["access_token"], options={"verify_signature": False})["aud"]
    assert aud == "https://a.example.com"


@pytest.mark.parametrize("params", [
    {"resource": "https://evil.example.com"},
    {"audience": "https://evil.example.com"},
    {"resource": "not-a-uri"},
    {"resource": "https://api.example.com#frag"},
])
def test_bad_resource_is_invalid_target(client, acme, params):
    c, secret = acme
    response = client.post("/oauth/token", data={**GRANT, **params},
                           headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_target"


def test_wrong_secret_with_basic_is_401_with_www_authenticate(client, acme):
    c, _secret = acme
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, "lk_secret_no"))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Invalid client credentials."}
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_secret_with_post_is_400_invalid_client(client, acme):
    c, _secret = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.client_id,
                                                 "client_secret": "nope"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" not in response.headers


def test_unknown_client_looks_like_wrong_secret(client):
    response = client.post("/oauth/token", data=GRANT, headers=basic("lkc_nobody", "x"))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Invalid client credentials."}


def test_no_client_authentication_is_invalid_client(client):
    response = client.post("/oauth/token", data=GRANT)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json()["error"] == "invalid_client"


def test_two_authentication_methods_is_invalid_request(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.client_id,
                                                 "client_secret": secret},
                           headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_request"


def test_unsupported_grant_type(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data={"grant_type": "password"},
                           headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "unsupported_grant_type"


def test_missing_grant_type_is_invalid_request(client, acme):
    c, secret = acme
    response = client.post("/oauth/token", data={}, headers=basic(c.client_id, secret))
    assert response.get_json() == {"error": "invalid_request",
                                   "error_description": "Missing grant_type parameter."}


def test_repeated_parameter_is_invalid_request(client, acme):
    c, secret = acme
    body = "grant_type=client_credentials&scope=read&scope=write"
    response = client.post("/oauth/token", data=body,
                           content_type="application/x-www-form-urlencoded",
                           headers=basic(c.client_id, secret))
    assert response.get_json() == {"error": "invalid_request",
                                   "error_description": "Parameter 'scope' is repeated."}


def test_disabled_client_is_unauthorized_client(client, session, acme):
    from portal.core.clients import services as clients

    c, secret = acme
    clients.set_enabled(session, c, enabled=False, actor="test")
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "unauthorized_client",
                                   "error_description": "This client is disabled."}


def test_user_client_whose_user_left_is_invalid_grant(client, session, org):
    from sqlalchemy import delete

    from portal.core.users.models import Membership
    from tests.factories import make_user

    user = make_user(session, org=org)
    c, secret = make_client(session, org, kind="user", user=user)
    ok = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    claims = jwt.decode(ok["access_token"], options={"verify_signature": False})
    assert claims["uid"] == user.public_id == claims["sub"]
    session.execute(delete(Membership).where(Membership.user_id == user.id))
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.get_json()["error"] == "invalid_grant"


def test_method_not_allowed_for_client_is_invalid_client(client, session, org):
    c, secret = make_client(session, org, auth_methods=["client_secret_basic"])
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.client_id,
                                                 "client_secret": secret})
    assert response.get_json() == {
        "error": "invalid_client",
        "error_description": "This client may not authenticate with client_secret_post."}


def test_client_ttl_sets_expiry(client, session, org):
    c, secret = make_client(session, org, ttl=300)
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    assert body["expires_in"] == 300


def test_custom_claims_are_included(client, session, org):
    c, secret = make_client(session, org, custom_claims={"tenant": "blue", "tier": 2})
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tenant"] == "blue" and claims["tier"] == 2


def test_issued_token_and_usage_event_are_recorded(client, session, acme):
    c, secret = acme
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret)).get_json()
    jti = jwt.decode(body["access_token"], options={"verify_signature": False})["jti"]
    record = session.scalar(select(IssuedToken).where(IssuedToken.jti == jti))
    assert record.client_id == c.id and record.source.value == "token_endpoint"
    event = session.scalar(select(UsageEvent).where(UsageEvent.jti == jti))
    assert event.kind is UsageKind.TOKEN_ISSUED and event.source_ip == "127.0.0.1"


def test_failed_request_is_recorded_with_reason(client, session, acme):
    c, _secret = acme
    client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, "lk_secret_wrong"))
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_FAILED))
    assert event.client_id == c.id and event.org_id == c.org_id
    assert event.reason == "invalid_client: Invalid client credentials. (wrong secret)"


@pytest.mark.parametrize("app_config", [{"TOKEN_FAILURE_RATE_LIMIT": "3/minute"}])
def test_failed_client_authentication_is_rate_limited(client, acme, app_config):
    c, secret = acme
    for _ in range(3):
        client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, "wrong"))
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.get_json()["error"] == "invalid_request"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("app_config", [{"TOKEN_FAILURE_RATE_LIMIT": "3/minute"}])
def test_successful_requests_are_not_rate_limited(client, acme, app_config):
    c, secret = acme
    for _ in range(6):
        response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
        assert response.status_code == HTTPStatus.OK


def test_plain_http_off_loopback_is_refused(client, acme):
    c, secret = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "insecure_transport"


@pytest.mark.parametrize("app_config", [{"PROXY_FIX": 1}])
def test_tls_proxy_headers_are_trusted_when_configured(client, acme, app_config):
    c, secret = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers={**basic(c.client_id, secret), "X-Forwarded-Proto": "https"})
    assert response.status_code == HTTPStatus.OK
