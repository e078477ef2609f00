"""The clients list and creating a client, whose secret is shown on exactly one response."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import select, text

from portal.core.apis.grants import GrantedApi
from portal.core.apis.models import Api
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import Client
from portal.core.db import Base, get_session
from portal.core.types import utcnow
from tests.factories import basic, issue, make_api, make_client, make_user

ORDERS_API = "https://api.acme.test"
BILLING_API = "https://billing.acme.test"
GOOD = {
    "name": "billing-sync",
    "description": "Nightly invoice export",
    "ttl": "900",
    "custom_claims": '{"tier": "gold"}',
    "auth_methods": ["client_secret_basic", "client_secret_post"],
    "kind": "org",
    "user": "",
}


class _HiddenInputs(HTMLParser):
    """The hidden inputs of the form posting to ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.fields = action, False, {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("action") == self.action
        elif tag == "input" and self.inside and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def hidden_inputs(page: str, action: str) -> dict[str, str]:
    parser = _HiddenInputs(action)
    parser.feed(page)
    assert parser.fields, f"no form posting to {action}"
    return parser.fields


def input_value(page: str, element_id: str) -> str:
    match = re.search(rf'<input id="{element_id}"[^>]*value="([^"]*)"', page)
    assert match, f"no input #{element_id}"
    return html.unescape(match.group(1))


@pytest.fixture(autouse=True)
def acme_apis(session, org) -> tuple[Api, Api]:
    """The org's two APIs that the create form grants (``GOOD`` plus :func:`grant_fields`)."""
    return (make_api(session, org, identifier=ORDERS_API, name="Orders API",
                     scopes=("orders:read", "orders:write")),
            make_api(session, org, identifier=BILLING_API, name="Billing API",
                     scopes=("invoices:read",)))


def api_key(identifier: str) -> str:
    """The public id the form uses for the API with this identifier."""
    return get_session().scalar(select(Api.public_id).where(Api.identifier == identifier))


def grant_fields() -> dict[str, Any]:
    """Ticked: the orders API with both scopes (the default), the billing API with its one."""
    orders, billing = api_key(ORDERS_API), api_key(BILLING_API)
    return {"api": [orders, billing], f"scopes-{orders}": ["orders:read", "orders:write"],
            f"scopes-{billing}": ["invoices:read"], "default_api": orders}


def new_client_form(portal: Any) -> dict[str, str]:
    return hidden_inputs(portal.get("/clients/new").get_data(as_text=True), "/clients/new")


def create(portal: Any, **changes: Any) -> Any:
    """POST the new-client form with its fresh nonce."""
    return portal.http.post("/clients/new", data={
        **new_client_form(portal), **GOOD, **grant_fields(), **changes})


def created_credentials(response: Any) -> tuple[str, str]:
    page = response.get_data(as_text=True)
    return input_value(page, "client-id"), input_value(page, "client-secret")


def all_rows_text(session: Any) -> str:
    """Every value in every table, as text."""
    return "\n".join(
        repr(tuple(row)) for table in Base.metadata.sorted_tables
        for row in session.execute(text(f"SELECT * FROM {table.name}"))  # noqa: S608
    )


# -- the list --------------------------------------------------------------------------


def test_home_redirects_to_the_clients_list(owner):
    response = owner.get("/")

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/clients")


def test_list_shows_the_orgs_clients(owner, session, org):
    _, c = make_client(session, org, name="billing-sync", scopes=["orders:read"])

    page = owner.get("/clients").get_data(as_text=True)

    assert f'href="/clients/{c.public_id}">billing-sync</a>' in page
    assert c.public_id in page and "orders:read" in page
    assert "badge-enabled" in page and "never" in page
    assert "New client" in page


def test_list_counts_tokens_issued_in_the_last_24_hours(owner, session, org):
    _, busy = make_client(session, org, name="busy")
    _, idle = make_client(session, org, name="idle")
    for _ in range(3):
        issue(session, busy)
    issue(session, busy, now=utcnow() - timedelta(hours=25))

    page = owner.get("/clients").get_data(as_text=True)

    counts = re.findall(r'href="/clients/(lkc_[^"]+)">.*?data-tokens-24h="(\d+)"', page, re.S)
    assert dict(counts) == {busy.public_id: "3", idle.public_id: "0"}


def test_list_does_not_show_another_orgs_clients(owner, session, other_org):
    _, theirs = make_client(session, other_org, name="globex-secret-thing")

    page = owner.get("/clients").get_data(as_text=True)

    assert theirs.public_id not in page and "globex-secret-thing" not in page


def test_empty_list_offers_to_create_a_client(owner):
    page = owner.get("/clients").get_data(as_text=True)

    assert "No clients yet" in page
    assert re.search(r'<a [^>]*href="/clients/new">Create a client</a>', page)


def test_viewer_sees_the_list_without_create_buttons(viewer, session, org):
    make_client(session, org, name="billing-sync")

    response = viewer.get("/clients")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "billing-sync" in page
    assert "New client" not in page and "/clients/new" not in page


def test_viewer_empty_state_has_no_create_action(viewer):
    page = viewer.get("/clients").get_data(as_text=True)

    assert "No clients yet" in page and "/clients/new" not in page
    assert "ask an owner or admin" in page


def test_list_needs_sign_in(client):
    response = client.get("/clients")

    assert response.status_code == 302
    assert "/signin" in response.headers["Location"]


# -- creating a client -----------------------------------------------------------------


def test_create_form_has_labelled_fields_and_defaults(owner):
    page = owner.get("/clients/new").get_data(as_text=True)

    for field in ("name", "description", "ttl", "custom_claims", "user"):
        assert f'<label for="{field}"' in page
    assert re.search(r'id="ttl"[^>]*value="3600"', page)
    assert page.count('name="auth_methods"') == 2 and page.count("checked") >= 3  # + kind=org


def test_create_form_offers_each_api_with_its_scopes(owner, acme_apis):
    orders, billing = acme_apis

    page = owner.get("/clients/new").get_data(as_text=True)

    assert "<legend>APIs and scopes</legend>" in page
    for api in (orders, billing):
        assert f'<label for="grant-{api.public_id}">{api.name}</label>' in page
        assert f'name="default_api" value="{api.public_id}"' in page
        for scope in api.scope_names:
            assert f'name="scopes-{api.public_id}" value="{scope}"' in page


def test_create_shows_the_secret_once_with_no_store(session, editor):
    portal = editor

    response = create(portal)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    client_id, secret = created_credentials(response)
    assert secret.startswith("lk_secret_") and len(secret) > 40
    assert "will not be shown again" in response.get_data(as_text=True)
    created = session.scalar(select(Client).where(Client.public_id == client_id))
    assert created.name == "billing-sync" and created.token_ttl == 900
    assert created.granted == {
        ORDERS_API: GrantedApi(ORDERS_API, ("orders:read", "orders:write")),
        BILLING_API: GrantedApi(BILLING_API, ("invoices:read",))}
    assert created.default_audience == ORDERS_API
    assert created.custom_claims == {"tier": "gold"}


def test_created_secret_gets_a_token(owner):
    client_id, secret = created_credentials(create(owner))

    response = owner.http.post("/oauth/token", data={"grant_type": "client_credentials"},
                               headers=basic(client_id, secret))

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "orders:read orders:write"


def test_created_page_shows_curl_snippets_with_real_values(owner):
    response = create(owner)
    client_id, secret = created_credentials(response)
    page = html.unescape(response.get_data(as_text=True))

    for title in ("Get a token (HTTP Basic)", "Get a token (credentials in the form body)",
                  "Get a token (JSON body)", "Call your API with the token",
                  "Introspect the token"):
        assert title in page
    assert f"curl -s http://localhost/oauth/token \\\n  -u {client_id}:{secret}" in page
    assert f'"client_secret": "{secret}"' in page
    assert "http://localhost/oauth/introspect" in page and "$TOKEN" in page
    assert f'href="/clients/{client_id}"' in page


def test_created_page_calls_the_clients_own_api(owner):
    page = html.unescape(create(owner).get_data(as_text=True))

    assert f"curl -s {ORDERS_API} \\\n  -H \"Authorization: Bearer $TOKEN\"" in page
    assert "api.example.com" not in page


def test_resubmitting_the_create_form_creates_nothing_and_shows_no_secret(owner, session):
    form = {**new_client_form(owner), **GOOD, **grant_fields()}
    first = owner.http.post("/clients/new", data=form)
    _client_id, secret = created_credentials(first)

    again = owner.http.post("/clients/new", data=form, follow_redirects=True)

    page = again.get_data(as_text=True)
    assert "That form was already submitted; the secret is only shown once." in page
    assert secret not in page and "client-secret" not in page
    assert again.request.path == "/clients"
    assert session.scalar(select(Client).where(Client.name == "billing-sync").with_only_columns(
        text("count(*)"))) == 1


def test_create_without_a_nonce_creates_nothing(owner, session):
    form = {k: v for k, v in new_client_form(owner).items() if k != "nonce"}

    response = owner.http.post("/clients/new", data={**form, **GOOD, **grant_fields()})

    assert response.status_code == 302
    assert session.scalars(select(Client)).first() is None


def test_secret_is_stored_only_as_a_keyed_hash(owner, session):
    _client_id, secret = created_credentials(create(owner))

    session.expire_all()
    assert secret not in all_rows_text(session)
    assert secret.encode() not in b"".join(
        bytes(row[0]) for row in session.execute(text("SELECT secret_hash FROM client_secrets")))


def test_secret_is_not_in_the_session_cookie(app, owner):
    _client_id, secret = created_credentials(create(owner))

    cookie = owner.http.get_cookie("session")
    assert cookie is not None
    assert secret not in cookie.value
    decoded = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert secret not in repr(decoded)


def test_create_is_audited(owner, session):
    client_id, _secret = created_credentials(create(owner))

    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "client:created"))
    assert entry.target_id == client_id
    assert entry.actor == f"user:{owner.user.email}"
    assert entry.source_ip == "127.0.0.1"  # the request's address, with the actor


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"name": ""}, "name", "Give the client a name."),
    ({"name": "   "}, "name", "Name is required"),
    ({"ttl": "299"}, "ttl", "between 300 and 86400 seconds"),
    ({"ttl": "86401"}, "ttl", "between 300 and 86400 seconds"),
    ({"ttl": "an hour"}, "ttl", "Not a valid integer value"),
    ({"ttl": ""}, "ttl", "Enter the token lifetime in seconds."),
    ({"custom_claims": "{tier: gold}"}, "custom_claims", "not valid JSON"),
    ({"custom_claims": "[1, 2]"}, "custom_claims", "must be a JSON object"),
    ({"custom_claims": '{"iss": "https://evil.test"}'}, "custom_claims",
     "reserved claim cannot be set: iss"),
    ({"kind": "robot"}, "kind", "Not a valid choice"),
    ({"kind": "user"}, "user", "needs the user it acts for"),
    ({"api": [], "scopes-ORDERS": [], "scopes-BILLING": []}, "grants",
     "Choose at least one API the client may get tokens for."),
    ({"scopes-ORDERS": ["orders:read", "admin"]}, "grants",
     "Not a scope of Orders API (https://api.acme.test): admin"),
    ({"default_api": "api_not_one_of_them"}, "grants",
     "The default API must be one of the APIs ticked."),
    ({"auth_methods": []}, "auth_methods", "Choose at least one authentication method."),
])
def test_bad_input_is_a_form_error_on_its_field(owner, session, changes, field, message):
    keys = {"ORDERS": api_key(ORDERS_API), "BILLING": api_key(BILLING_API)}
    changes = {re.sub("ORDERS|BILLING", lambda m: keys[m.group()], k): v
               for k, v in changes.items()}

    response = create(owner, **changes)

    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    error = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    assert error, f"no error shown for {field}"
    assert message.lower() in error.group(1).lower()
    assert 'aria-invalid="true"' in page
    assert session.scalars(select(Client)).first() is None


