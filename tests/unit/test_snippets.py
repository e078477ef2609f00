"""The "call your API" snippet calls the token's own API, never a placeholder address."""

from __future__ import annotations

import pytest

from portal import create_app
from portal.core.db import get_engine
from portal.views.snippets import quickstart_snippets, use_snippets
from tests.conftest import base_config


@pytest.fixture
def issuer_context(sqlite_url):
    app = create_app(base_config(sqlite_url, ISSUER="https://auth.example.test"))
    with app.app_context():
        yield
        get_engine().dispose()


def test_a_url_audience_is_called_as_is(issuer_context):
    call = use_snippets("lkc_x", "s", audience="https://orders.example.test")[0].command

    assert call == 'curl -s https://orders.example.test \\\n  -H "Authorization: Bearer $TOKEN"'


@pytest.mark.parametrize("audience", ["urn:example:orders", None])
def test_an_audience_that_is_not_a_url_goes_through_api_url(issuer_context, audience):
    call = use_snippets("lkc_x", "s", audience=audience)[0].command

    assert call.startswith("# API_URL: the address where your API")
    assert (audience or "") in call.splitlines()[0]
    assert 'curl -s "$API_URL"' in call and "example.com/resource" not in call


def test_quickstart_uses_the_configured_issuer(issuer_context):
    credentials, token = quickstart_snippets(None)

    assert token.command.endswith("https://auth.example.test/oauth/token")
    assert "export CLIENT_ID='lkc_…'" in credentials.command
