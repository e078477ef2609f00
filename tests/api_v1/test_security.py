"""The two-org walk of /api/v1, read from the served OpenAPI document so that every
operation added later is walked too (an operation the walk cannot fill fails loudly):

- another org's admin key gets 404 on every operation about one of our objects, and
  changes nothing;
- our viewer key gets 403 on every change, and changes nothing;
- the document is valid OpenAPI 3.1, and its reference page uses local files only.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from openapi_spec_validator import validate

from portal.core.types import utcnow
from tests.api_v1.conftest import Caller, new_client_body
from tests.factories import make_api_key
from tests.portal.test_security import changed_tables, db_snapshot

FUTURE = (utcnow() + timedelta(days=3)).isoformat()
#: A valid body for each operation that takes one (checked before the object is looked up).
BODIES: dict[str, dict[str, Any]] = {
    "create_client": new_client_body(),
    "update_client": {"name": "renamed"},
    "add_secret": {},
    "regenerate_secret": {},
    "update_secret": {"expires_at": FUTURE},
    "mint_token": {},
    "create_api": {"identifier": "https://walk.example.com", "name": "Walk"},
    "update_api": {"name": "renamed"},
    "rotate_signing_key": {},
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Both backends: the walk covers every operation, keyset pages included."""
    return str(request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'postgres'}"
                                       "_url"))


def operations(app) -> list[tuple[str, str, dict[str, Any]]]:
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    return [(method.upper(), path, op) for path, item in document["paths"].items()
            for method, op in item.items()]


@pytest.fixture
def ours(admin, orders_api) -> dict[str, str]:
    """One object of each kind in our org, by path parameter name."""
    created = admin("POST", "/clients", new_client_body()).get_json()
    minted = admin("POST", f"/clients/{created['client_id']}/tokens", {}).get_json()
    secrets = admin("GET", f"/clients/{created['client_id']}/secrets").get_json()["items"]
    return {"client_id": created["client_id"], "secret_id": str(secrets[0]["id"]),
            "jti": minted["jti"], "api_id": orders_api.public_id}


def fill(path: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"the walk cannot fill {{{name}}} of {path}: add it to ours()"
        return values[name]

    return re.sub(r"\{(\w+)\}", value, path).removeprefix("/api/v1")


def test_the_document_is_valid_openapi_3_1(app):
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert len(operations(app)) == 26


def test_another_orgs_key_gets_404_on_every_object_and_changes_nothing(
        app, client, session, other_org, ours):
    theirs = Caller(client, make_api_key(session, other_org, role="admin")[0])
    # A key's first use writes its own last-used time (then not again within a minute):
    # done before the walk, so that any change the walk finds is one it must not make.
    assert theirs("GET", "/clients").status_code == 200
    walked = 0
    for method, path, op in operations(app):
        if "{" not in path:
            continue
        before = db_snapshot()
        response = theirs(method, fill(path, ours), BODIES.get(op["operationId"]))
        assert response.status_code == 404, (method, path, response.get_json())
        assert response.mimetype == "application/problem+json"
        assert changed_tables(before) == [], (method, path)
        walked += 1
    assert walked == 17
    # Lists without a path parameter show them only their own objects.
    assert theirs("GET", "/clients").get_json()["items"] == []
    assert ours["api_id"] not in theirs("GET", "/apis").get_data(as_text=True)
    assert ours["client_id"] not in theirs("GET", "/audit").get_data(as_text=True)
    assert theirs("GET", "/usage/events").get_json()["items"] == []


def test_a_viewer_key_gets_403_on_every_change_and_changes_nothing(app, viewer, ours):
    changes = [(m, p, op) for m, p, op in operations(app) if m != "GET"]
    assert len(changes) >= 16
    for method, path, op in changes:
        before = db_snapshot()
        response = viewer(method, fill(path, ours), BODIES.get(op["operationId"]))
        assert response.status_code == 403, (method, path, response.get_json())
        assert response.get_json()["code"] == "insufficient_scope"
        assert changed_tables(before) == [], (method, path)


def test_every_operation_needs_a_key(app, client, ours):
    for method, path, op in operations(app):
        response = client.open("/api/v1" + fill(path, ours), method=method,
                               json=BODIES.get(op["operationId"]))
        assert response.status_code == 401, (method, path)


def test_the_reference_page_uses_local_assets_only(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        with client.get(source) as asset:  # a file response: closed, or it warns
            assert asset.status_code == 200, source
    assert "/api/v1/openapi.json" in html


def test_unknown_routes_and_methods_are_problems(client, admin):
    missing = admin("GET", "/nothing-here")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    wrong = admin("PUT", "/clients")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert wrong.mimetype == "application/problem+json"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/clients?name=a%00b", None),
    ("GET", "/clients/lkc_%00", None),
    ("DELETE", "/tokens/a%00b", None),
    ("POST", "/clients", {"name": "a\u0000b", "grants": [{"api": "https://x.example"}]}),
    ("GET", "/audit?actor=%00", None),
])
def test_nul_characters_are_400_on_every_backend(admin, method, path, body):
    response = admin(method, path, body)
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
