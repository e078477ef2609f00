"""POST /oauth/token: client credentials, every authentication method, every error."""

from __future__ import annotations

import io
from http import HTTPStatus

import jwt
import pytest
from sqlalchemy import func, select

from portal.core import crypto
from portal.core.clients import services as clients
from portal.core.clients.models import Client, ClientSecret
from portal.core.rawdb import RawStatement
from portal.core.tokens.models import IssuedToken
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import TEST_ACTOR, basic, get_token, make_client

GRANT = {"grant_type": "client_credentials"}


def test_basic_auth_issues_bearer_token(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_client_secret_post_issues_token(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.public_id,
                                                 "client_secret": secret})
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["access_token"]


def test_json_body_issues_token(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", json={**GRANT, "client_id": c.public_id,
                                                 "client_secret": secret,
                                                 "audience": "https://api.example.com",
                                                 "scope": "read"})
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["scope"] == "read"


def test_token_is_rfc9068_jwt(client, acme, org):
    secret, c = acme
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == "http://localhost"
    assert claims["sub"] == c.public_id == claims["client_id"]
    assert claims["aud"] == "https://api.example.com"
    assert claims["scope"] == "read write"
    assert claims["oid"] == org.public_id
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert "uid" not in claims and claims["jti"]


def test_token_verifies_against_served_jwks(client, acme):
    secret, c = acme
    token = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    jwks = client.get("/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(token["access_token"])["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token["access_token"], key.key, algorithms=["RS256"],
                        audience="https://api.example.com", issuer="http://localhost")
    assert claims["client_id"] == c.public_id


def test_requested_scope_subset_is_granted(client, acme):
    secret, c = acme
    body = client.post("/oauth/token", data={**GRANT, "scope": "write"},
                       headers=basic(c.public_id, secret)).get_json()
    assert body["scope"] == "write"


def test_scope_outside_allowed_is_invalid_scope(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, "scope": "read admin"},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "invalid_scope",
                                   "error_description":
                                   "scope not granted to this client on this API: admin"}
    assert response.headers["Cache-Control"] == "no-store"


def test_resource_parameter_selects_audience(client, session, org):
    secret, c = make_client(session, org, audiences=["https://a.example.com",
                                                     "https://b.example.com"])
    body = client.post("/oauth/token", data={**GRANT, "resource": "https://b.example.com"},
                       headers=basic(c.public_id, secret)).get_json()
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == \
        "https://b.example.com"


def test_no_audience_gets_the_clients_default_api(client, session, org):
    secret, c = make_client(session, org, audiences=["https://a.example.com",
                                                     "https://b.example.com"])
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    aud = jwt.decode(body["access_token"], options={"verify_signature": False})["aud"]
    assert aud == "https://a.example.com"


@pytest.mark.parametrize("params", [
    {"resource": "https://evil.example.com"},
    {"audience": "https://evil.example.com"},
    {"resource": "not-a-uri"},
    {"resource": "https://api.example.com#frag"},
])
def test_bad_resource_is_invalid_target(client, acme, params):
    secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, **params},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_target"


def test_wrong_secret_with_basic_is_401_with_www_authenticate(client, acme):
    _secret, c = acme
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "lk_secret_no"))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Invalid client credentials."}
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_secret_with_post_is_400_invalid_client(client, acme):
    _secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.public_id,
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
    secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.public_id,
                                                 "client_secret": secret},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_request"


def test_unsupported_grant_type(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data={"grant_type": "password"},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "unsupported_grant_type"


def test_missing_grant_type_is_invalid_request(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data={}, headers=basic(c.public_id, secret))
    assert response.get_json() == {"error": "invalid_request",
                                   "error_description": "Missing grant_type parameter."}


def test_repeated_parameter_is_invalid_request(client, acme):
    secret, c = acme
    body = "grant_type=client_credentials&scope=read&scope=write"
    response = client.post("/oauth/token", data=body,
                           content_type="application/x-www-form-urlencoded",
                           headers=basic(c.public_id, secret))
    assert response.get_json() == {"error": "invalid_request",
                                   "error_description": "Parameter 'scope' is repeated."}


def test_disabled_client_is_unauthorized_client(client, session, acme):
    from portal.core.clients import services as clients

    secret, c = acme
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "unauthorized_client",
                                   "error_description": "This client is disabled."}


