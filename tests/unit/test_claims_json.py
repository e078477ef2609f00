"""Custom claims are plain JSON (RFC 8259): no NaN or Infinity, valid Unicode, bounded nesting."""

from __future__ import annotations

import pytest

from portal.core.errors import ValidationFailed
from portal.core.tokens.claims import MAX_CLAIM_DEPTH, check_custom_claims, load_custom_claims


def nested(depth: int) -> str:
    """A claims object ``depth`` levels deep (the object itself counts as one)."""
    return '{"a": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}',
                                  '{"x": 1e999}', '{"x": [1, -1e400]}'])
def test_non_finite_numbers_are_refused_when_parsed(text):
    with pytest.raises(ValidationFailed) as caught:
        load_custom_claims(text)

    assert "NaN, Infinity and numbers too large to represent are not allowed" \
        in caught.value.message
    assert caught.value.field == "custom_claims"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused_in_claims_given_as_objects(value):
    with pytest.raises(ValidationFailed, match="NaN, Infinity"):
        check_custom_claims({"deep": {"list": [1, value]}})


@pytest.mark.parametrize("depth", [3000, 990, MAX_CLAIM_DEPTH + 1])
def test_claims_nested_deeper_than_the_limit_are_refused(depth):
    with pytest.raises(ValidationFailed) as caught:
        check_custom_claims(load_custom_claims(nested(depth)))

    assert caught.value.message == (
        f"custom claims may nest objects and arrays at most {MAX_CLAIM_DEPTH} levels deep")


def test_claims_nested_to_the_limit_are_accepted():
    claims = load_custom_claims(nested(MAX_CLAIM_DEPTH))

    assert check_custom_claims(claims) == claims


def test_ordinary_claims_are_accepted():
    claims = {"tier": "gold", "ratio": 0.25, "n": 10**30, "ok": True, "none": None,
              "tags": ["a", {"b": [1, 2.5]}], "unicode": "héllo ✓"}

    assert check_custom_claims(claims) == claims


@pytest.mark.parametrize("claims", [{"x": "\ud800"}, {"x": {"\udfff": 1}}])
def test_lone_surrogates_are_refused(claims):
    with pytest.raises(ValidationFailed, match="valid Unicode"):
        check_custom_claims(claims)


def test_values_that_are_not_json_are_refused():
    with pytest.raises(ValidationFailed, match="not bytes"):
        check_custom_claims({"x": b"raw"})
