"""``Strict-Transport-Security`` on every response when the issuer is https (RFC 6797),
and never when it is plain http (§7.2): portal pages, the protocol fast path, the Flask
protocol views, the well-known replays and error pages."""

from __future__ import annotations

import pytest

from tests.factories import basic, make_client

HSTS = "max-age=31536000"


def responses(client, session, org):
    """One response of each kind, by name."""
    secret, c = make_client(session, org)
    return {
        "portal page": client.get("/signin"),
        "portal 404": client.get("/no-such-page"),
        "token (fast path)": client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                         headers=basic(c.public_id, secret)),
        "token error (Flask)": client.post("/oauth/token", data={"grant_type": "password"},
                                           headers=basic(c.public_id, secret)),
        "jwks": client.get("/.well-known/jwks.json"),
        "jwks (replayed)": client.get("/.well-known/jwks.json"),
        "metadata (replayed)": [client.get("/.well-known/oauth-authorization-server"),
                                client.get("/.well-known/oauth-authorization-server")][1],
    }


@pytest.mark.parametrize("app_config", [{"ISSUER": "https://auth.example.test"}])
def test_every_response_carries_hsts_when_the_issuer_is_https(client, session, org, app_config):
    seen = responses(client, session, org)

    found = {name: r.headers.get("Strict-Transport-Security") for name, r in seen.items()}
    assert found == dict.fromkeys(found, HSTS)
    assert [r.status_code for r in seen.values()] == [200, 404, 200, 400, 200, 200, 200]


def test_no_response_carries_hsts_when_the_issuer_is_plain_http(client, session, org):
    found = {name: r.headers.get("Strict-Transport-Security")
             for name, r in responses(client, session, org).items()}

    assert found == dict.fromkeys(found)