def test_user_client_whose_user_left_is_invalid_grant(client, session, org):
    from sqlalchemy import delete

    from portal.core.users.models import Membership
    from tests.factories import make_user

    user = make_user(session, org=org)
    secret, c = make_client(session, org, kind="user", user=user)
    ok = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    claims = jwt.decode(ok["access_token"], options={"verify_signature": False})
    assert claims["uid"] == user.public_id == claims["sub"]
    session.execute(delete(Membership).where(Membership.user_id == user.id))
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.get_json()["error"] == "invalid_grant"


def test_method_not_allowed_for_client_is_invalid_client(client, session, org):
    secret, c = make_client(session, org, auth_methods=["client_secret_basic"])
    response = client.post("/oauth/token", data={**GRANT, "client_id": c.public_id,
                                                 "client_secret": secret})
    assert response.get_json() == {
        "error": "invalid_client",
        "error_description": "This client may not authenticate with client_secret_post."}


def test_client_ttl_sets_expiry(client, session, org):
    secret, c = make_client(session, org, ttl=300)
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    assert body["expires_in"] == 300


def test_custom_claims_are_included(client, session, org):
    secret, c = make_client(session, org, custom_claims={"tenant": "blue", "tier": 2})
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tenant"] == "blue" and claims["tier"] == 2


def test_issued_token_and_usage_event_are_recorded(client, session, acme):
    secret, c = acme
    body = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)).get_json()
    jti = jwt.decode(body["access_token"], options={"verify_signature": False})["jti"]
    record = session.scalar(select(IssuedToken).where(IssuedToken.jti == jti))
    assert record.client_id == c.id and record.source.value == "token_endpoint"
    event = session.scalar(select(UsageEvent).where(UsageEvent.jti == jti))
    assert event.kind is UsageKind.TOKEN_ISSUED and event.source_ip == "127.0.0.1"


def test_failed_request_is_recorded_with_reason(client, session, acme):
    _secret, c = acme
    client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "lk_secret_wrong"))
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_FAILED))
    assert event.client_id == c.id and event.org_id == c.org_id
    assert event.reason == "invalid_client: Invalid client credentials. (wrong secret)"


@pytest.mark.parametrize("extra_config", [{"TOKEN_FAILURE_RATE_LIMIT": "3/minute"}])
def test_failed_client_authentication_is_rate_limited(client, acme, extra_config):
    secret, c = acme
    for _ in range(3):
        client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "wrong"))
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.get_json()["error"] == "invalid_request"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("extra_config", [{"TOKEN_FAILURE_RATE_LIMIT": "3/minute"}])
def test_successful_requests_are_not_rate_limited(client, acme, extra_config):
    secret, c = acme
    for _ in range(6):
        response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
        assert response.status_code == HTTPStatus.OK


def test_plain_http_off_loopback_is_refused(client, acme):
    secret, c = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "insecure_transport"


@pytest.mark.parametrize("extra_config", [{"PROXY_FIX": 1}])
def test_tls_proxy_headers_are_trusted_when_configured(client, acme, extra_config):
    secret, c = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers={**basic(c.public_id, secret), "X-Forwarded-Proto": "https"})
    assert response.status_code == HTTPStatus.OK


def test_each_token_writes_its_record_and_one_usage_event(client, session, acme):
    secret, c = acme
    for _ in range(3):
        get_token(client, c, secret)
    session.commit()
    jtis = set(session.scalars(select(IssuedToken.jti)))
    events = session.scalars(
        select(UsageEvent.jti).where(UsageEvent.kind == UsageKind.TOKEN_ISSUED)
    ).all()
    assert len(jtis) == 3 and sorted(events) == sorted(jtis)


def test_token_sets_last_used_of_client_and_secret(client, session, acme):
    secret, c = acme
    get_token(client, c, secret)
    session.commit()
    assert session.scalar(select(Client.last_used_at).where(Client.id == c.id)) is not None
    used = session.scalar(select(func.count()).select_from(ClientSecret).where(
        ClientSecret.client_id == c.id, ClientSecret.last_used_at.is_not(None)))
    assert used == 1


def test_revoked_secret_fails_on_the_next_request(client, session, acme):
    secret, c = acme
    get_token(client, c, secret)
    clients.revoke_secret(session, c, secret_id=c.secrets[0].id, actor=TEST_ACTOR)
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json()["error"] == "invalid_client"


def test_disabled_client_fails_on_the_next_request(client, session, acme):
    secret, c = acme
    get_token(client, c, secret)
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "unauthorized_client"


