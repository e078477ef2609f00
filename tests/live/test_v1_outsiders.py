"""The management API as outsiders see it, against a real ``latchkey serve``: a Python
client generated from the served OpenAPI document (openapi-python-client) does the
whole secret-and-token round trip, and schemathesis fuzzes every operation of the
served document (valid and invalid inputs: no 5xx, every response as documented).

One server for the module; the generated client runs first, on a fresh org.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests

from tests.live.servers import AUDIENCE, Server, free_port, make_deployment, tail

pytestmark = pytest.mark.live

BIN = Path(sys.executable).parent
ISSUER = "http://127.0.0.1:5000"  # make_deployment's LATCHKEY_ISSUER
GENERATED = "lkclient"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    workdir = tmp_path_factory.mktemp("v1")
    # The fuzzer sends a thousand requests with one key: the per-key limit would answer most.
    deployment = make_deployment(workdir, f"sqlite:///{workdir / 'v1.db'}",
                                 API_RATE_LIMIT="100000/minute")
    deployment.cli("create-org", "--name", "Outsiders", "--slug", "outsiders")
    deployment.create_client("outsiders")  # registers AUDIENCE with scopes read and write
    created = deployment.cli("create-api-key", "--org", "outsiders", "--name", "outsider",
                             "--role", "admin", "--json")
    with Server(deployment, free_port(), "v1").running() as server:
        yield server, json.loads(created.stdout)["api_key"]


def _generate(server: Server, into: Path) -> None:
    document = requests.get(server.base + "/api/v1/openapi.json", timeout=10)
    assert document.status_code == 200
    path = into / "openapi.json"
    path.write_text(document.text)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", str(path), "--meta", "none",
         "--output-path", str(into / GENERATED)],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_generated_client_creates_rotates_mints_and_revokes(served, tmp_path: Path) -> None:
    server, api_key = served
    _generate(server, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        lk = importlib.import_module(GENERATED)
        ops = importlib.import_module(f"{GENERATED}.api.clients")
        models = importlib.import_module(f"{GENERATED}.models")
        for name in ("create_client", "regenerate_secret", "mint_token", "revoke_token"):
            importlib.import_module(f"{GENERATED}.api.clients.{name}")
        with lk.AuthenticatedClient(base_url=server.base, token=api_key) as api:
            created = ops.create_client.sync(client=api, body=models.ClientCreate(
                name="generated", grants=[models.GrantIn(api=AUDIENCE, scopes=["read"])]))
            assert isinstance(created, models.ClientCreated), created
            first_secret = created.client_secret

            rotated = ops.regenerate_secret.sync(created.client_id, client=api,
                                                 body=models.SecretCreate())
            assert isinstance(rotated, models.SecretCreated), rotated
            assert server.token(created.client_id, first_secret).status_code == 401
            assert server.token(created.client_id, rotated.client_secret).status_code == 200

            minted = ops.mint_token.sync(created.client_id, client=api, body=models.MintRequest(
                scopes=["read"],
                claims=models.MintRequestClaimsType0.from_dict({"tenant": "t-42"})))
            assert isinstance(minted, models.Minted), minted
            signing_key = jwt.PyJWKClient(server.base + "/.well-known/jwks.json") \
                .get_signing_key_from_jwt(minted.access_token)
            claims = jwt.decode(minted.access_token, signing_key.key,
                                algorithms=[jwt.get_unverified_header(minted.access_token)["alg"]],
                                audience=AUDIENCE, issuer=ISSUER)
            assert claims["client_id"] == created.client_id
            assert claims["jti"] == minted.jti
            assert claims["tenant"] == "t-42"
            assert claims["scope"] == "read"

            revoked = ops.revoke_token.sync_detailed(minted.jti, client=api)
            assert revoked.status_code == 204
            introspected = server.introspect(created.client_id, rotated.client_secret,
                                             minted.access_token)
            assert introspected.json() == {"active": False}
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == GENERATED or m.startswith(GENERATED + ".")]:
            del sys.modules[module]


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(served) -> None:
    """Every operation, a few examples each (coverage and fuzzing phases): about 20 s."""
    server, api_key = served
    result = subprocess.run(
        [str(BIN / "schemathesis"), "run", server.base + "/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {api_key}",
         "--max-examples", "5", "--phases", "coverage,fuzzing", "--workers", "2",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance,response_headers_conformance,"
                     "negative_data_rejection",
         "--generation-database", "none", "--seed", "15", "--no-shrink",
         "--request-timeout", "10"],
        capture_output=True, text=True, timeout=180, check=False,
        cwd=server.deployment.workdir)  # its cache directory goes there, not in the tree
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report + "\n" + tail(server.logs[-1])
    assert "Tested: 26" in result.stdout, report  # every operation of the document
