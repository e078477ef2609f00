"""The "Validate tokens in your API" snippets, copied from an API's page and run as shown
against a live server: Python (PyJWT, with this venv's python) and Node (``jose``,
installed from npm into a temporary directory). Each accepts a token for its API and
refuses a token for another API, another org's included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from portal.core.actor import Actor
from portal.core.apis import services as apis
from portal.core.errors import ValidationFailed
from tests.conftest import unavailable
from tests.factories import PASSWORD, basic, make_api, make_client
from tests.live.test_curl_snippet import snippet_text

pytestmark = pytest.mark.live

ORDERS = "https://orders.acme.test"
REPORTS = "https://reports.acme.test"
BETA = "https://api.beta.test"
PLATFORM = "https://platform.example.com"


@pytest.fixture(scope="module")
def jose_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``jose`` installed from npm (never committed: a pytest tmp dir)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm", "not on PATH")
    where = tmp_path_factory.mktemp("jose")
    (where / "package.json").write_text('{"name": "verify-check", "private": true}')
    result = subprocess.run(
        [str(npm), "install", "--no-audit", "--no-fund", "--loglevel=error", "jose@6"],
        cwd=where, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "npm_config_update_notifier": "false"})
    if result.returncode != 0:
        unavailable("the npm registry", result.stderr.strip().splitlines()[-1:] or "npm failed")
    return where


@pytest.fixture
def world(session, tenants, live_server) -> dict[str, Any]:
    """acme (``tenants.ours``: two APIs, a client granted both), beta (``tenants.theirs``:
    an API, a client), a deployment API both clients are granted; an admin of acme to read
    the pages."""
    acme, beta = tenants.ours.org, tenants.theirs.org
    orders = make_api(session, acme, identifier=ORDERS, name="Orders",
                      scopes=("orders:read", "orders:write"))
    reports = make_api(session, acme, identifier=REPORTS, name="Reports", scopes=("reports:read",))
    beta_api = make_api(session, beta, identifier=BETA, name="Beta API", scopes=("beta:read",))
    platform = make_api(session, None, identifier=PLATFORM, name="Platform",
                        scopes=("platform:use",))
    acme_secret, acme_client = make_client(session, acme, grants=[
        (orders, ["orders:read"]), (reports, ["reports:read"]), (platform, ["platform:use"])])
    beta_secret, beta_client = make_client(session, beta, grants=[
        (beta_api, ["beta:read"]), (platform, ["platform:use"])])
    return {"acme": acme, "beta": beta, "orders": orders, "platform": platform,
            "clients": {"acme": (acme_client, acme_secret), "beta": (beta_client, beta_secret)},
            "admin": tenants.ours.admin}


def signed_in(live_server: str, email: str) -> requests.Session:
    http = requests.Session()
    page = http.get(live_server + "/signin", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token
    response = http.post(live_server + "/signin", timeout=10, data={
        "email": email, "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.url.endswith("/clients"), response.text[:300]
    return http


def token_for(live_server: str, world: dict[str, Any], org: str, audience: str) -> str:
    client, secret = world["clients"][org]
    response = requests.post(live_server + "/oauth/token", timeout=10, headers=basic(
        client.public_id, secret), data={"grant_type": "client_credentials", "audience": audience})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def snippets(live_server: str, world: dict[str, Any], api: Any) -> tuple[str, str]:
    http = signed_in(live_server, world["admin"].email)
    page = http.get(f"{live_server}/apis/{api.public_id}", timeout=10).text
    return snippet_text(page, "snippet-verify-python"), snippet_text(page, "snippet-verify-node")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def run_python(code: str, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = where / "verify_token.py"
    script.write_text(code)
    return run([sys.executable, str(script), *args], where)


def run_node(code: str, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = where / "verify_token.mjs"
    script.write_text(code)
    return run([str(shutil.which("node")), str(script), *args], where)


def test_python_snippet_accepts_its_apis_token_and_refuses_others(live_server, world, tmp_path):
    python, _node = snippets(live_server, world, world["orders"])
    assert f'ISSUER = "{live_server}"' in python and f'AUDIENCE = "{ORDERS}"' in python

    good = run_python(python, tmp_path, token_for(live_server, world, "acme", ORDERS))
    other_api = run_python(python, tmp_path, token_for(live_server, world, "acme", REPORTS))
    other_org = run_python(python, tmp_path, token_for(live_server, world, "beta", BETA))

    assert good.returncode == 0, good.stderr
    assert "'aud': 'https://orders.acme.test'" in good.stdout
    assert other_api.returncode == 1 and "refused: Audience doesn't match" in other_api.stderr
    assert other_org.returncode == 1 and "refused:" in other_org.stderr


def test_python_snippet_checks_the_scope(live_server, world, tmp_path):
    python, _node = snippets(live_server, world, world["orders"])
    token = token_for(live_server, world, "acme", ORDERS)

    assert run_python(python, tmp_path, token, "orders:read").returncode == 0
    missing = run_python(python, tmp_path, token, "orders:write")
    assert missing.returncode == 1 and "missing scope orders:write" in missing.stderr


def test_node_snippet_accepts_its_apis_token_and_refuses_others(live_server, world, jose_dir):
    _python, node = snippets(live_server, world, world["orders"])
    assert f'const AUDIENCE = "{ORDERS}";' in node

    good = run_node(node, jose_dir, token_for(live_server, world, "acme", ORDERS))
    other_api = run_node(node, jose_dir, token_for(live_server, world, "acme", REPORTS))
    other_org = run_node(node, jose_dir, token_for(live_server, world, "beta", BETA))
    missing_scope = run_node(node, jose_dir, token_for(live_server, world, "acme", ORDERS),
                             "orders:write")

    assert good.returncode == 0, good.stderr
    assert f'"aud":"{ORDERS}"' in good.stdout
    assert other_api.returncode == 1 and 'refused: unexpected "aud" claim value' in \
        other_api.stderr
    assert other_org.returncode == 1 and "refused:" in other_org.stderr
    assert missing_scope.returncode == 1 and "missing scope orders:write" in missing_scope.stderr


def test_deployment_api_snippets_accept_every_orgs_token_and_need_oid(live_server, world,
                                                                       jose_dir, tmp_path):
    python, node = snippets(live_server, world, world["platform"])
    assert "ORG_ID" not in python and "no oid" in python

    for org in ("acme", "beta"):
        token = token_for(live_server, world, org, PLATFORM)
        by_python = run_python(python, tmp_path, token)
        by_node = run_node(node, jose_dir, token)
        oid = world[org].public_id
        assert by_python.returncode == 0 and f"'oid': '{oid}'" in by_python.stdout, \
            by_python.stderr
        assert by_node.returncode == 0 and f'"oid":"{oid}"' in by_node.stdout, by_node.stderr
    refused = run_python(python, tmp_path, token_for(live_server, world, "acme", ORDERS))
    assert refused.returncode == 1


def test_a_token_another_org_could_mint_with_a_taken_identifier_does_not_exist(session,
                                                                              live_server, world):
    """The review's H1: beta asks for acme's identifier; the server refuses it."""
    client, secret = world["clients"]["beta"]

    response = requests.post(live_server + "/oauth/token", timeout=10,
                             headers=basic(client.public_id, secret),
                             data={"grant_type": "client_credentials", "audience": ORDERS})

    assert response.status_code == 400 and response.json()["error"] == "invalid_target"
    with pytest.raises(ValidationFailed, match="already taken"):
        apis.create_api(session, org=world["beta"], identifier=ORDERS, name="Squat",
                        actor=Actor("test"))