def test_form_error_keeps_the_typed_values_and_a_usable_nonce(owner, session):
    failed = create(owner, ttl="10")
    page = failed.get_data(as_text=True)
    assert 'value="billing-sync"' in page

    retry = owner.http.post("/clients/new", data={
        **hidden_inputs(page, "/clients/new"), **GOOD, **grant_fields()})

    assert retry.status_code == 200
    assert created_credentials(retry)[1].startswith("lk_secret_")


def test_domain_error_after_the_nonce_is_spent_gives_a_fresh_nonce(owner, session):
    failed = create(owner, custom_claims='{"scope": "admin"}')  # refused by the domain
    assert failed.status_code == 400
    page = failed.get_data(as_text=True)

    retry = owner.http.post("/clients/new", data={**hidden_inputs(page, "/clients/new"), **GOOD,
                                                  **grant_fields()})

    assert retry.status_code == 200 and "client-secret" in retry.get_data(as_text=True)


def test_user_client_acts_for_a_chosen_member(owner, session, org):
    member = make_user(session, org=org, role="viewer", email="robot-owner@acme.test")
    form_page = owner.get("/clients/new").get_data(as_text=True)
    assert "robot-owner@acme.test (viewer)" in form_page

    response = create(owner, kind="user", user=member.public_id)

    client_id, secret = created_credentials(response)
    token = owner.http.post("/oauth/token", data={"grant_type": "client_credentials"},
                            headers=basic(client_id, secret)).get_json()["access_token"]
    claims = owner.http.post("/oauth/introspect", data={"token": token},
                             headers=basic(client_id, secret)).get_json()
    assert claims["uid"] == member.public_id


