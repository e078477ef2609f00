"""Minting a token in the portal: the form, its errors, and the one page that shows the token."""

from __future__ import annotations

import html
import re
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from portal.core.audit.models import AuditEntry
from portal.core.tokens.models import IssuedToken, TokenSource
from tests.factories import basic, make_client
from tests.portal.conftest import Portal, hidden_fields

MINTED = re.compile(r'<textarea id="minted-token"[^>]*>([^<]+)</textarea>')


@pytest.fixture
def billing(session, org):
    secret, client = make_client(
        session, org, name="billing", scopes=["orders:read", "orders:write"],
        audiences=["https://api.acme.test", "https://billing.acme.test"], ttl=900)
    client.plaintext_secret = secret
    return client


def picked(client: Any, audience: str | None = None,
           scopes: list[str] | None = None) -> dict[str, Any]:
    """The mint form's API fields: ``audience`` ticked (default: the client's default API)
    with ``scopes`` of it ticked (default: every scope granted there)."""
    identifier = audience or client.default_audience
    fields: dict[str, Any] = {"audience": [identifier]}
    grant = next((g for g in client.grants if g.api.identifier == identifier), None)
    if grant is not None:
        fields[f"scopes-{grant.api.public_id}"] = list(grant.scopes) if scopes is None else scopes
    return fields


def mint(portal: Portal, client: Any, *, api: str | None = None,
         scopes: list[str] | None = None, **changes: Any):
    """Post the mint form for ``client`` with its fresh nonce, as a browser would: the API
    ``api`` (default: the client's default API) ticked with ``scopes``; ``changes`` last."""
    page = portal.get(f"/tokens/mint?client={client.public_id}")
    assert page.status_code == 200
    data = {**hidden_fields(page.get_data(as_text=True)), **picked(client, api, scopes),
            "ttl": str(client.token_ttl), "custom_claims": ""}
    data.update(changes)
    return portal.http.post("/tokens/mint", data=data)


def minted_token(response) -> str:
    match = MINTED.search(response.get_data(as_text=True))
    assert match, "no minted token on the page"
    return html.unescape(match.group(1)).strip()


def token_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(IssuedToken))


# -- the form ---------------------------------------------------------------------------


def test_form_preselects_the_client_and_offers_its_apis_and_scopes(owner, billing):
    page = owner.get(f"/tokens/mint?client={billing.public_id}").get_data(as_text=True)

    assert f'<option value="{billing.public_id}" selected>' in page
    assert page.count('name="scopes-') == 4  # two APIs, two scopes granted on each
    assert page.count("checked") == 3  # the default API and its scopes
    assert re.search(r'name="audience" value="https://api.acme.test" id="[^"]+" checked', page)
    assert 'name="audience" value="https://billing.acme.test"' in page
    assert re.search(r'id="ttl"[^>]*value="900"', page)
    for field in ("pick-client", "ttl", "custom_claims"):
        assert f'<label for="{field}"' in page


def test_form_offers_only_enabled_clients_of_the_org(owner, session, org, other_org, billing):
    _, off = make_client(session, org, name="switched-off")
    off.enabled = False
    _, theirs = make_client(session, other_org, name="globex-client")
    session.commit()

    page = owner.get("/tokens/mint").get_data(as_text=True)

    assert billing.public_id in page
    assert off.public_id not in page and theirs.public_id not in page


def test_another_orgs_client_is_not_found(owner, session, other_org):
    _, theirs = make_client(session, other_org)

    assert owner.get(f"/tokens/mint?client={theirs.public_id}").status_code == 404


def test_org_without_enabled_clients_gets_an_empty_state(owner):
    page = owner.get("/tokens/mint").get_data(as_text=True)

    assert "There is no enabled client" in page and 'href="/clients/new"' in page


def test_viewer_sees_the_page_read_only_and_cannot_mint(viewer, session, billing):
    page = viewer.get("/tokens/mint")

    assert page.status_code == 200
    assert "read-only" in page.get_data(as_text=True)
    assert 'action="/tokens/mint" class="stack"' not in page.get_data(as_text=True)
    response = viewer.post("/tokens/mint", {"client": billing.public_id, "ttl": "900"})
    assert response.status_code == 403
    assert token_count(session) == 0


