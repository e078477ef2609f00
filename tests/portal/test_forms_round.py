"""Every form shows every error in one round, next to each field, with an error summary
at the top that links to the fields, and keeps what was typed (issue 16, line 1).

These run on both backends: the rules come from the services (``Checks``), which
read the database (grants, memberships).
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.core.clients import services as clients
from portal.core.clients.models import Client
from portal.core.errors import ValidationFailed
from portal.core.tokens.models import IssuedToken
from tests.factories import TEST_ACTOR, make_api, make_client
from tests.portal.conftest import hidden_fields


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


def field_error(page: str, field_id: str) -> str:
    match = re.search(rf'<p class="error" id="{field_id}-error">([^<]*)</p>', page)
    assert match, f"no error next to #{field_id}"
    return html.unescape(match.group(1))


def summary_links(page: str) -> list[str]:
    """The fields the error summary links to, in order."""
    match = re.search(r'<div class="error-summary" id="error-summary"[^>]*>(.*?)</div>', page,
                      re.S)
    assert match, "no error summary"
    assert 'tabindex="-1" autofocus' in page  # it takes focus, with or without scripts
    return re.findall(r'<a href="#([^"]+)">', match.group(1))


def test_new_client_shows_every_error_at_once_and_keeps_the_input(owner, session, org):
    api = make_api(session, org, identifier="https://api.acme.test", scopes=("orders:read",))
    form = hidden_fields(owner.get("/clients/new").get_data(as_text=True))

    response = owner.http.post("/clients/new", data={
        **form, "name": "", "description": "kept", "ttl": "99999999",
        "custom_claims": '{"iss": "me", "tier": "gold"}',
        "auth_methods": ["client_secret_basic"], "kind": "org", "user": "",
        # no API ticked
    })

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert field_error(page, "name") == "Give the client a name."
    assert "between 300 and 86400 seconds" in field_error(page, "ttl")
    assert "iss" in field_error(page, "custom_claims")
    assert "at least one API" in field_error(page, "grants")
    assert summary_links(page) == ["name", "grants", "ttl", "custom_claims"]
    assert 'value="99999999"' in page and "kept</textarea>" in page
    assert '{"iss": "me", "tier": "gold"}</textarea>' in html.unescape(page)
    assert session.scalar(select(func.count()).select_from(Client)) == 0
    assert api.public_id in page  # the picker is still offered


def test_new_user_client_without_a_member_is_told_with_the_other_errors(owner, session, org):
    make_api(session, org, identifier="https://api.acme.test", scopes=("orders:read",))
    form = hidden_fields(owner.get("/clients/new").get_data(as_text=True))

    response = owner.http.post("/clients/new", data={
        **form, "name": "", "ttl": "3600", "custom_claims": "",
        "auth_methods": ["client_secret_basic"], "kind": "user", "user": ""})

    page = response.get_data(as_text=True)
    assert field_error(page, "name") == "Give the client a name."
    assert field_error(page, "user") == "A user client needs the user it acts for."


def test_edit_client_shows_every_error_at_once(owner, session, org):
    _, c = make_client(session, org, name="billing-sync")
    url = f"/clients/{c.public_id}/edit"
    form = hidden_fields(owner.get(url).get_data(as_text=True))

    response = owner.http.post(url, data={
        **form, "name": "renamed", "ttl": "10", "custom_claims": '{"sub": "x"}',
        "auth_methods": []})

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "between 300 and 86400" in field_error(page, "ttl")
    assert "sub" in field_error(page, "custom_claims")
    assert "authentication method" in field_error(page, "auth_methods")
    assert summary_links(page) == ["grants", "ttl", "custom_claims", "auth_methods-0"]
    assert 'value="renamed"' in page
    session.refresh(c)
    assert c.name == "billing-sync"


def test_service_collects_every_broken_rule(session, org):
    api = make_api(session, org, scopes=("read",))

    with pytest.raises(ValidationFailed) as caught:
        clients.create_client(session, org=org, name=" ", grants=[(api, ["nope"])], ttl=5,
                              custom_claims={"aud": "x"}, actor=TEST_ACTOR)

    fields = [e.field for e in caught.value.errors]
    assert fields == ["name", "ttl", "custom_claims", "grants"]
    # The CLI prints the message: every rule's, in one line.
    assert "name is required" in caught.value.message
    assert "between 300 and 86400" in caught.value.message
    assert "not a scope of" in caught.value.message


def test_one_broken_rule_keeps_its_own_error(session, org):
    api = make_api(session, org, scopes=("read",))

    with pytest.raises(ValidationFailed) as caught:
        clients.create_client(session, org=org, name="ok", grants=[(api, ["read"])],
                              custom_claims={"iss": "me"}, actor=TEST_ACTOR)

    assert caught.value.code == "reserved_claim"
    assert [e.field for e in caught.value.errors] == ["custom_claims"]


def mint_form(owner: Any, client: Client) -> dict[str, Any]:
    page = owner.get(f"/tokens/mint?client={client.public_id}").get_data(as_text=True)
    return hidden_fields(page)


def test_mint_shows_ttl_claims_and_scope_errors_at_once(owner, session, org):
    _, c = make_client(session, org, name="billing", scopes=["read"])
    grant = c.grants[0]

    response = owner.http.post("/tokens/mint", data={
        **mint_form(owner, c), "audience": [grant.api.identifier],
        f"scopes-{grant.api.public_id}": ["write"], "ttl": "10",
        "custom_claims": '{"iss": "me"}'})

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Scope not granted to this client" in field_error(page, "audience")
    assert "between 300 and 86400" in field_error(page, "ttl")
    assert "iss" in field_error(page, "custom_claims")
    assert summary_links(page) == ["audience", "ttl", "custom_claims"]
    assert 'value="10"' in page
    assert session.scalar(select(func.count()).select_from(IssuedToken)) == 0


def test_mint_shows_the_rules_beside_a_field_the_form_could_not_read(owner, session, org):
    _, c = make_client(session, org, name="billing")

    response = owner.http.post("/tokens/mint", data={
        **mint_form(owner, c), "audience": [c.default_audience], "ttl": "soon",
        "custom_claims": '{"jti": "mine"}'})

    page = response.get_data(as_text=True)
    assert "Not a valid integer value" in field_error(page, "ttl")
    assert "jti" in field_error(page, "custom_claims")
    assert 'value="soon"' in page


@pytest.fixture
def app_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"SIGNUP": True} if "sign_up" in request.node.name else {}


def test_sign_up_shows_every_error_at_once(app, session):
    http = app.test_client()
    form = hidden_fields(http.get("/signup").get_data(as_text=True))

    response = http.post("/signup", data={**form, "org_name": "", "email": "kept@example.com",
                                          "password": "short", "confirm": "other"})

    page = response.get_data(as_text=True)
    assert field_error(page, "org_name") == "Enter your organisation's name."
    assert field_error(page, "password") == "Use at least 12 characters."
    assert field_error(page, "confirm") == "The two passwords do not match."
    assert summary_links(page) == ["org_name", "password", "confirm"]
    assert 'value="kept@example.com"' in page


def test_sign_in_summary_links_both_empty_fields(app):
    http = app.test_client()
    form = hidden_fields(http.get("/signin").get_data(as_text=True))

    page = http.post("/signin", data={**form, "email": "", "password": ""}).get_data(
        as_text=True)

    assert summary_links(page) == ["email", "password"]


def test_a_valid_page_has_no_summary_and_marks_required_fields(owner):
    page = owner.get("/clients/new").get_data(as_text=True)

    assert "error-summary" not in page
    assert '<label for="name">Name</label>' in page  # the stylesheet adds "(required)"
    assert re.search(r'<input[^>]*aria-required="true"[^>]*id="name"[^>]*required', page)
    assert re.search(r'<textarea[^>]*id="description"', page)
    assert not re.search(r'<textarea[^>]*id="description"[^>]*required', page)  # optional
