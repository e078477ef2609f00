"""``latchkey create-api``, ``grant``, ``check``, and ``create-client`` as scripts use it."""

from __future__ import annotations

import json
from http import HTTPStatus

import jwt
import pytest
from sqlalchemy import func, select

from portal.core.apis.models import Api
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import Client
from tests.cli.test_cli import invoke, one_error_line
from tests.factories import basic, make_api, make_client

ORDERS = "https://orders.acme.test"


def api_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Api))


def token(http, client_id: str, secret: str, **params: str):
    return http.post("/oauth/token", data={"grant_type": "client_credentials", **params},
                     headers=basic(client_id, secret))


# -- create-api ---------------------------------------------------------------------------


def test_create_api_of_an_org_prints_it_as_json(session, runner, acme):
    result = invoke(runner, "create-api", "--org", "acme", "--identifier", ORDERS,
                    "--name", "Orders", "--scopes", "orders:read orders:write", "--ttl", "900",
                    "--json")

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    api = session.scalar(select(Api))
    assert printed == {"id": api.public_id, "identifier": ORDERS, "name": "Orders",
                       "org": "acme", "scopes": ["orders:read", "orders:write"],
                       "default_ttl": 900, "max_ttl": None}
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api:created"))
    assert entry.org_id == acme.id and entry.actor == "cli"


def test_create_api_of_the_deployment(session, runner, acme):
    result = invoke(runner, "create-api", "--deployment", "--identifier",
                    "https://platform.example.com", "--name", "Platform",
                    "--scopes", "platform:use")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "created API https://platform.example.com "
        f"({session.scalar(select(Api.public_id))}) of the deployment (every org)\n")
    assert session.scalar(select(Api)).org_id is None


@pytest.mark.parametrize(("args", "needle"), [
    (["--org", "acme", "--identifier", "orders", "--name", "O"], "must be an absolute URI"),
    (["--org", "acme", "--identifier", "not a url", "--name", "O"], "must be an absolute URI"),
    (["--org", "acme", "--identifier", ORDERS + "#x", "--name", "O"], "must not have a fragment"),
    (["--org", "acme", "--identifier", "https://a.test/" + "x" * 250, "--name", "O"],
     "at most 255"),
    (["--org", "acme", "--identifier", ORDERS, "--name", "O", "--scopes", 'a"b'],
     "invalid scope name"),
    (["--org", "acme", "--identifier", ORDERS, "--name", "O", "--ttl", "10"], "between 300"),
    (["--org", "acme", "--identifier", ORDERS, "--name", "O", "--ttl", "soon"], "soon"),
    (["--identifier", ORDERS, "--name", "O"], "--org SLUG and --deployment"),
    (["--org", "acme", "--deployment", "--identifier", ORDERS, "--name", "O"],
     "--org SLUG and --deployment"),
    (["--org", "nope", "--identifier", ORDERS, "--name", "O"], "nope"),
    (["--org", "acme", "--name", "O"], "--identifier"),
])
def test_create_api_bad_input_exits_2_with_one_line(session, runner, acme, args, needle):
    result = invoke(runner, "create-api", *args)

    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line.startswith("latchkey: error:") and needle in line, line
    assert result.stdout == ""
    assert api_count(session) == 0


@pytest.mark.parametrize("owner", ["same", "other", "deployment"])
def test_create_api_with_a_taken_identifier_exits_2(session, runner, acme, globex, owner):
    make_api(session, {"same": acme, "other": globex, "deployment": None}[owner],
             identifier=ORDERS)

    result = invoke(runner, "create-api", "--org", "acme", "--identifier", ORDERS, "--name", "O")

    assert result.exit_code == 2
    line = one_error_line(result)
    assert ("already have an API" if owner == "same" else "already taken on this server") in line
    assert "globex" not in line.lower()
    assert api_count(session) == 1


# -- grant ----------------------------------------------------------------------------------


