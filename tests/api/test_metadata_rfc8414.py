"""RFC 8414 §3.2: "Zero-element arrays MUST be omitted from the response"."""

from __future__ import annotations

import pytest

from api.wellknown import METADATA_PATHS
from tests.factories import make_api


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_has_no_empty_array(client, path):
    doc = client.get(path).get_json()

    empty = sorted(name for name, value in doc.items() if value == [])

    assert empty == []


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_response_types_are_omitted_while_there_is_no_authorization_endpoint(client, path):
    doc = client.get(path).get_json()

    assert "authorization_endpoint" not in doc
    assert "response_types_supported" not in doc


def test_lists_that_have_members_are_kept(client, session):
    make_api(session, None, identifier="https://platform.example.com", scopes=("read", "write"))
    doc = client.get(METADATA_PATHS[0]).get_json()

    assert doc["scopes_supported"] == ["read", "write"]
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert doc["token_endpoint_auth_methods_supported"]
    assert doc["access_token_signing_alg_values_supported"]