def test_mint_without_csrf_token_is_refused(owner, session, billing):
    response = owner.post("/tokens/mint", {"client": billing.public_id, "ttl": "900"},
                          csrf=False)

    assert response.status_code == 400
    assert token_count(session) == 0


# -- minting ----------------------------------------------------------------------------


def test_mint_shows_the_token_once_with_no_store(session, billing, editor):
    portal = editor

    response = mint(portal, billing, scopes=["orders:read"],
                    api="https://billing.acme.test", ttl="600",
                    custom_claims='{"tier": "gold", "region": "eu"}')

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    claims = jwt.decode(minted_token(response), options={"verify_signature": False})
    assert claims["scope"] == "orders:read"
    assert claims["aud"] == "https://billing.acme.test"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["tier"] == "gold" and claims["region"] == "eu"
    record = session.scalar(select(IssuedToken))
    assert record.jti == claims["jti"] and record.source is TokenSource.PORTAL


def test_minted_token_verifies_against_the_jwks(owner, billing):
    token = minted_token(mint(owner, billing, custom_claims='{"tier": "gold"}'))

    jwks = owner.get("/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name],
                        audience="https://api.acme.test", issuer="http://localhost")
    assert claims["client_id"] == billing.public_id and claims["tier"] == "gold"
    assert claims["scope"] == "orders:read orders:write"


def test_minted_token_introspects_active(owner, billing):
    token = minted_token(mint(owner, billing))

    response = owner.http.post("/oauth/introspect", data={"token": token},
                               headers=basic(billing.public_id, billing.plaintext_secret))

    assert response.get_json()["active"] is True


def test_result_shows_decoded_header_claims_expiry_and_snippets(owner, billing):
    response = mint(owner, billing, custom_claims='{"tier": "gold"}')
    page = html.unescape(response.get_data(as_text=True))
    token = minted_token(response)
    claims = jwt.decode(token, options={"verify_signature": False})

    kid = jwt.get_unverified_header(token)["kid"]
    assert '"typ": "at+jwt"' in page and f'"kid": "{kid}"' in page
    assert f'"jti": "{claims["jti"]}"' in page and '"tier": "gold"' in page
    assert "Valid for 900 seconds" in page
    assert f"Authorization: Bearer {token}" in page  # call-an-API snippet
    assert "http://localhost/oauth/introspect" in page and "$CLIENT_SECRET" in page


def test_unticked_scopes_mean_all_allowed_scopes(owner, billing):
    token = minted_token(mint(owner, billing, scopes=[]))

    assert jwt.decode(token, options={"verify_signature": False})["scope"] == \
        "orders:read orders:write"