def test_grant_gives_a_client_scopes_of_another_api(session, runner, client, acme):
    secret, c = make_client(session, acme)
    make_api(session, acme, identifier=ORDERS, scopes=("orders:read", "orders:write"))

    result = invoke(runner, "grant", "--client", c.public_id, "--api", ORDERS,
                    "--scopes", "orders:read", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "client_id": c.public_id, "default": "https://api.example.com",
        "grants": {"https://api.example.com": ["read", "write"], ORDERS: ["orders:read"]}}
    body = token(client, c.public_id, secret, audience=ORDERS).get_json()
    assert body["scope"] == "orders:read"


def test_grant_default_moves_the_default_api(session, runner, client, acme):
    secret, c = make_client(session, acme)
    make_api(session, acme, identifier=ORDERS, scopes=("orders:read",))

    result = invoke(runner, "grant", "--client", c.public_id, "--api", ORDERS,
                    "--scopes", "orders:read", "--default")

    assert result.exit_code == 0, result.output
    assert result.stdout == (f"{c.public_id} may get {ORDERS} with scopes orders:read "
                             "(its default API)\n")
    claims = jwt.decode(token(client, c.public_id, secret).get_json()["access_token"],
                        options={"verify_signature": False})
    assert claims["aud"] == ORDERS


@pytest.mark.parametrize(("target", "needle"), [
    ("unknown-client", "no client with id lkc_nobody"),
    ("another-orgs-api", "no API https://api.globex.test of org acme or of the deployment"),
    ("unknown-scope", "not a scope of"),
    ("no-such-api", "no API https://nowhere.test of org acme"),
])
def test_grant_bad_input_exits_2_with_one_line(session, runner, acme, globex, target, needle):
    _, c = make_client(session, acme)
    make_api(session, globex, identifier="https://api.globex.test", scopes=("secret:read",))
    args = {
        "unknown-client": ["--client", "lkc_nobody", "--api", "https://api.example.com"],
        "another-orgs-api": ["--client", c.public_id, "--api", "https://api.globex.test",
                             "--scopes", "secret:read"],
        "unknown-scope": ["--client", c.public_id, "--api", "https://api.example.com",
                          "--scopes", "admin"],
        "no-such-api": ["--client", c.public_id, "--api", "https://nowhere.test"],
    }[target]

    result = invoke(runner, "grant", *args)

    assert result.exit_code == 2, result.output
    assert needle in one_error_line(result)
    session.expire_all()
    assert c.granted.keys() == {"https://api.example.com"}


def test_a_deployment_api_granted_to_a_client_carries_its_oid(session, runner, client, acme):
    invoke(runner, "create-api", "--deployment", "--identifier", "https://platform.example.com",
           "--name", "Platform", "--scopes", "platform:use")
    secret, c = make_client(session, acme)

    result = invoke(runner, "grant", "--client", c.public_id, "--api",
                    "https://platform.example.com", "--scopes", "platform:use")

    assert result.exit_code == 0, result.output
    body = token(client, c.public_id, secret, audience="https://platform.example.com").get_json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://platform.example.com" and claims["oid"] == acme.public_id


# -- create-client, as scripts call it --------------------------------------------------------


def test_create_client_registers_the_audience_as_an_org_api(session, runner, client, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "bench",
                    "--scopes", "read write", "--audience", ORDERS, "--json")

    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert set(created) == {"client_id", "client_secret"}
    api = session.scalar(select(Api))
    assert (api.identifier, api.org_id, api.scope_names) == (ORDERS, acme.id, ["read", "write"])
    response = token(client, created["client_id"], created["client_secret"],
                     scope="read write")
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["scope"] == "read write"


def test_create_client_reuses_the_orgs_api_and_adds_missing_scopes(session, runner, acme):
    make_api(session, acme, identifier=ORDERS, scopes=("read",))

    result = invoke(runner, "create-client", "--org", "acme", "--name", "second",
                    "--scopes", "read write", "--audience", ORDERS, "--json")

    assert result.exit_code == 0, result.output
    assert api_count(session) == 1
    assert session.scalar(select(Api)).scope_names == ["read", "write"]


