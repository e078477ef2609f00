"""Malformed requests to every protocol endpoint get a clean RFC answer, never a 5xx.

One parametrised test: each case builds a request from a real org, client, API
key and token, and says what the answer must be. Whatever the case, the body is
JSON without a stack trace, and ``/oauth/*`` answers carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from portal.core.signing_keys.services import keyring
from tests.factories import basic, get_token, make_api_key, make_client, make_org

TOKEN = "/oauth/token"
INTROSPECT = "/oauth/introspect"
REVOKE = "/oauth/revoke"
JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"
GRANT = "grant_type=client_credentials"
FORM = "application/x-www-form-urlencoded"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: RFC 6749 §4.1.2.1 and §5.2, RFC 8707 §2 and RFC 7009 §2.2.1.
RFC_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "access_denied", "unsupported_response_type",
    "server_error", "temporarily_unavailable", "invalid_target", "unsupported_token_type",
})


@dataclass(frozen=True)
class Ctx:
    """A real client, its token and its org's signing key, to build requests from."""

    client_id: str
    secret: str
    token: str
    api_key: str
    kid: str
    public_pem: bytes

    @property
    def auth(self) -> dict[str, str]:
        return basic(self.client_id, self.secret)

    @property
    def claims(self) -> dict[str, Any]:
        return dict(jwt.decode(self.token, options={"verify_signature": False}))


@dataclass(frozen=True)
class Expect:
    """The status and the body a case must get."""

    status: HTTPStatus
    error: str | None = None  # an RFC error code, or None for a non-error body
    body: dict[str, Any] | None = None  # the exact body when it is not an error
    member: str | None = None  # a member a non-error document must have

    def check(self, body: Any) -> None:
        if self.error is None:
            if self.body is not None:
                assert body == self.body
            if self.member is not None:
                assert body[self.member]
            return
        assert isinstance(body, dict)
        assert body["error"] == self.error and self.error in RFC_ERRORS
        assert set(body) <= {"error", "error_description", "error_uri"}
        description = body.get("error_description", "")
        # RFC 6749 §5.2: printable ASCII without double quote or backslash.
        assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)


Build = Callable[[Ctx], tuple[str, str, dict[str, Any]]]


def post(path: str, **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
    return ("POST", path, kwargs)


def bad_request(error: str = "invalid_request") -> Expect:
    return Expect(HTTPStatus.BAD_REQUEST, error)


UNAUTHORIZED = Expect(HTTPStatus.UNAUTHORIZED, "invalid_client")
TOO_LARGE = Expect(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "invalid_request")
NOT_ALLOWED = Expect(HTTPStatus.METHOD_NOT_ALLOWED, "invalid_request")
INACTIVE = Expect(HTTPStatus.OK, body={"active": False})
REVOKE_OK = Expect(HTTPStatus.OK, body={})
JWKS_DOCUMENT = Expect(HTTPStatus.OK, member="keys")
METADATA_DOCUMENT = Expect(HTTPStatus.OK, member="issuer")


def token_with(headers: Any) -> Any:
    """A client_credentials token request with the headers ``headers(c)``."""
    return lambda c: post(TOKEN, data={"grant_type": "client_credentials"}, headers=headers(c))


def asserted(assertion: Callable[[Any], str], kind: str = ASSERTION_TYPE) -> Any:
    """A client_credentials token request authenticated by the client assertion
    ``assertion(c)`` of type ``kind``."""
    return lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                       "client_assertion_type": kind,
                                       "client_assertion": assertion(c)})


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def alg_none_token(c: Ctx) -> str:
    return f"{segment({'alg': 'none', 'typ': 'at+jwt', 'kid': c.kid})}.{segment(c.claims)}."


def foreign_rsa_token(c: Ctx) -> str:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(c.claims, foreign, algorithm="RS256", headers={"typ": "at+jwt", "kid": c.kid})


