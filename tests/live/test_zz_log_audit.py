"""No secret ever reaches a log: every flow through a live server, then a grep of every log.

A server with JSON logs, the access log on and Latchkey's loggers at DEBUG is
driven through every flow that handles a secret: the portal (sign-in, a failed
sign-in, a new client, a new secret, an API key, an invitation link and the
invitee's new password, a minted token, revoke by paste), the protocol (tokens by Basic, body
and JSON, a wrong secret, a secret in a query string, ``private_key_jwt``,
introspection by client and API key, revocation) and the CLI (a key rotation
and a KEK re-encryption). Then the logs of every live server this run started
(:data:`tests.live.servers.SERVER_LOGS`; this module runs after the others)
are searched for each secret seen, and for anything shaped like one.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.live.servers import (
    AUDIENCE,
    SERVER_LOGS,
    Server,
    free_port,
    make_deployment,
)

pytestmark = pytest.mark.live

PASSWORD = "audit-Passw0rd-7q!"  # noqa: S105 (what the test looks for)
WRONG_PASSWORD = "wrong-Passw0rd-9z!"  # noqa: S105
NEW_PASSWORD = "invitee-Passw0rd-4k!"  # noqa: S105
SHAPES = {
    "client secret": re.compile(r"lk_secret_[A-Za-z0-9_-]{20,}"),
    "API key": re.compile(r"lk_apikey_[A-Za-z0-9_-]{20,}"),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    "private key": re.compile(r"PRIVATE KEY"),
}


class FormReader(HTMLParser):
    """The values a browser would submit for the form posting to ``action``."""

    def __init__(self, action: str, page: str) -> None:
        super().__init__()
        self.action, self.page, self.inside = action, page.split("?")[0], False
        self.values: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            target = a.get("action") or self.page  # no action: the page's own URL
            self.inside = target == self.action and a.get("method") == "post"
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type") or "text"
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.values.setdefault(name, []).append(a.get("value") or "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select:
            if self._select not in self.values or "selected" in a:
                self.values[self._select] = [a.get("value") or ""]
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea][-1] += data


def submit(http: requests.Session, base: str, page: str, action: str,
           **fields: str | list[str]) -> requests.Response:
    """GET ``page``, fill the form posting to ``action`` as a browser would, POST it."""
    reader = FormReader(action, page)
    reader.feed(http.get(base + page, timeout=10).text)
    assert reader.values, f"no form posting to {action} on {page}"
    data = {**reader.values, **{k: v if isinstance(v, list) else [v] for k, v in fields.items()}}
    return http.post(base + action, data=data, timeout=10)


class Seen:
    """Every secret the flows saw, to look for in the logs."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, what: str, value: str) -> str:
        assert value, what
        self.values[f"{what} #{len(self.values)}"] = value
        return value

    def add_all(self, what: str, text: str, shape: re.Pattern[str]) -> list[str]:
        found = shape.findall(text)
        for value in found:
            self.add(what, value)
        return found


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, Seen, Path]:
    workdir = tmp_path_factory.mktemp("audit")
    deployment = make_deployment(workdir, f"sqlite:///{workdir / 'audit.db'}",
                                 LOG_LEVEL="DEBUG", ACCESS_LOG="1",
                                 # a next key may sign once published this long: rotate soon
                                 JWKS_MAX_AGE="1", KEY_CACHE_SECONDS="1")
    server = Server(deployment, free_port(), "audit")
    deployment.env["LATCHKEY_ISSUER"] = server.base
    seen = Seen()
    seen.add("key-encryption key", deployment.env["LATCHKEY_KEY_ENCRYPTION_KEYS"])
    seen.add("HMAC key", deployment.env["LATCHKEY_CLIENT_SECRET_HMAC_KEY"])
    seen.add("secret key", deployment.env["LATCHKEY_SECRET_KEY"])
    deployment.cli("create-org", "--name", "Audit", "--slug", "audit")
    deployment.env["LATCHKEY_NEW_USER_PASSWORD"] = seen.add("password", PASSWORD)
    deployment.cli("create-user", "--email", "owner@audit.test", "--org", "audit",
                   "--role", "owner")
    del deployment.env["LATCHKEY_NEW_USER_PASSWORD"]
    client_id, secret = deployment.create_client("audit")
    seen.add("client secret", secret)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks_file = workdir / "client.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]}))
    jwt_client, _ = deployment.create_client("audit", "--auth-method", "private_key_jwt",
                                             "--jwks", str(jwks_file))
    with server.running():
        _drive(server, seen, client_id, secret, jwt_client, private)
        # The CLI's work that touches private keys, while the server runs.
        kek = Fernet.generate_key().decode()
        seen.add("new key-encryption key", kek)
        deployment.env["LATCHKEY_KEY_ENCRYPTION_KEYS"] = (
            kek + "," + deployment.env["LATCHKEY_KEY_ENCRYPTION_KEYS"])
        deployment.cli("rotate-kek")
        deployment.cli("rotate-signing-key", "--org", "audit", "--wait")
        time.sleep(0.5)
    return server, seen, workdir


