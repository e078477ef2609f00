"""The APIs pages: list, register, edit, delete (refused while granted), the scope editor,
deployment APIs read-only, another org's API a 404, and the validation panel."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.core.apis.models import Api, ApiScope
from portal.core.audit.models import AuditEntry
from tests.factories import make_api, make_client

NEW = {"name": "Orders API", "identifier": "https://orders.acme.test",
       "description": "Orders of every shop", "scopes": "orders:read Read orders\norders:write",
       "default_ttl": "", "max_ttl": ""}


def register(portal: Any, **changes: Any) -> Any:
    return portal.form_post("/apis/new", {**NEW, **changes})


def field_error(response: Any, field: str) -> str:
    page = html.unescape(response.get_data(as_text=True))
    found = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    assert found, f"no error shown for {field}"
    return found.group(1)


def api_count(session: Any) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Api))


@pytest.fixture
def orders(session, org) -> Api:
    return make_api(session, org, identifier="https://orders.acme.test", name="Orders API",
                    scopes=("orders:read", "orders:write"))


@pytest.fixture
def platform(session) -> Api:
    return make_api(session, None, identifier="https://platform.example.com", name="Platform",
                    scopes=("platform:use",))


# -- the list -----------------------------------------------------------------------------


def test_list_shows_the_orgs_apis_and_the_shared_ones(owner, orders, platform):
    page = owner.get("/apis").get_data(as_text=True)

    assert f'href="/apis/{orders.public_id}">Orders API</a>' in page
    assert f'href="/apis/{platform.public_id}">Platform</a>' in page
    assert "https://orders.acme.test" in page and ">shared<" in page
    assert 'href="/apis/new"' in page


def test_list_hides_another_orgs_apis(owner, session, other_org):
    theirs = make_api(session, other_org, identifier="https://api.globex.test", name="Globex API")

    page = owner.get("/apis").get_data(as_text=True)

    assert "Globex API" not in page and theirs.public_id not in page
    assert "No APIs yet" in page


def test_nav_links_the_apis_page(owner):
    page = owner.get("/clients").get_data(as_text=True)

    assert '<a href="/apis">APIs</a>' in page


# -- registering --------------------------------------------------------------------------


def test_register_creates_the_api_with_its_scopes(owner, session, org):
    response = register(owner)

    assert response.status_code == 302
    api = session.scalar(select(Api))
    assert response.headers["Location"].endswith(f"/apis/{api.public_id}")
    assert (api.org_id, api.identifier, api.name) == (org.id, NEW["identifier"], "Orders API")
    assert [(s.name, s.description) for s in api.scopes] == [
        ("orders:read", "Read orders"), ("orders:write", "")]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api:created"))
    assert entry.actor == f"user:{owner.user.email}"


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"identifier": ""}, "identifier", "Enter the API's identifier"),
    ({"identifier": "orders"}, "identifier", "must be an absolute URI"),
    ({"identifier": "not a url"}, "identifier", "must be an absolute URI"),
    ({"identifier": "https://orders.acme.test#v2"}, "identifier", "must not have a fragment"),
    ({"identifier": "https://a.test/" + "x" * 300}, "identifier", "at most 255"),
    ({"name": ""}, "name", "Give the API a name."),
    ({"scopes": "orders:read\nbad\"scope"}, "scopes", "invalid scope name"),
    ({"default_ttl": "10"}, "default_ttl", "between 300 and 86400"),
    ({"max_ttl": "ten"}, "max_ttl", "Not a valid integer value"),
    ({"default_ttl": "1200", "max_ttl": "600"}, "max_ttl", "cannot be shorter"),
])
def test_bad_input_is_a_form_error_on_its_field(owner, session, changes, field, message):
    response = register(owner, **changes)

    assert response.status_code == 400
    assert message.lower() in field_error(response, field).lower()
    assert api_count(session) == 0


def test_every_error_shows_at_once(owner, session):
    response = register(owner, name="", identifier="nope", default_ttl="5")

    assert response.status_code == 400
    for field in ("name", "identifier", "default_ttl"):
        field_error(response, field)


def test_an_identifier_the_org_already_has_is_refused(owner, session, orders):
    response = register(owner)

    assert response.status_code == 400
    assert field_error(response, "identifier") == (
        "You already have an API with identifier https://orders.acme.test.")
    assert api_count(session) == 1


def test_an_identifier_another_org_has_is_refused_without_saying_whose(owner, session, other_org):
    make_api(session, other_org, identifier="https://orders.acme.test", name="Squatted")

    response = register(owner)

    assert response.status_code == 400
    message = field_error(response, "identifier")
    assert "already taken on this server" in message and "Globex" not in message
    assert api_count(session) == 1


def test_viewer_cannot_register(viewer, session):
    assert viewer.get("/apis/new").status_code == 403
    assert viewer.post("/apis/new", NEW).status_code == 403
    assert api_count(session) == 0


# -- the page -----------------------------------------------------------------------------


def test_page_shows_scopes_clients_and_how_to_validate(owner, session, org, orders):
    _, client = make_client(session, org, name="billing", scopes=["orders:read"],
                            audiences=["https://orders.acme.test"])

    page = html.unescape(owner.get(f"/apis/{orders.public_id}").get_data(as_text=True))

    assert "<code>orders:read</code>" in page and "<code>orders:write</code>" in page
    assert f'href="/clients/{client.public_id}">billing</a>' in page
    assert "Validate tokens in your API" in page
    assert 'value="http://localhost/.well-known/jwks.json"' in page
    assert 'AUDIENCE = "https://orders.acme.test"' in page
    assert f'ORG_ID = "{org.public_id}"' in page
    assert "createRemoteJWKSet" in page and "PyJWKClient" in page
    assert "<code>typ</code> is <code>at+jwt</code>" in page


def test_another_orgs_api_is_not_found(owner, session, other_org):
    theirs = make_api(session, other_org, identifier="https://api.globex.test")

    for path in ("", "/edit", "/delete", f"/scopes/{theirs.scopes[0].id}/remove"):
        assert owner.get(f"/apis/{theirs.public_id}{path}").status_code == 404
    response = owner.post(f"/apis/{theirs.public_id}/scopes", {"scope": "mine:too"})
    assert response.status_code == 404
    assert [s.name for s in session.scalars(select(ApiScope))] == ["read", "write"]


def test_a_deployment_api_is_read_only_for_an_org(owner, session, platform):
    page = owner.get(f"/apis/{platform.public_id}").get_data(as_text=True)

    assert "shared by every organisation" in page and "Edit API" not in page
    assert "no organisation to act for" in page  # the snippets require oid
    for path in ("/edit", "/delete", f"/scopes/{platform.scopes[0].id}/remove"):
        assert owner.get(f"/apis/{platform.public_id}{path}").status_code == 403
    response = owner.post(f"/apis/{platform.public_id}/scopes", {"scope": "platform:admin"})
    assert response.status_code == 403
    assert "only the operator can change it" in response.get_data(as_text=True)
    session.expire_all()
    assert platform.scope_names == ["platform:use"]


# -- editing and deleting -------------------------------------------------------------------


def test_edit_changes_the_settings_but_never_the_identifier(owner, session, orders):
    response = owner.form_post(f"/apis/{orders.public_id}/edit", {
        "name": "Orders v2", "description": "", "default_ttl": "900", "max_ttl": "1800",
        "identifier": "https://stolen.example.com"})

    assert response.status_code == 302
    session.expire_all()
    assert (orders.name, orders.default_ttl, orders.max_ttl) == ("Orders v2", 900, 1800)
    assert orders.identifier == "https://orders.acme.test"


def test_delete_is_refused_while_a_client_is_granted_it(owner, session, org, orders):
    _, client = make_client(session, org, name="billing", audiences=["https://orders.acme.test"],
                            scopes=["orders:read"])

    page = owner.get(f"/apis/{orders.public_id}/delete").get_data(as_text=True)
    response = owner.form_post(f"/apis/{orders.public_id}/delete", {})

    assert "cannot be deleted while clients are granted it" in page and "billing" in page
    assert response.status_code == 400
    assert ("Orders API is still granted to 1 client (billing): remove it from that client "
            "first.") in html.unescape(response.get_data(as_text=True))
    assert api_count(session) == 1


def test_delete_of_an_api_no_client_has(owner, session, orders):
    page = owner.get(f"/apis/{orders.public_id}/delete").get_data(as_text=True)
    assert "Delete API" in page

    response = owner.form_post(f"/apis/{orders.public_id}/delete", {})

    assert response.status_code == 302 and response.headers["Location"].endswith("/apis")
    assert api_count(session) == 0


# -- the scope editor -----------------------------------------------------------------------


def test_add_a_scope(owner, session, orders):
    response = owner.post(f"/apis/{orders.public_id}/scopes",
                          {"scope": "orders:refund", "scope_description": "Refund an order"})

    assert response.status_code == 302
    session.expire_all()
    assert orders.scope_names == ["orders:read", "orders:write", "orders:refund"]


@pytest.mark.parametrize(("scope", "message"), [
    ("", "Enter the scope's name"),
    ("two words", "invalid scope name"),
    ("orders:read", "already has scope orders:read"),
])
def test_a_bad_scope_is_a_form_error(owner, session, orders, scope, message):
    response = owner.post(f"/apis/{orders.public_id}/scopes", {"scope": scope})

    assert response.status_code == 400
    assert message.lower() in field_error(response, "scope").lower()
    session.expire_all()
    assert orders.scope_names == ["orders:read", "orders:write"]


def test_describe_a_scope(owner, session, orders):
    scope = orders.scopes[0]

    response = owner.post(f"/apis/{orders.public_id}/scopes/{scope.id}",
                          {"scope_description": "Read any order"})

    assert response.status_code == 302
    session.expire_all()
    assert scope.description == "Read any order"


def test_removing_a_scope_says_who_loses_it_then_takes_it_from_them(owner, session, org, orders):
    secret, client = make_client(session, org, name="billing", audiences=[orders.identifier],
                                 scopes=["orders:read", "orders:write"])
    write = orders.scopes[1]

    confirm = owner.get(f"/apis/{orders.public_id}/scopes/{write.id}/remove")
    response = owner.form_post(f"/apis/{orders.public_id}/scopes/{write.id}/remove", {})

    assert "billing" in confirm.get_data(as_text=True)
    assert response.status_code == 302
    session.expire_all()
    assert orders.scope_names == ["orders:read"] and client.grants[0].scopes == ["orders:read"]
    token = owner.http.post("/oauth/token", data={"grant_type": "client_credentials",
                                                  "scope": "orders:write"},
                            auth=(client.public_id, secret))
    assert token.get_json()["error"] == "invalid_scope"