# -- RFC 6749 §3.1: a parameter sent without a value is as if omitted -----------------------


@pytest.mark.parametrize("params", [
    {"scope": ""},
    {"audience": ""},
    {"resource": ""},
    {"scope": "", "audience": "", "resource": ""},
])
def test_empty_parameter_behaves_as_if_absent(client, acme, params):
    secret, c = acme
    response = client.post("/oauth/token", data={**GRANT, **params},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK, response.get_json()
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "read write" and claims["aud"] == "https://api.example.com"


def test_empty_audience_in_a_json_list_is_left_out(client, acme):
    secret, c = acme
    response = client.post("/oauth/token", json={
        **GRANT, "client_id": c.public_id, "client_secret": secret,
        "audience": ["https://api.example.com", ""]})
    assert response.status_code == HTTPStatus.OK, response.get_json()


# -- bodies ------------------------------------------------------------------------------------


def chunked(client, path, body: bytes, headers):
    """A POST whose body comes without a Content-Length (as chunked transfer encoding)."""
    return client.open(path, method="POST", input_stream=io.BytesIO(body),
                       headers={**headers, "Content-Type": "application/x-www-form-urlencoded",
                                "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_chunked_body_over_the_limit_is_413_not_parsed_from_a_prefix(client, acme):
    secret, c = acme
    padding = "&".join(f"p{i}={'a' * 8000}" for i in range(9))  # 72 KB, over 64 KiB
    response = chunked(client, "/oauth/token", f"{padding}&grant_type=client_credentials"
                       .encode(), basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_chunked_body_within_the_limit_is_read_whole(client, acme):
    secret, c = acme
    response = chunked(client, "/oauth/token", b"grant_type=client_credentials&scope=read",
                       basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK, response.get_json()
    assert response.get_json()["scope"] == "read"


# -- failures: counted, bounded, and alike whoever the client is --------------------------------


@pytest.mark.parametrize("extra_config", [{"TOKEN_FAILURE_RATE_LIMIT": "3/minute"}])
def test_anonymous_failed_requests_are_rate_limited_and_bounded(client, session, extra_config):
    for _ in range(10):
        client.post("/oauth/token", data={"scope": "read"})  # no grant_type, no client
    response = client.post("/oauth/token", data={"scope": "read"})
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    session.commit()
    rows = session.scalar(select(func.count()).select_from(UsageEvent).where(
        UsageEvent.kind == UsageKind.TOKEN_FAILED))
    assert rows == 3  # the refused ones are not recorded


def test_failed_authentication_of_an_unknown_client_is_recorded_without_an_org(client, session):
    client.post("/oauth/token", data=GRANT, headers=basic("lkc_nobody", "lk_secret_x"))
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_FAILED))
    assert event.org_id is None and event.client_ref == "lkc_nobody"
    assert event.reason == "invalid_client: Invalid client credentials. (unknown client)"


def test_unknown_client_id_costs_what_a_wrong_secret_costs(client, acme, monkeypatch):
    """Timing does not tell whether a client id exists (review L4): an unknown id and a
    known one with a wrong secret do the same work — the keyed hash, the same statements
    in the same order — and get the same answer. (Before, an unknown id skipped the hash
    and the secrets, and answered about 2 ms sooner.)"""
    _secret, c = acme
    work: list[str] = []
    real_first, real_execute = RawStatement.first, RawStatement.execute
    real_digest = crypto.hmac_digest
    monkeypatch.setattr(RawStatement, "first",
                        lambda self, *a: work.append(self.sql) or real_first(self, *a))
    monkeypatch.setattr(RawStatement, "execute",
                        lambda self, *a: work.append(self.sql) or real_execute(self, *a))
    monkeypatch.setattr(crypto, "hmac_digest", lambda *a: work.append("hmac") or real_digest(*a))

    def attempt(client_id: str) -> tuple[list[str], object]:
        work.clear()
        response = client.post("/oauth/token", data=GRANT,
                               headers=basic(client_id, "lk_secret_" + "w" * 43))
        return list(work), (response.status_code, response.get_json(),
                            response.headers.get("WWW-Authenticate"))

    unknown_work, unknown_answer = attempt("lkc_" + "u" * 22)
    known_work, known_answer = attempt(c.public_id)
    assert unknown_work == known_work and "hmac" in known_work
    assert unknown_answer == known_answer
