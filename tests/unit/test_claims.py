"""Custom-claim rules and scope parsing: pure functions, no app, no database."""

from __future__ import annotations

import pytest

from portal.core.errors import ReservedClaim, ValidationFailed
from portal.core.tokens.claims import (
    MAX_CUSTOM_CLAIMS_BYTES,
    RESERVED_CLAIMS,
    check_custom_claims,
    parse_scope,
)


@pytest.mark.parametrize("name", sorted(RESERVED_CLAIMS))
def test_reserved_claim_is_refused_by_name(name):
    with pytest.raises(ReservedClaim) as caught:
        check_custom_claims({name: "x"})
    assert caught.value.message == f"reserved claim cannot be set: {name}"
    assert caught.value.field == "custom_claims"


def test_registered_and_product_claims_are_all_reserved():
    expected = {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "oid", "uid"}
    assert expected <= RESERVED_CLAIMS


def test_several_reserved_claims_are_all_named():
    with pytest.raises(ReservedClaim) as caught:
        check_custom_claims({"sub": "a", "tenant": "blue", "aud": "b"})
    assert caught.value.message == "reserved claims cannot be set: aud, sub"


def test_reserved_claim_is_refused_even_next_to_valid_ones():
    with pytest.raises(ReservedClaim):
        check_custom_claims({"tenant": "blue", "scope": "admin"})


@pytest.mark.parametrize("value", [[], ["tenant"], "tenant", 1, True, 1.5])
def test_non_object_claims_are_refused(value):
    with pytest.raises(ValidationFailed) as caught:
        check_custom_claims(value)
    assert caught.value.message == "custom claims must be a JSON object"


@pytest.mark.parametrize("name", ["", "1tenant", "has space", "a" * 65, "dollar$", "é", "-x", 7])
def test_bad_claim_names_are_refused(name):
    with pytest.raises(ValidationFailed) as caught:
        check_custom_claims({name: "x"})
    assert caught.value.message.startswith("invalid claim name ")
    assert not isinstance(caught.value, ReservedClaim)


@pytest.mark.parametrize("name", ["tenant", "_private", "https://example.com/roles", "a.b:c-d",
                                  "a" * 64])
def test_good_claim_names_are_accepted(name):
    assert check_custom_claims({name: {"nested": [1, 2]}}) == {name: {"nested": [1, 2]}}


def test_none_means_no_custom_claims():
    assert check_custom_claims(None) == {}


def test_oversized_claims_are_refused():
    with pytest.raises(ValidationFailed) as caught:
        check_custom_claims({"blob": "x" * MAX_CUSTOM_CLAIMS_BYTES})
    assert str(MAX_CUSTOM_CLAIMS_BYTES) in caught.value.message


def test_check_custom_claims_returns_a_copy():
    original = {"tenant": "blue"}
    checked = check_custom_claims(original)
    checked["tier"] = 2
    assert original == {"tenant": "blue"}


def test_absent_scope_is_none():
    assert parse_scope(None) is None


def test_empty_scope_is_empty_list():
    assert parse_scope("") == []


def test_scope_is_split_on_spaces_in_order():
    assert parse_scope("write read") == ["write", "read"]


def test_scope_duplicates_and_extra_spaces_are_dropped():
    assert parse_scope("  read  write read ") == ["read", "write"]


def test_scope_with_rfc6749_punctuation_is_accepted():
    assert parse_scope("orders:read https://api.example.com/x!") == [
        "orders:read", "https://api.example.com/x!"]


@pytest.mark.parametrize("value", ['re"ad', "re\\ad", "read\twrite", "read\nwrite", "lecture-é",
                                   "x" * 129])
def test_malformed_scope_token_is_refused(value):
    with pytest.raises(ValidationFailed) as caught:
        parse_scope(value)
    assert caught.value.field == "scope"
