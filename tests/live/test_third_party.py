"""Black-box run of real third-party OAuth clients against ``latchkey serve``.

The server runs as a separate process (gunicorn, one worker) on a free port with
its own SQLite file and secrets, so nothing touches the repository's instance/.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.fernet import Fernet

pytestmark = pytest.mark.live

LATCHKEY = str(Path(sys.executable).parent / "latchkey")
AUDIENCE = "https://api.example.com"
STARTUP_SECONDS = 20


@dataclass
class LiveServer:
    base: str
    client_id: str
    client_secret: str
    stdout_log: Path
    stderr_log: Path

    @property
    def token_url(self) -> str:
        return self.base + "/oauth/token"

    def logs(self) -> str:
        return self.stdout_log.read_text(errors="replace") + self.stderr_log.read_text(
            errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LATCHKEY, *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, (
        f"latchkey {' '.join(args)} exited {result.returncode}\n{result.stderr[-3000:]}")
    return result


def wait_until_ready(process: subprocess.Popen[bytes], base: str, stderr_log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode} during startup\n"
                        f"{tail(stderr_log)}", pytrace=False)
        try:
            response = requests.get(base + "/.well-known/openid-configuration", timeout=2)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except requests.ConnectionError as e:
            last_error = type(e).__name__
        time.sleep(0.2)
    pytest.fail(f"server not ready after {STARTUP_SECONDS} s ({last_error})\n{tail(stderr_log)}",
                pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATCHKEY_", "FLASK_"))}
    env.update({
        "LATCHKEY_DATABASE_URL": f"sqlite:///{workdir / 'live.db'}",
        "LATCHKEY_ISSUER": base,
        "LATCHKEY_SECRET_KEY": "sk-" + secrets.token_hex(32),
        "LATCHKEY_CLIENT_SECRET_HMAC_KEY": "hk-" + secrets.token_hex(32),
        "LATCHKEY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "LATCHKEY_ACCESS_LOG": "1",  # off by default; the log tests read its lines
        "PYTHONUNBUFFERED": "1",
    })
    run_cli(env, workdir, "db", "upgrade")
    run_cli(env, workdir, "create-org", "--name", "Live", "--slug", "live")
    created = run_cli(env, workdir, "create-client", "--org", "live", "--name", "e2e",
                      "--scopes", "read write", "--audience", AUDIENCE, "--json")
    assert len(created.stdout.strip().splitlines()) == 1, created.stdout
    credentials = json.loads(created.stdout)
    assert set(credentials) == {"client_id", "client_secret"}

    stdout_log, stderr_log = workdir / "server.out", workdir / "server.err"
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        process = subprocess.Popen(
            [LATCHKEY, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, cwd=workdir, stdout=out, stderr=err,
        )
    try:
        wait_until_ready(process, base, stderr_log)
        yield LiveServer(base=base, client_id=credentials["client_id"],
                         client_secret=credentials["client_secret"],
                         stdout_log=stdout_log, stderr_log=stderr_log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
    assert "/oauth/token" in logs, tail(server.stdout_log)  # the access log is really captured
    assert server.client_secret not in logs
    assert server.client_secret[len("lk_secret_"):] not in logs