def test_user_of_another_org_cannot_be_chosen(owner, session, other_org):
    stranger = make_user(session, org=other_org)

    response = create(owner, kind="user", user=stranger.public_id)

    assert response.status_code == 400
    assert session.scalars(select(Client)).first() is None


def test_viewer_cannot_open_or_post_the_create_form(viewer, session):
    assert viewer.get("/clients/new").status_code == 403

    response = viewer.post("/clients/new", {**GOOD, "nonce": "x"})

    assert response.status_code == 403
    assert session.scalars(select(Client)).first() is None


def test_create_without_csrf_token_is_refused(owner, session):
    form = {k: v for k, v in new_client_form(owner).items() if k != "csrf_token"}

    response = owner.http.post("/clients/new", data={**form, **GOOD, **grant_fields()})

    assert response.status_code == 400
    assert session.scalars(select(Client)).first() is None


# -- APIs and scopes on the client form ----------------------------------------------------


def test_every_error_of_the_form_shows_at_once(owner, session):
    response = create(owner, name="", ttl="10", api=[], **{
        f"scopes-{api_key(ORDERS_API)}": [], f"scopes-{api_key(BILLING_API)}": []})

    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    for field in ("name", "grants"):
        assert re.search(rf'<p class="error" id="{field}-error">', page), field
    assert session.scalars(select(Client)).first() is None


