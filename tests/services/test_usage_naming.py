"""Who an event names (the caller and the token's client), the client filter that follows
both, totals per kind, and the CSV's scope, audience and caller columns; on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from tests.factories import issue, make_api_key, make_client

INTROSPECTED, REVOKED = UsageKind.TOKEN_INTROSPECTED, UsageKind.TOKEN_REVOKED
NOW = utcnow()


@pytest.fixture
def world(session, tenants):
    """Our org (``tenants.ours``) with clients billing (the token's) and gateway (a caller),
    an API key, and a token of billing; their org with a client of the same name."""
    org = tenants.ours.org
    _, billing = make_client(session, org, name="billing")
    _, gateway = make_client(session, org, name="gateway")
    _plaintext, key = make_api_key(session, org)
    token = issue(session, billing, scopes=("read",))
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    other = tenants.theirs.org
    _, theirs = make_client(session, other, name="billing")
    session.commit()
    return {"org": org, "billing": billing, "gateway": gateway, "key": key, "jti": jti,
            "other": other, "theirs": theirs}


def event(session, org, kind, *, client=None, ref="", jti=None, reason="", ago=1):
    return usage.record_event(session, kind=kind, org_id=org.id,
                              client_id=client.id if client else None, client_ref=ref, jti=jti,
                              reason=reason, now=NOW - timedelta(minutes=ago))


def described(session, org, **filters):
    """The described events up to NOW (the fixture's own mint comes after it)."""
    events = list(session.scalars(usage.events_query(org_id=org.id, end=NOW, **filters)))
    return usage.describe(session, org_id=org.id, events=events)


def test_introspections_name_the_caller_and_the_token_client(session, world):
    org, billing, gateway, key = world["org"], world["billing"], world["gateway"], world["key"]
    event(session, org, INTROSPECTED, client=billing, ref=f"client:{gateway.public_id}",
          jti=world["jti"], reason="active", ago=3)
    event(session, org, INTROSPECTED, ref=f"client:{gateway.public_id}", reason="inactive", ago=2)
    event(session, org, INTROSPECTED, client=billing, ref=f"api_key:{key.hint}",
          jti=world["jti"], reason="active", ago=1)
    session.commit()

    rows = described(session, org, kinds=(INTROSPECTED,))

    by_key, inactive, active = rows
    assert (active.caller.kind, active.caller.name, active.caller.ref) == (
        "client", "gateway", gateway.public_id)
    assert (active.owner.name, active.owner.ref) == ("billing", billing.public_id)
    assert (active.scope, active.audience) == ("read", "https://api.example.com")
    # An inactive token: the caller is still named (not "client:lkc_…"), no owner.
    assert inactive.caller.name == "gateway" and inactive.owner is None
    assert (by_key.caller.kind, by_key.caller.name) == ("api_key", "test key")
    assert by_key.caller.ref == f"api_key:{key.hint}"


def test_revocations_name_who_revoked_and_the_token_client(session, world):
    org, billing = world["org"], world["billing"]
    event(session, org, REVOKED, client=billing, ref="user:admin@acme.test", jti=world["jti"],
          ago=2)
    event(session, org, REVOKED, client=billing, ref=f"client:{billing.public_id}",
          jti=world["jti"], ago=1)
    session.commit()

    by_itself, by_user = described(session, org)

    assert (by_user.caller.kind, by_user.caller.label) == ("user", "admin@acme.test")
    assert by_user.owner.name == "billing"
    assert by_itself.caller.name == by_itself.owner.name == "billing"


def test_token_requests_name_the_client_or_what_was_presented(session, world):
    org, billing = world["org"], world["billing"]
    event(session, org, UsageKind.TOKEN_ISSUED, client=billing, ref=billing.public_id, ago=2)
    event(session, org, UsageKind.TOKEN_FAILED, ref="lkc_nobody", reason="invalid_client", ago=1)
    session.commit()

    unknown, issued = described(session, org)

    assert issued.caller.name == issued.owner.name == "billing"
    assert unknown.owner is None and (unknown.caller.kind, unknown.caller.ref) == (
        "other", "lkc_nobody")


def test_another_orgs_client_is_never_named(session, world):
    org, theirs = world["org"], world["theirs"]
    event(session, org, INTROSPECTED, ref=f"client:{theirs.public_id}", reason="inactive")
    session.commit()

    (row,) = described(session, org)

    assert row.caller.kind == "other" and row.caller.name == ""


def test_the_client_filter_keeps_what_the_client_called_and_what_touched_its_tokens(
        session, world):
    org, billing, gateway = world["org"], world["billing"], world["gateway"]
    event(session, org, INTROSPECTED, ref=f"client:{gateway.public_id}", reason="inactive",
          jti=None, ago=4)
    event(session, org, INTROSPECTED, client=billing, ref=f"client:{gateway.public_id}",
          reason="active", jti="jti-both", ago=3)
    event(session, org, UsageKind.TOKEN_ISSUED, client=billing, ref=billing.public_id,
          jti="jti-billing", ago=2)
    # A token request whose presented id merely looks like a caller label is not the gateway's.
    event(session, org, UsageKind.TOKEN_FAILED, ref=f"client:{gateway.public_id}", ago=1)
    session.commit()

    gateways = described(session, org, client_id=gateway.id)
    billings = described(session, org, client_id=billing.id)

    assert [(r.event.reason, r.event.jti) for r in gateways] == [("active", "jti-both"),
                                                                 ("inactive", None)]
    assert [r.event.jti for r in billings] == ["jti-billing", "jti-both"]


def test_totals_count_every_kind_for_the_org_or_a_client(session, world):
    org, billing, gateway = world["org"], world["billing"], world["gateway"]
    for _ in range(3):
        event(session, org, UsageKind.TOKEN_ISSUED, client=billing, ref=billing.public_id)
    event(session, org, UsageKind.TOKEN_FAILED, client=gateway, ref=gateway.public_id)
    event(session, org, INTROSPECTED, ref=f"client:{gateway.public_id}", reason="inactive")
    event(session, org, INTROSPECTED, client=billing, ref=f"client:{gateway.public_id}")
    event(session, org, REVOKED, client=billing, ref="user:a@acme.test")
    event(session, org, UsageKind.TOKEN_ISSUED, client=billing, ago=60 * 48)  # outside
    usage.record_event(session, kind=UsageKind.TOKEN_ISSUED, org_id=world["other"].id,
                       client_id=world["theirs"].id, now=NOW)
    session.commit()
    window = {"org_id": org.id, "start": NOW - timedelta(hours=24), "end": NOW}

    everything = usage.totals(session, **window)
    gateway_only = usage.totals(session, **window, client_id=gateway.id)

    assert everything == {UsageKind.TOKEN_ISSUED: 3, UsageKind.TOKEN_FAILED: 1,
                          INTROSPECTED: 2, REVOKED: 1}
    assert gateway_only == {UsageKind.TOKEN_ISSUED: 0, UsageKind.TOKEN_FAILED: 1,
                            INTROSPECTED: 2, REVOKED: 0}


def test_export_rows_carry_scope_audience_and_caller(session, world):
    org, billing, gateway = world["org"], world["billing"], world["gateway"]
    event(session, org, INTROSPECTED, client=billing, ref=f"client:{gateway.public_id}",
          jti=world["jti"], reason="active", ago=2)
    event(session, org, INTROSPECTED, ref=f"client:{gateway.public_id}", reason="inactive",
          ago=1)
    session.commit()

    rows = [dict(zip(usage.EXPORT_COLUMNS, r, strict=True))
            for r in usage.export_rows(session, org_id=org.id, kinds=(INTROSPECTED,), chunk=1)]

    inactive, active = rows
    assert {k: active[k] for k in ("client_id", "client_name", "scope", "audience", "caller",
                                   "caller_name")} == {
        "client_id": billing.public_id, "client_name": "billing", "scope": "read",
        "audience": "https://api.example.com", "caller": gateway.public_id,
        "caller_name": "gateway"}
    assert {k: inactive[k] for k in ("client_id", "client_name", "caller", "caller_name")} == {
        "client_id": "", "client_name": "", "caller": gateway.public_id,
        "caller_name": "gateway"}