def _drive(server: Server, seen: Seen, client_id: str, secret: str, jwt_client: str,
           private: rsa.RSAPrivateKey) -> None:
    base = server.base
    # -- the protocol ----------------------------------------------------------------------
    tokens = [
        server.token(client_id, secret).json()["access_token"],
        requests.post(base + "/oauth/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret}).json()["access_token"],
        requests.post(base + "/oauth/token", timeout=10, json={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret, "audience": AUDIENCE}).json()["access_token"],
    ]
    assert server.token(client_id, secret + "x").status_code == 401
    requests.post(base + "/oauth/token?client_secret=" + secret, timeout=10,
                  data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    now = int(time.time())
    assertion = jwt.encode({"iss": jwt_client, "sub": jwt_client, "aud": base + "/oauth/token",
                            "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex},
                           private, algorithm="RS256", headers={"kid": "k1"})
    seen.add("client assertion", assertion)
    response = requests.post(base + "/oauth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": jwt_client,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    tokens.append(response.json()["access_token"])
    for token in tokens:
        seen.add("access token", token)
        assert server.introspect(client_id, secret, token).json()["active"] is True
    # -- the portal ------------------------------------------------------------------------
    http = requests.Session()
    failed = submit(http, base, "/signin", "/signin", email="owner@audit.test",
                    password=WRONG_PASSWORD)
    seen.add("wrong password", WRONG_PASSWORD)
    assert failed.status_code in (200, 400, 401)
    signed_in = submit(http, base, "/signin", "/signin", email="owner@audit.test",
                       password=PASSWORD)
    assert signed_in.url.endswith("/clients"), signed_in.text[:300]
    created = submit(http, base, "/clients/new", "/clients/new", name="portal-made",
                     scopes="read", audiences=AUDIENCE, ttl="600", kind="org",
                     auth_methods=["client_secret_basic", "client_secret_post"])
    (portal_secret, *_) = seen.add_all("client secret", created.text, SHAPES["client secret"])
    portal_client = re.search(r"lkc_[A-Za-z0-9]+", created.text)
    assert portal_client
    detail = f"/clients/{portal_client.group(0)}"
    added = submit(http, base, detail, detail + "/secrets")
    assert seen.add_all("client secret", added.text, SHAPES["client secret"])
    api_key_page = submit(http, base, "/api-keys", "/api-keys", name="audit key")
    (api_key, *_) = seen.add_all("API key", api_key_page.text, SHAPES["API key"])
    introspected = requests.post(base + "/oauth/introspect", data={"token": tokens[0]},
                                 headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert introspected.json()["active"] is True
    invited = submit(http, base, "/members", "/members/add", email="new@audit.test",
                     role="viewer")
    link = re.search(r'id="invitation-link"[^>]*value="([^"]+)"', invited.text)
    assert link, invited.text[:500]
    url = html.unescape(link.group(1))
    seen.add("invitation token", url.split("token=", 1)[1])
    invitee = requests.Session()
    opened = url.replace(server.deployment.env["LATCHKEY_ISSUER"], base)
    joined = submit(invitee, base, opened.removeprefix(base), "/invitation/accept",
                    password=seen.add("invitee password", NEW_PASSWORD), confirm=NEW_PASSWORD)
    assert joined.status_code == 200 and "/invitation" not in joined.url, joined.text[:300]
    minted = submit(http, base, f"/tokens/mint?client={portal_client.group(0)}", "/tokens/mint")
    assert seen.add_all("minted token", minted.text, SHAPES["JWT"]), minted.text[:500]
    revoked = submit(http, base, "/tokens/revoke", "/tokens/revoke", token=tokens[1])
    assert revoked.status_code == 200
    assert server.introspect(client_id, secret, tokens[1]).json() == {"active": False}
    assert requests.post(base + "/oauth/revoke", data={"token": tokens[2]},
                         auth=(client_id, secret), timeout=10).status_code == 200
    assert server.token(portal_client.group(0), portal_secret).status_code == 200


def test_the_audited_server_logged_every_flow_in_json(audited):
    server, _seen, _ = audited
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    ours = []
    for line in lines:
        try:
            ours.append(json.loads(line))
        except ValueError:
            assert "latchkey" not in line, f"a Latchkey line that is not JSON: {line}"
    routes = [doc.get("route") for doc in ours if doc.get("logger") == "latchkey.access"]
    for route in ("oauth.token", "oauth.introspect", "oauth.revoke", "portal.signin",
                  "portal.clients_new", "portal.clients_add_secret", "portal.api_keys_create",
                  "portal.members_add", "portal.invitation", "portal.invitation_accept",
                  "portal.mint", "portal.revoke"):
        assert route in routes, f"no access line for {route}: the log is not what was served"
    assert routes.count("oauth.token") >= 6


def test_no_secret_appears_in_any_live_servers_log(audited):
    _server, seen, _ = audited
    logs = [path for path in dict.fromkeys(SERVER_LOGS) if path.exists()]
    assert len(logs) >= 2
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        for what, value in seen.values.items():
            if value in text or (value.startswith("lk_") and value.split("_", 2)[2] in text):
                leaks.append(f"{path.name}: {what}")
        for what, shape in SHAPES.items():
            leaks += [f"{path.name}: something shaped like a {what}" for _ in shape.findall(text)]
    assert leaks == [], "\n".join(leaks)
