"""Black-box run of real third-party OAuth clients against ``latchkey serve``.

The server runs as a separate process (:class:`tests.live.servers.Server`, one worker) on a
free port with its own SQLite file and secrets, so nothing touches the repository's instance/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import jwt
import pytest
import requests

from tests.live.servers import AUDIENCE, Server, free_port, make_deployment, tail

pytestmark = pytest.mark.live


@dataclass
class LiveServer:
    """``latchkey serve`` (one worker, its own SQLite file and secrets) and a client of it."""

    server: Server
    client_id: str
    client_secret: str

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def token_url(self) -> str:
        return self.base + "/oauth/token"

    def logs(self) -> str:
        return self.server.log_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    deployment = make_deployment(workdir, f"sqlite:///{workdir / 'live.db'}")
    live = Server(deployment, free_port(), "third-party", workers=1)
    deployment.env["LATCHKEY_ISSUER"] = live.base
    deployment.cli("create-org", "--name", "Live", "--slug", "live")
    created = deployment.cli("create-client", "--org", "live", "--name", "e2e",
                             "--scopes", "read write", "--audience", AUDIENCE, "--json")
    assert len(created.stdout.strip().splitlines()) == 1, created.stdout
    credentials = json.loads(created.stdout)
    assert set(credentials) == {"client_id", "client_secret"}
    with live.running():
        yield LiveServer(live, credentials["client_id"], credentials["client_secret"])


@pytest.fixture
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """oauthlib refuses plain http unless told the transport is a test one."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def verify_with_jwks(server: LiveServer, access_token: str) -> dict[str, object]:
    jwks_client = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json")
    signing_key = jwks_client.get_signing_key_from_jwt(access_token)
    claims: dict[str, object] = jwt.decode(access_token, signing_key.key, algorithms=["RS256"],
                                           audience=AUDIENCE, issuer=server.base)
    return claims


def introspect(server: LiveServer, token: str) -> requests.Response:
    return requests.post(server.base + "/oauth/introspect", data={"token": token},
                         auth=(server.client_id, server.client_secret), timeout=10)


def authlib_token(server: LiveServer) -> str:
    from authlib.integrations.requests_client import OAuth2Session

    with OAuth2Session(server.client_id, server.client_secret,
                       token_endpoint_auth_method="client_secret_post") as session:
        token = session.fetch_token(server.token_url, grant_type="client_credentials")
    return str(token["access_token"])


def test_metadata_advertises_the_live_issuer(server):
    doc = requests.get(server.base + "/.well-known/oauth-authorization-server", timeout=10).json()
    assert doc["issuer"] == server.base
    assert doc["token_endpoint"] == server.token_url
    assert doc["jwks_uri"] == server.base + "/.well-known/jwks.json"


def test_requests_oauthlib_backend_client_gets_a_verifiable_token(server, insecure_transport):
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session

    oauth = OAuth2Session(client=BackendApplicationClient(client_id=server.client_id))
    token = oauth.fetch_token(token_url=server.token_url, client_id=server.client_id,
                              client_secret=server.client_secret)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    claims = verify_with_jwks(server, token["access_token"])
    assert claims["client_id"] == server.client_id == claims["sub"]
    assert claims["scope"] == "read write"


def test_authlib_client_secret_post_gets_a_verifiable_token(server):
    claims = verify_with_jwks(server, authlib_token(server))
    assert claims["client_id"] == server.client_id
    assert claims["aud"] == AUDIENCE


def test_introspection_is_active_then_inactive_after_revocation(server):
    token = authlib_token(server)
    before = introspect(server, token)
    assert before.status_code == 200
    body = before.json()
    assert body["active"] is True and body["client_id"] == server.client_id
    assert body["scope"] == "read write"

    revoked = requests.post(server.base + "/oauth/revoke",
                            data={"token": token, "token_type_hint": "access_token"},
                            auth=(server.client_id, server.client_secret), timeout=10)
    assert revoked.status_code == 200

    after = introspect(server, token)
    assert after.status_code == 200
    assert after.json() == {"active": False}


def test_revoking_an_unknown_token_answers_200(server):
    response = requests.post(server.base + "/oauth/revoke", data={"token": "not-a-token"},
                             auth=(server.client_id, server.client_secret), timeout=10)
    assert response.status_code == 200


def test_wrong_secret_is_401_invalid_client(server):
    response = requests.post(server.token_url, data={"grant_type": "client_credentials"},
                             auth=(server.client_id, "lk_secret_wrong"), timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_server_log_never_contains_the_client_secret(server):
    # Traffic of every kind first: success by Basic and by POST body, and a failure.
    requests.post(server.token_url, data={"grant_type": "client_credentials"},
                  auth=(server.client_id, server.client_secret), timeout=10)
    requests.post(server.token_url, data={"grant_type": "client_credentials",
                                          "client_id": server.client_id,
                                          "client_secret": server.client_secret}, timeout=10)
    requests.post(server.token_url, data={"grant_type": "client_credentials"},
                  auth=(server.client_id, server.client_secret + "x"), timeout=10)
    time.sleep(0.5)  # let the server write its access log
    logs = server.logs()
    assert "/oauth/token" in logs, tail(server.server.logs[0])  # the access log is really captured
    assert server.client_secret not in logs
    assert server.client_secret[len("lk_secret_"):] not in logs