def test_create_client_for_another_orgs_audience_is_refused(session, runner, acme, globex):
    make_api(session, globex, identifier=ORDERS, scopes=("read",))

    result = invoke(runner, "create-client", "--org", "acme", "--name", "evil",
                    "--scopes", "read", "--audience", ORDERS, "--json")

    assert result.exit_code == 2
    assert "already taken on this server" in one_error_line(result)
    assert result.stdout == ""
    assert session.scalar(select(Client).where(Client.name == "evil")) is None


def test_create_client_with_a_bad_audience_is_refused(session, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "x",
                    "--audience", "not a url")

    assert result.exit_code == 2
    assert "must be an absolute URI" in one_error_line(result)
    assert api_count(session) == 0


def test_a_failed_create_client_leaves_no_api_behind(session, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "x",
                    "--audience", ORDERS, "--claims", '{"iss": "me"}')

    assert result.exit_code == 2
    assert api_count(session) == 0


# -- check ------------------------------------------------------------------------------------


def test_check_with_nothing_to_report(runner, acme):
    result = invoke(runner, "check")

    assert result.exit_code == 0
    assert result.stdout == "nothing to report\n"


def test_check_reports_a_deployment_api_two_orgs_use(session, runner, acme, globex):
    shared = make_api(session, None, identifier="https://platform.example.com", name="Platform",
                      scopes=("platform:use",))
    for org in (acme, globex):
        make_client(session, org, audiences=[shared.identifier], scopes=["platform:use"])

    result = invoke(runner, "check")

    assert result.exit_code == 1
    assert result.stdout == (
        "shared: deployment API https://platform.example.com (Platform) is granted to clients "
        "of 2 orgs (acme, globex): its resource servers must check the token's oid\n")


# -- update-api, delete-api: the operator's changes ----------------------------------------


def test_update_api_changes_a_deployment_api_and_its_scopes(session, runner, acme):
    shared = make_api(session, None, identifier="https://platform.example.com",
                      scopes=("platform:use", "platform:old"))
    _, c = make_client(session, acme, audiences=[shared.identifier],
                       scopes=["platform:use", "platform:old"])

    result = invoke(runner, "update-api", "--api", shared.identifier, "--name", "Platform",
                    "--max-ttl", "1800", "--add-scopes", "platform:new",
                    "--remove-scopes", "platform:old")

    assert result.exit_code == 0, result.output
    assert result.stdout == ("updated API https://platform.example.com: scopes platform:use "
                             "platform:new; 1 grant(s) lost a removed scope\n")
    session.expire_all()
    assert (shared.name, shared.max_ttl) == ("Platform", 1800)
    assert c.grants[0].scopes == ["platform:use"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--api", "https://nowhere.test"], "no API with identifier https://nowhere.test"),
    (["--api", "https://platform.example.com", "--remove-scopes", "nope"], "has no scope nope"),
    (["--api", "https://platform.example.com", "--ttl", "5"], "between 300"),
    (["--api", "https://platform.example.com", "--add-scopes", "platform:use"],
     "already has scope platform:use"),
])
def test_update_api_bad_input_exits_2_and_changes_nothing(session, runner, args, needle):
    shared = make_api(session, None, identifier="https://platform.example.com",
                      scopes=("platform:use",))

    result = invoke(runner, "update-api", *args)

    assert result.exit_code == 2, result.output
    assert needle in one_error_line(result)
    session.expire_all()
    assert shared.scope_names == ["platform:use"] and shared.default_ttl is None


def test_delete_api_is_refused_while_granted_then_deletes(session, runner, acme):
    shared = make_api(session, None, identifier="https://platform.example.com",
                      scopes=("platform:use",))
    _, c = make_client(session, acme, audiences=[shared.identifier], scopes=["platform:use"],
                       name="user-of-platform")

    refused = invoke(runner, "delete-api", "--api", shared.identifier)
    make_api(session, None, identifier="https://unused.example.com")
    deleted = invoke(runner, "delete-api", "--api", "https://unused.example.com")

    assert refused.exit_code == 2
    assert "still granted to 1 client (user-of-platform)" in one_error_line(refused)
    assert deleted.exit_code == 0 and deleted.stdout == "deleted API https://unused.example.com\n"
    assert api_count(session) == 1