def hs256_public_key_token(c: Ctx) -> str:
    """Algorithm confusion: HMAC-SHA256 with the published public key as the secret."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": c.kid}
    signing_input = f"{segment(header)}.{segment(c.claims)}"
    mac = hmac.new(c.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned_assertion(sub: str) -> str:
    """A client assertion that parses but is signed by nothing."""
    claims = {"iss": sub, "sub": sub, "aud": "http://localhost/oauth/token", "exp": 4102444800,
              "jti": "j1"}
    return f"{segment({'alg': 'RS256'})}.{segment(claims)}.{b64url(b'sig')}"


def with_kid(c: Ctx, kid: Any) -> str:
    """The real token's payload and signature under a header with another ``kid``."""
    _header, payload, signature = c.token.split(".")
    return f"{segment({'alg': 'RS256', 'typ': 'at+jwt', 'kid': kid})}.{payload}.{signature}"


def ten_kb_token(c: Ctx) -> str:
    claims = {**c.claims, "padding": "x" * 10_000}
    return f"{segment({'alg': 'RS256', 'typ': 'at+jwt', 'kid': c.kid})}.{segment(claims)}.sig"


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


GARBAGE_TOKENS: list[tuple[str, Callable[[Ctx], str]]] = [
    ("random-string", lambda c: "kjhsdf87y23rkjhsdf"),
    ("a.b.c", lambda c: "a.b.c"),
    ("alg-none", alg_none_token),
    ("foreign-rsa-key-real-kid", foreign_rsa_token),
    ("hs256-public-key-secret", hs256_public_key_token),
    ("truncated-real-token", lambda c: c.token[:-12]),
    ("nul-in-kid", lambda c: with_kid(c, c.kid + "\x00")),
    ("very-long-kid", lambda c: with_kid(c, "k" * 500)),
    ("numeric-kid", lambda c: with_kid(c, 12345)),
    ("non-ascii", lambda c: "\u00e9t\u00e9.\u2603.\U0001f600"),
]

