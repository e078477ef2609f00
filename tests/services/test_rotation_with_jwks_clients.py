"""Rotation as a resource server sees it: PyJWT's ``PyJWKClient`` with its default cache
(the JWKS kept 300 s, an unknown ``kid`` refetched at most every 30 s) verifying every
token from a live server across rotations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import requests
from sqlalchemy import update

from portal.cli import cli
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.types import utcnow
from tests.factories import make_client, make_org

AUDIENCE = "https://api.example.com"


class Verifier:
    """A resource server: gets tokens from the live server and verifies each with the JWKS."""

    def __init__(self, base: str, client_id: str, secret: str) -> None:
        self.base = base
        self.auth = (client_id, secret)
        self.jwks = jwt.PyJWKClient(base + "/.well-known/jwks.json")  # PyJWT's defaults
        self.verified = 0
        self.failures: list[str] = []

    def verify_tokens(self, count: int = 5) -> None:
        for _ in range(count):
            response = requests.post(self.base + "/oauth/token", auth=self.auth, timeout=30,
                                     data={"grant_type": "client_credentials"})
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            try:
                key = self.jwks.get_signing_key_from_jwt(token)
                jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE,
                           issuer=self.base)
                self.verified += 1
            except jwt.PyJWTError as e:
                self.failures.append(f"{jwt.get_unverified_header(token)['kid']}: {e}")


def publish_next_key_an_hour_ago(session, org) -> None:
    """As if the next key had been in the JWKS (and the verifier's cache) for an hour."""
    session.execute(update(SigningKey)
                    .where(SigningKey.org_id == org.id, SigningKey.state == KeyState.NEXT)
                    .values(created_at=utcnow() - timedelta(hours=1)))
    session.commit()


def rotate(runner) -> Any:
    """``latchkey rotate-signing-key --org acme``, as an operator would."""
    return runner.invoke(cli, ["rotate-signing-key", "--org", "acme"])


def test_tokens_verify_across_two_rotations_when_the_second_comes_too_soon(session, runner,
                                                                           live_server):
    org = make_org(session, name="Acme")
    secret, client = make_client(session, org)
    verifier = Verifier(live_server, client.public_id, secret)
    verifier.verify_tokens()  # the verifier now caches the JWKS: the active and next keys
    publish_next_key_an_hour_ago(session, org)

    first = rotate(runner)
    verifier.verify_tokens()  # signed by the former next key, which the verifier has
    second = rotate(runner)  # seconds later: no verifier can have the new next key yet
    verifier.verify_tokens()

    assert first.exit_code == 0, first.output
    assert verifier.failures == []
    assert verifier.verified == 15
    assert second.exit_code == 2
    assert "can start signing only after" in second.output
