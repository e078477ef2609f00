"""The one rule that turns a token request into audiences, scopes and a lifetime."""

from __future__ import annotations

import pytest

from portal.core.apis.grants import GrantedApi, parse_grant_lines, resolve
from portal.core.errors import AudienceNotAllowed, ScopeNotAllowed, ValidationFailed

ORDERS = "https://orders.example.com"
BILLING = "https://billing.example.com"
GRANTED = {
    ORDERS: GrantedApi(ORDERS, ("orders:read", "orders:write", "admin")),
    BILLING: GrantedApi(BILLING, ("orders:read", "invoices:read")),
}


def judge(audiences=None, scopes=None, *, granted=GRANTED, default=ORDERS, ttl=None,
          client_ttl=3600):
    """Pure: no app, no database."""
    return resolve(granted, default, scopes=scopes, audiences=audiences, ttl=ttl,
                   client_ttl=client_ttl, ttl_bounds=(300, 3600, 86400))


def test_no_audience_gets_the_default_api_with_every_granted_scope():
    got = judge()

    assert got.audiences == [ORDERS]
    assert got.scopes == ["orders:read", "orders:write", "admin"]
    assert got.lifetime == 3600


def test_an_audience_not_granted_is_invalid_target():
    with pytest.raises(AudienceNotAllowed) as refused:
        judge(["https://other-org.example.com"])

    assert refused.value.code == "invalid_target"
    assert refused.value.message == (
        "audience not granted to this client: https://other-org.example.com")


def test_a_client_with_no_grant_gets_nothing():
    with pytest.raises(AudienceNotAllowed, match="not granted any API"):
        judge(granted={}, default=None)


def test_a_scope_not_granted_on_the_api_is_invalid_scope():
    with pytest.raises(ScopeNotAllowed) as refused:
        judge([BILLING], ["admin"])

    assert refused.value.code == "invalid_scope"
    assert refused.value.message == "scope not granted to this client on this API: admin"


def test_a_token_for_two_apis_carries_only_scopes_granted_on_both():
    got = judge([ORDERS, BILLING])

    assert got.audiences == [ORDERS, BILLING]
    assert got.scopes == ["orders:read"]
    with pytest.raises(ScopeNotAllowed, match="every audience of the token: admin"):
        judge([ORDERS, BILLING], ["admin"])


def test_repeated_audiences_and_scopes_count_once():
    got = judge([BILLING, BILLING], ["invoices:read", "invoices:read"])

    assert got.audiences == [BILLING] and got.scopes == ["invoices:read"]


def test_the_shortest_api_default_lifetime_wins_over_the_clients():
    granted = {ORDERS: GrantedApi(ORDERS, (), default_ttl=900),
               BILLING: GrantedApi(BILLING, (), default_ttl=600)}

    assert judge([ORDERS], granted=granted).lifetime == 900
    assert judge([ORDERS, BILLING], granted=granted).lifetime == 600


def test_the_api_maximum_cuts_the_clients_lifetime():
    granted = {ORDERS: GrantedApi(ORDERS, (), max_ttl=600)}

    assert judge(granted=granted, client_ttl=3600).lifetime == 600


def test_a_mint_lifetime_above_the_api_maximum_is_refused():
    granted = {ORDERS: GrantedApi(ORDERS, (), max_ttl=600)}

    with pytest.raises(ValidationFailed) as refused:
        judge(granted=granted, ttl=601)

    assert refused.value.field == "ttl"
    assert refused.value.message == f"tokens for {ORDERS} live at most 600 seconds"
    assert judge(granted=granted, ttl=600).lifetime == 600


def test_a_mint_lifetime_outside_the_servers_bounds_is_refused():
    with pytest.raises(ValidationFailed, match="between 300 and 86400 seconds"):
        judge(ttl=299)


def test_grant_lines_read_back_as_the_sql_writes_them():
    text = (f'{ORDERS} 1 900 - ["orders:read", "orders:write"]\n'
            f"{BILLING} 0 - 1200 []")

    granted, default = parse_grant_lines(text)

    assert default == ORDERS
    assert granted == {
        ORDERS: GrantedApi(ORDERS, ("orders:read", "orders:write"), default_ttl=900),
        BILLING: GrantedApi(BILLING, (), max_ttl=1200),
    }
    assert parse_grant_lines(None) == ({}, None)