def test_ticking_a_scope_grants_its_api(owner, session):
    orders = api_key(ORDERS_API)

    response = create(owner, api=[], default_api="", **{
        f"scopes-{orders}": ["orders:read"], f"scopes-{api_key(BILLING_API)}": []})

    client_id, _secret = created_credentials(response)
    created = session.scalar(select(Client).where(Client.public_id == client_id))
    assert created.granted == {ORDERS_API: GrantedApi(ORDERS_API, ("orders:read",))}
    assert created.default_audience == ORDERS_API


def test_the_default_api_is_the_one_chosen(owner, session):
    response = create(owner, default_api=api_key(BILLING_API))

    client_id, secret = created_credentials(response)
    token = owner.http.post("/oauth/token", data={"grant_type": "client_credentials"},
                            headers=basic(client_id, secret)).get_json()
    assert token["scope"] == "invoices:read"


def test_another_orgs_api_cannot_be_granted_from_the_form(owner, session, other_org):
    theirs = make_api(session, other_org, identifier="https://api.globex.test",
                      scopes=("secrets:read",))

    response = create(owner, api=[theirs.public_id], default_api=theirs.public_id, **{
        f"scopes-{theirs.public_id}": ["secrets:read"],
        f"scopes-{api_key(ORDERS_API)}": [], f"scopes-{api_key(BILLING_API)}": []})

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Choose at least one API the client may get tokens for." in page
    assert "https://api.globex.test" not in page and theirs.name not in page
    assert session.scalars(select(Client)).first() is None


def test_form_without_apis_points_to_registering_one(app, session, other_org):
    from tests.portal.conftest import _portal_for

    portal = _portal_for(app, session, other_org, "owner")  # an org with no API

    page = portal.get("/clients/new").get_data(as_text=True)

    assert "There is no API to grant yet." in page
    assert 'href="/apis/new"' in page


def test_deployment_api_is_offered_to_every_org(owner, session):
    shared = make_api(session, None, identifier="https://platform.example.com",
                      name="Platform", scopes=("platform:use",))

    page = owner.get("/clients/new").get_data(as_text=True)

    assert f'<label for="grant-{shared.public_id}">Platform</label>' in page


# -- getting started and the endpoints ------------------------------------------------------


def test_a_new_org_gets_three_steps_ending_in_a_curl_for_this_server(owner):
    page = html.unescape(owner.get("/clients").get_data(as_text=True))

    assert "Get your first token in three steps" in page
    assert [h for h in re.findall(r"<h3>([^<]+)</h3>", page)] == [
        "Create a client", "Copy its secret", "Run this curl"]
    assert "curl -s -u \"$CLIENT_ID:$CLIENT_SECRET\"" in page
    assert "http://localhost/oauth/token" in page  # the configured issuer


def test_the_steps_name_the_first_client_until_the_org_has_a_token(owner, session, org):
    _secret, c = make_client(session, org, name="billing-sync")

    before = html.unescape(owner.get("/clients").get_data(as_text=True))
    issue(session, c)
    after = owner.get("/clients").get_data(as_text=True)

    assert "Get your first token in three steps" in before
    assert f"export CLIENT_ID={c.public_id}" in before
    assert "Get your first token" not in after


def test_every_endpoint_url_has_a_copy_button(owner):
    page = owner.get("/clients").get_data(as_text=True)

    for name, path in [("token", "/oauth/token"), ("introspect", "/oauth/introspect"),
                       ("revoke", "/oauth/revoke"), ("jwks", "/.well-known/jwks.json"),
                       ("metadata", "/.well-known/oauth-authorization-server")]:
        field = re.search(rf'<input id="endpoint-{name}"[^>]*>', page).group(0)
        assert f'value="http://localhost{path}"' in field and "readonly" in field
        assert f'data-copy="endpoint-{name}" hidden>Copy</button>' in page