def test_mint_is_audited(owner, session, billing):
    token = minted_token(mint(owner, billing))

    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "token:minted"))
    assert entry.actor == f"user:{owner.user.email}"
    assert entry.target_id == billing.public_id
    assert entry.details["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]
    page = owner.get("/audit").get_data(as_text=True)
    assert "token:minted" in page


def test_reloading_the_result_mints_nothing_again(owner, session, billing):
    page = owner.get(f"/tokens/mint?client={billing.public_id}").get_data(as_text=True)
    data = {**hidden_fields(page), **picked(billing, scopes=["orders:read"]), "ttl": "900",
            "custom_claims": ""}
    first = owner.http.post("/tokens/mint", data=data)
    assert first.status_code == 200

    again = owner.http.post("/tokens/mint", data=data)

    assert again.status_code == 302
    assert again.headers["Location"].endswith(f"/tokens/mint?client={billing.public_id}")
    assert "minted-token" not in again.get_data(as_text=True)
    assert token_count(session) == 1
    followed = owner.get(again.headers["Location"]).get_data(as_text=True)
    assert "only shown once" in followed


def test_mint_for_a_disabled_client_is_refused(owner, session, billing):
    page = owner.get(f"/tokens/mint?client={billing.public_id}").get_data(as_text=True)
    billing.enabled = False
    session.commit()

    response = owner.http.post("/tokens/mint", data={**hidden_fields(page), "ttl": "900"})

    assert response.status_code == 302
    assert token_count(session) == 0


def test_posting_another_orgs_client_is_not_found(owner, session, other_org, billing):
    _, theirs = make_client(session, other_org)
    page = owner.get(f"/tokens/mint?client={billing.public_id}").get_data(as_text=True)

    response = owner.http.post("/tokens/mint", data={
        **hidden_fields(page), "client": theirs.public_id, "ttl": "900"})

    assert response.status_code == 404
    assert token_count(session) == 0


# -- form errors: 400, the message on its field, nothing issued ------------------------


CLAIMS = "custom_claims"


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({CLAIMS: '{"tier": '}, CLAIMS, "not valid JSON"),
    ({CLAIMS: '["tier", "gold"]'}, CLAIMS, "must be a JSON object"),
    ({CLAIMS: '"gold"'}, CLAIMS, "must be a JSON object"),
    ({CLAIMS: '{"sub": "someone-else"}'}, CLAIMS, "reserved claim cannot be set: sub"),
    ({CLAIMS: '{"iss": "https://evil.test"}'}, CLAIMS, "reserved claim cannot be set: iss"),
    ({CLAIMS: '{"scope": "admin", "jti": "x"}'}, CLAIMS,
     "reserved claims cannot be set: jti, scope"),
    ({"scopes": ["orders:read", "admin"]}, "audience",
     "scope not granted to this client on this API: admin"),
    ({"audience": "https://evil.test"}, "audience",
     "audience not granted to this client: https://evil.test"),
    ({"ttl": "299"}, "ttl", "between 300 and 86400 seconds"),
    ({"ttl": "86401"}, "ttl", "between 300 and 86400 seconds"),
    ({"ttl": "soon"}, "ttl", "Not a valid integer value"),
    ({"ttl": ""}, "ttl", "Enter the token lifetime in seconds"),
])
def test_bad_input_is_a_form_error_and_mints_nothing(owner, session, billing, changes, field,
                                                     message):
    response = mint(owner, billing, **changes)

    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    error = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    assert error and message.lower() in error.group(1).lower(), page[:3000]
    assert "minted-token" not in page
    assert token_count(session) == 0
    assert session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "token:minted")) == 0


def test_form_error_keeps_a_usable_nonce(owner, session, billing):
    bad = mint(owner, billing, custom_claims='{"sub": "x"}')
    data = {**hidden_fields(bad.get_data(as_text=True)), **picked(billing, scopes=["orders:read"]),
            "ttl": "900", "custom_claims": ""}

    response = owner.http.post("/tokens/mint", data=data)

    assert response.status_code == 200 and minted_token(response)
    assert token_count(session) == 1


def test_form_error_keeps_what_was_typed(owner, billing):
    response = mint(owner, billing, ttl="299", custom_claims='{"tier": "gold"}')

    page = html.unescape(response.get_data(as_text=True))
    assert re.search(r'id="ttl"[^>]*value="299"', page)
    assert '{"tier": "gold"}' in page


# -- APIs and scopes --------------------------------------------------------------------


def test_ticking_two_apis_gives_a_token_for_both(owner, billing):
    both = {**picked(billing), **picked(billing, "https://billing.acme.test"),
            "audience": ["https://api.acme.test", "https://billing.acme.test"]}

    token = minted_token(mint(owner, billing, **both))

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ["https://api.acme.test", "https://billing.acme.test"]
    assert claims["scope"] == "orders:read orders:write"


def test_a_scope_not_granted_on_every_api_of_the_token_is_refused(owner, session, org, billing):
    from portal.core.actor import Actor
    from portal.core.apis import services as apis

    billing_api = next(g.api for g in billing.grants
                       if g.api.identifier == "https://billing.acme.test")
    apis.grant(session, billing, billing_api, scopes=["orders:read"], actor=Actor("test"))
    session.commit()
    both = {**picked(billing, scopes=["orders:write"]),
            **picked(billing, "https://billing.acme.test", scopes=[]),
            "audience": ["https://api.acme.test", "https://billing.acme.test"]}

    response = mint(owner, billing, **both)

    assert response.status_code == 400
    assert "Scope not granted to this client on every audience of the token: orders:write." in \
        html.unescape(response.get_data(as_text=True))
    assert token_count(session) == 0


def test_minted_page_calls_the_tokens_own_api(owner, billing):
    response = mint(owner, billing, api="https://billing.acme.test")

    page = html.unescape(response.get_data(as_text=True))
    assert "curl -s https://billing.acme.test \\\n  -H 'Authorization: Bearer " in page
    assert "api.example.com" not in page