CASES: list[Any] = [
    # -- bodies: size, content type, encoding ---------------------------------------
    pytest.param(lambda c: post(TOKEN, data=f"{GRANT}&scope={'a' * 70_000}", content_type=FORM,
                                headers=c.auth),
                 TOO_LARGE, id="token-oversized-form-body"),
    pytest.param(lambda c: post(INTROSPECT, json={"token": "x" * 70_000}, headers=c.auth),
                 TOO_LARGE, id="introspect-oversized-json-body"),
    pytest.param(lambda c: post(TOKEN, data=GRANT, content_type="text/plain", headers=c.auth),
                 bad_request(), id="token-text-plain"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials"},
                                content_type="multipart/form-data", headers=c.auth),
                 bad_request(), id="token-multipart-form-data"),
    pytest.param(lambda c: post(TOKEN, data="<grant_type>client_credentials</grant_type>",
                                content_type="application/xml", headers=c.auth),
                 bad_request(), id="token-application-xml"),
    pytest.param(lambda c: post(TOKEN, data=GRANT.encode(), headers=c.auth),
                 bad_request(), id="token-body-without-content-type"),
    pytest.param(lambda c: post(REVOKE, data=f"token={c.token}", content_type="text/plain",
                                headers=c.auth),
                 bad_request(), id="revoke-text-plain"),
    pytest.param(lambda c: post(TOKEN, data=f"{GRANT}&grant_type=password", content_type=FORM,
                                headers=c.auth),
                 bad_request(), id="token-duplicate-form-parameter"),
    pytest.param(lambda c: post(TOKEN, data='{"grant_type":"client_credentials",'
                                '"grant_type":"client_credentials"}',
                                content_type="application/json", headers=c.auth),
                 bad_request(), id="token-duplicate-json-key"),
    pytest.param(lambda c: post(INTROSPECT, data=f"token={c.token}&token=x", content_type=FORM,
                                headers=c.auth),
                 bad_request(), id="introspect-duplicate-token"),
    pytest.param(lambda c: post(TOKEN, data=GRANT.encode() + b"&scope=r\xffead", content_type=FORM,
                                headers=c.auth),
                 bad_request(), id="token-raw-non-utf8-form"),
    pytest.param(lambda c: post(TOKEN, data=f"{GRANT}&scope=%ff", content_type=FORM,
                                headers=c.auth),
                 bad_request(), id="token-percent-encoded-non-utf8"),
    pytest.param(lambda c: post(TOKEN, data=b'{"grant_type":"client_credentials\xff"}',
                                content_type="application/json", headers=c.auth),
                 bad_request(), id="token-raw-non-utf8-json"),
    pytest.param(lambda c: post(INTROSPECT, data=b"token=%C0%AF", content_type=FORM,
                                headers=c.auth),
                 bad_request(), id="introspect-overlong-utf8-token"),
    pytest.param(lambda c: post(TOKEN, data='{"grant_type":"client_credentials",'
                                f'"client_id":"\\ud800","client_secret":"{c.secret}"}}',
                                content_type="application/json"),
                 bad_request(), id="token-json-lone-surrogate-client-id"),
    pytest.param(lambda c: post(TOKEN, data='{"grant_type":"client_credentials",'
                                f'"client_id":"{c.client_id}","client_secret":"x\\udfff"}}',
                                content_type="application/json"),
                 bad_request(), id="token-json-lone-surrogate-secret"),
    pytest.param(lambda c: post(INTROSPECT, data='{"token":"\\ud800"}',
                                content_type="application/json", headers=c.auth),
                 bad_request(), id="introspect-json-lone-surrogate-token"),
    pytest.param(lambda c: post(REVOKE, data='{"token":"a","\\ud83d":"b"}',
                                content_type="application/json", headers=c.auth),
                 bad_request(), id="revoke-json-lone-surrogate-key"),
    # -- JSON shapes -----------------------------------------------------------------
    pytest.param(lambda c: post(TOKEN, json=["grant_type", "client_credentials"],
                                headers=c.auth),
                 bad_request(), id="token-json-array"),
    pytest.param(lambda c: post(TOKEN, json="grant_type=client_credentials", headers=c.auth),
                 bad_request(), id="token-json-string"),
    pytest.param(lambda c: post(TOKEN, json=42, headers=c.auth),
                 bad_request(), id="token-json-number"),
    pytest.param(lambda c: post(TOKEN, data="null", content_type="application/json",
                                headers=c.auth),
                 bad_request(), id="token-json-null"),
    pytest.param(lambda c: post(TOKEN, data='{"grant_type": ', content_type="application/json",
                                headers=c.auth),
                 bad_request(), id="token-json-truncated"),
    pytest.param(lambda c: post(TOKEN, json={"grant_type": "client_credentials",
                                             "scope": ["read"]}, headers=c.auth),
                 bad_request(), id="token-json-list-scope"),
    pytest.param(lambda c: post(TOKEN, json={"grant_type": "client_credentials",
                                             "client_id": c.client_id, "client_secret": 12345}),
                 bad_request(), id="token-json-number-secret"),
    pytest.param(lambda c: post(INTROSPECT, json={"token": {"jti": c.claims["jti"]}},
                                headers=c.auth),
                 bad_request(), id="introspect-json-object-token"),
    pytest.param(lambda c: post(REVOKE, json={"token": None}, headers=c.auth),
                 bad_request(), id="revoke-json-null-token"),
    pytest.param(lambda c: post(TOKEN, json={"grant_type": "client_credentials",
                                             "audience": [["https://api.example.com"]]},
                                headers=c.auth),
                 bad_request(), id="token-json-nested-audience-list"),
    pytest.param(lambda c: post(TOKEN, data=nested(10_000), content_type="application/json",
                                headers=c.auth),
                 bad_request(), id="token-deeply-nested-json"),
    # -- Basic credentials -----------------------------------------------------------
    pytest.param(token_with(lambda c: {"Authorization": "Basic " + b64(c.client_id.encode())}),
                 UNAUTHORIZED, id="basic-without-colon"),
    pytest.param(token_with(lambda c: {"Authorization": "Basic !!not*base64!!"}),
                 UNAUTHORIZED, id="basic-bad-base64"),
    pytest.param(token_with(lambda c: {"Authorization": "Basic " + b64(b"\xff\xfe:\xc3\x28")}),
                 UNAUTHORIZED, id="basic-non-utf8-inside-base64"),
    pytest.param(token_with(lambda c: {"Authorization": ""}),
                 UNAUTHORIZED, id="basic-empty-header"),
    pytest.param(token_with(lambda c: {"Authorization": "Basic"}),
                 UNAUTHORIZED, id="basic-scheme-alone"),
    pytest.param(token_with(lambda c: {"Authorization": "Digest " + b64(b"a:b")}),
                 UNAUTHORIZED, id="wrong-auth-scheme"),
    pytest.param(token_with(lambda c: {"Authorization": "Basic "
                                       + b64(f"{c.client_id}:".encode())}),
                 UNAUTHORIZED, id="basic-only-client-id"),
    pytest.param(token_with(lambda c: basic(c.client_id + "\x00", c.secret)),
                 UNAUTHORIZED, id="basic-nul-in-client-id"),
    pytest.param(token_with(lambda c: basic(c.client_id + "%00", c.secret)),
                 UNAUTHORIZED, id="basic-percent-encoded-nul-in-client-id"),
    pytest.param(token_with(lambda c: basic("lkc_" + "x" * 5_000, c.secret)),
                 UNAUTHORIZED, id="basic-very-long-client-id"),
    pytest.param(lambda c: post(INTROSPECT, data={"token": c.token},
                                headers={"Authorization": "Bearer not-an-api-key"}),
                 UNAUTHORIZED, id="introspect-bearer-garbage"),
    pytest.param(lambda c: post(REVOKE, data={"token": c.token},
                                headers={"Authorization": "Bearer " + c.api_key + "\x00"}),
                 UNAUTHORIZED, id="revoke-bearer-api-key-with-nul"),
    pytest.param(lambda c: post(INTROSPECT, data={"token": c.token}),
                 UNAUTHORIZED, id="introspect-unauthenticated"),
    # -- garbage tokens, with valid caller authentication --------------------------
    *[pytest.param(lambda c, make=make: post(INTROSPECT, data={"token": make(c)},
                                             headers=c.auth),
                   INACTIVE, id=f"introspect-{name}") for name, make in GARBAGE_TOKENS],
    *[pytest.param(lambda c, make=make: post(REVOKE, data={"token": make(c)}, headers=c.auth),
                   REVOKE_OK, id=f"revoke-{name}") for name, make in GARBAGE_TOKENS],
    pytest.param(lambda c: post(INTROSPECT, data={"token": ten_kb_token(c)}, headers=c.auth),
                 bad_request(), id="introspect-10kb-token"),
    pytest.param(lambda c: post(REVOKE, data={"token": ten_kb_token(c)}, headers=c.auth),
                 bad_request(), id="revoke-10kb-token"),
    pytest.param(lambda c: post(INTROSPECT, data={"token": ""}, headers=c.auth),
                 INACTIVE, id="introspect-empty-token"),
    pytest.param(lambda c: post(INTROSPECT, data={"token": c.token, "scope": 'read"'},
                                headers=c.auth),
                 bad_request(), id="introspect-scope-with-quote"),
    # -- parameters in the wrong place or with bad values ---------------------------
    pytest.param(lambda c: post(f"{TOKEN}?client_secret={c.secret}",
                                data={"grant_type": "client_credentials",
                                      "client_id": c.client_id}),
                 bad_request(), id="token-client-secret-in-query"),
    pytest.param(lambda c: post(f"{INTROSPECT}?token={c.token}", data={}, headers=c.auth),
                 bad_request(), id="introspect-token-in-query"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials\x00"},
                                headers=c.auth),
                 bad_request(), id="token-nul-in-grant-type"),
    pytest.param(lambda c: post(TOKEN, json={"grant_type": "client_credentials",
                                             "client_id": c.client_id + "\u0000",
                                             "client_secret": c.secret}),
                 bad_request(), id="token-json-nul-in-client-id"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "client_id": "lkc_" + "x" * 5_000,
                                             "client_secret": c.secret}),
                 bad_request("invalid_client"), id="token-post-very-long-client-id"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "client_id": "c" * 9_000,
                                             "client_secret": c.secret}),
                 bad_request(), id="token-post-client-id-over-value-limit"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "resource": "https://[::1/api"}, headers=c.auth),
                 bad_request("invalid_target"), id="token-resource-broken-ipv6-uri"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "urn:ietf:params:oauth:grant-type:"
                                             "jwt-bearer"}, headers=c.auth),
                 bad_request("unsupported_grant_type"), id="token-unknown-grant-type"),
    pytest.param(asserted(lambda c: "not.a.jwt"),
                 bad_request("invalid_client"), id="token-client-assertion-garbage"),
    pytest.param(asserted(alg_none_token),
                 bad_request("invalid_client"), id="token-client-assertion-alg-none"),
    pytest.param(asserted(lambda c: unsigned_assertion(c.client_id + "\x00")),
                 bad_request("invalid_client"), id="token-client-assertion-sub-with-nul"),
    pytest.param(asserted(lambda c: ""),
                 bad_request("invalid_client"), id="token-client-assertion-empty"),
    pytest.param(asserted(lambda c: c.token, kind="urn:example:saml"),
                 bad_request("invalid_client"), id="token-client-assertion-type-wrong"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "scope": 'read "write"'}, headers=c.auth),
                 bad_request("invalid_scope"), id="token-scope-with-double-quote"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "scope": "read\\write"}, headers=c.auth),
                 bad_request("invalid_scope"), id="token-scope-with-backslash"),
    pytest.param(lambda c: post(TOKEN, data={"grant_type": "client_credentials",
                                             "scope": "read\twrite"}, headers=c.auth),
                 bad_request("invalid_scope"), id="token-scope-with-tab"),
    # -- wrong methods and the well-known documents ---------------------------------
    pytest.param(lambda c: ("GET", TOKEN, {"query_string": {"grant_type": "client_credentials"},
                                           "headers": c.auth}),
                 NOT_ALLOWED, id="get-token"),
    pytest.param(lambda c: ("PUT", TOKEN, {"data": {"grant_type": "client_credentials"},
                                           "headers": c.auth}),
                 NOT_ALLOWED, id="put-token"),
    pytest.param(lambda c: ("GET", INTROSPECT, {"query_string": {"token": "x"}}),
                 NOT_ALLOWED, id="get-introspect"),
    pytest.param(lambda c: post(JWKS, data={"keys": "[]"}),
                 NOT_ALLOWED, id="post-jwks"),
    pytest.param(lambda c: ("DELETE", OIDC, {}),
                 NOT_ALLOWED, id="delete-openid-configuration"),
    pytest.param(lambda c: ("GET", JWKS + "?kid=%ff%00&x=" + "y" * 4_000, {}),
                 JWKS_DOCUMENT, id="jwks-garbage-query-string"),
    pytest.param(lambda c: ("GET", JWKS, {"headers": {"If-None-Match": '"\x7f, W/, *garbage'}}),
                 JWKS_DOCUMENT, id="jwks-garbage-if-none-match"),
    pytest.param(lambda c: ("GET", METADATA, {"headers": {"Accept": "application/xml"},
                                              "query_string": "a=%ff"}),
                 METADATA_DOCUMENT, id="metadata-xml-accept-and-bad-query"),
]


@pytest.fixture
def ctx(client, session) -> Ctx:
    org = make_org(session)
    secret, c = make_client(session, org)
    token = get_token(client, c, secret)
    api_key, _ = make_api_key(session, org)
    kid = jwt.get_unverified_header(token)["kid"]
    found = keyring().public_key(kid)
    assert found is not None
    pem = found.public_key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return Ctx(client_id=c.public_id, secret=secret, token=token, api_key=api_key, kid=kid,
               public_pem=pem)


@pytest.mark.parametrize(("build", "expect"), CASES)
def test_malformed_request_gets_clean_json_answer(client, ctx, build: Build, expect: Expect):
    method, path, kwargs = build(ctx)
    response = client.open(path, method=method, **kwargs)
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text and 'File "' not in text
    assert response.mimetype == "application/json", text
    assert response.status_code == expect.status, text
    expect.check(json.loads(text))
    if path.startswith("/oauth/"):
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", [INTROSPECT, REVOKE])
def test_missing_token_parameter_is_invalid_request(client, acme, path):
    secret, c = acme
    response = client.post(path, data={}, headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "invalid_request",
                                   "error_description": "Missing token parameter."}
