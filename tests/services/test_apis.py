"""APIs, their scopes and client grants, on SQLite and PostgreSQL: rules, tenancy, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from portal.core.actor import Actor
from portal.core.apis import services as apis
from portal.core.apis.models import Api, ClientGrant
from portal.core.audit.models import AuditEntry
from portal.core.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from tests.factories import make_client

ACTOR = Actor("user:admin@acme.test", "192.0.2.1")
OPERATOR = Actor("cli")


def create(session, org, identifier="https://orders.acme.test", **kwargs):
    kwargs.setdefault("name", "Orders")
    return apis.create_api(session, org=org, identifier=identifier, actor=ACTOR, **kwargs)


def audit_actions(session):
    return [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


# -- identifiers ------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", [
    "https://orders.acme.test", "https://api.acme.test/v1/orders?region=eu",
    "urn:acme:orders", "http://localhost:8080", "https://[::1]/x", "https://a.test/%20b",
    "https://a.test/" + "x" * (255 - len("https://a.test/")),
])
def test_an_absolute_uri_is_a_good_identifier(identifier):
    assert apis.check_identifier(identifier) == identifier


@pytest.mark.parametrize(("identifier", "message"), [
    ("", "an API needs an identifier"),
    ("orders", "must be an absolute URI"),
    ("/orders", "must be an absolute URI"),
    ("not a url", "must be an absolute URI"),
    ("https://", "must be an absolute URI"),
    ("https:orders", "must be an absolute URI"),
    ("https://orders.acme.test/é", "must be an absolute URI"),
    ('https://orders.acme.test/"x"', "must be an absolute URI"),
    ("https://orders.acme.test#v1", "must not have a fragment"),
    ("https://a.test/" + "x" * 241, "256 characters long; at most 255"),
])
def test_a_bad_identifier_is_refused_with_a_clear_message(identifier, message):
    with pytest.raises(ValidationFailed) as refused:
        apis.check_identifier(identifier)

    assert refused.value.field == "identifier"
    assert message in refused.value.message


def test_an_identifier_taken_in_the_same_org_is_refused(session, acme):
    create(session, acme)

    with pytest.raises(ValidationFailed) as refused:
        create(session, acme, name="Orders again")

    assert refused.value.message == (
        "you already have an API with identifier https://orders.acme.test")


def test_an_identifier_taken_by_another_org_is_refused_without_naming_it(session, acme, globex):
    create(session, acme)

    with pytest.raises(ValidationFailed) as refused:
        create(session, globex)

    assert refused.value.field == "identifier"
    assert "already taken on this server" in refused.value.message
    assert "Acme" not in refused.value.message and "acme" not in refused.value.message.split(
        "https://orders.acme.test")[1]


def test_a_deployment_identifier_cannot_be_taken_by_an_org(session, acme):
    apis.create_api(session, org=None, identifier="https://platform.test", name="Platform",
                    actor=OPERATOR)

    with pytest.raises(ValidationFailed, match="already taken"):
        create(session, acme, identifier="https://platform.test")


# -- creating, changing, deleting ---------------------------------------------------------


def test_create_keeps_scopes_lifetimes_and_audits(session, acme):
    api = create(session, acme, description="The orders service",
                 scopes=[("orders:read", "Read orders"), ("orders:write", "")],
                 default_ttl=900, max_ttl=1800)
    session.commit()

    assert api.public_id.startswith("api_") and api.org_id == acme.id
    assert [(s.name, s.description) for s in api.scopes] == [
        ("orders:read", "Read orders"), ("orders:write", "")]
    assert (api.default_ttl, api.max_ttl) == (900, 1800)
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api:created"))
    assert entry.org_id == acme.id and entry.actor == ACTOR.label
    assert entry.source_ip == "192.0.2.1" and entry.target_id == "https://orders.acme.test"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"),
    ({"scopes": [("bad scope", "")]}, "scope"),
    ({"scopes": [('say"what', "")]}, "scope"),
    ({"default_ttl": 10}, "default_ttl"),
    ({"max_ttl": 90000}, "max_ttl"),
    ({"default_ttl": 1200, "max_ttl": 600}, "default_ttl"),
])
def test_create_refuses_bad_settings(session, acme, kwargs, field):
    with pytest.raises(ValidationFailed) as refused:
        create(session, acme, **kwargs)

    assert refused.value.field == field
    session.rollback()
    assert session.scalars(select(Api)).first() is None


@pytest.mark.parametrize("app_config", [{"SCOPES_SUPPORTED": "orders:read,orders:write"}])
def test_scopes_supported_limits_the_scopes_an_api_may_define(session, acme, app_config):
    with pytest.raises(ValidationFailed, match="not offered by this server"):
        create(session, acme, scopes=[("orders:delete", "")])


def test_update_changes_name_description_and_lifetimes(session, acme):
    api = create(session, acme)

    changed = apis.update_api(session, api, acting_org_id=acme.id, name="Orders v2",
                              description="new", default_ttl=600, max_ttl=None, actor=ACTOR)

    assert changed == ["name", "description", "default_ttl"]
    assert "api:updated" in audit_actions(session)


def test_delete_is_refused_while_a_client_is_granted_it(session, acme):
    _, client = make_client(session, acme, name="billing", audiences=["https://orders.acme.test"])
    api = client.grants[0].api

    with pytest.raises(Conflict) as refused:
        apis.delete_api(session, api, acting_org_id=acme.id, actor=ACTOR)

    assert refused.value.message == (
        "orders.acme.test is still granted to 1 client (billing): remove it from that client "
        "first")
    assert session.get(Api, api.id) is not None


def test_delete_of_an_api_no_client_holds(session, acme):
    api = create(session, acme)

    apis.delete_api(session, api, acting_org_id=acme.id, actor=ACTOR)
    session.commit()

    assert session.scalars(select(Api)).first() is None
    assert audit_actions(session)[-1] == "api:deleted"


# -- tenancy ----------------------------------------------------------------------------


def test_another_orgs_api_is_not_found(session, acme, globex):
    theirs = create(session, globex, identifier="https://api.globex.test")

    with pytest.raises(NotFound):
        apis.get_api(session, org_id=acme.id, public_id=theirs.public_id)
    with pytest.raises(NotFound):
        apis.get_api_by_identifier(session, org_id=acme.id, identifier=theirs.identifier)
    assert theirs not in apis.list_apis(session, org_id=acme.id)


def test_deployment_apis_are_visible_to_every_org(session, acme, globex):
    shared = apis.create_api(session, org=None, identifier="https://platform.test",
                             name="Platform", actor=OPERATOR)
    own = create(session, acme)

    assert apis.list_apis(session, org_id=acme.id) == [own, shared]
    assert apis.list_apis(session, org_id=globex.id) == [shared]
    assert apis.get_api(session, org_id=globex.id, public_id=shared.public_id) is shared


@pytest.mark.parametrize("change", ["update", "delete", "add_scope", "remove_scope"])
def test_an_org_cannot_change_a_deployment_api(session, acme, change):
    shared = apis.create_api(session, org=None, identifier="https://platform.test",
                             name="Platform", scopes=[("platform:use", "")], actor=OPERATOR)
    calls = {
        "update": lambda: apis.update_api(session, shared, acting_org_id=acme.id, name="Mine",
                                          description="", default_ttl=None, max_ttl=None,
                                          actor=ACTOR),
        "delete": lambda: apis.delete_api(session, shared, acting_org_id=acme.id, actor=ACTOR),
        "add_scope": lambda: apis.add_scope(session, shared, acting_org_id=acme.id,
                                            name="platform:admin", actor=ACTOR),
        "remove_scope": lambda: apis.remove_scope(session, shared, acting_org_id=acme.id,
                                                  scope_id=shared.scopes[0].id, actor=ACTOR),
    }

    with pytest.raises(NotPermitted, match="only the operator can change it"):
        calls[change]()


def test_the_operator_changes_a_deployment_api(session):
    shared = apis.create_api(session, org=None, identifier="https://platform.test",
                             name="Platform", actor=OPERATOR)

    apis.add_scope(session, shared, acting_org_id=None, name="platform:use", actor=OPERATOR)

    assert shared.scope_names == ["platform:use"]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api:scope:added"))
    assert entry.org_id is None and entry.actor == "cli"


# -- scopes -----------------------------------------------------------------------------


def test_a_scope_is_added_once(session, acme):
    api = create(session, acme, scopes=[("orders:read", "")])

    with pytest.raises(ValidationFailed, match="already has scope orders:read"):
        apis.add_scope(session, api, acting_org_id=acme.id, name="orders:read", actor=ACTOR)


def test_removing_a_scope_takes_it_from_every_grant(session, acme):
    _, billing = make_client(session, acme, name="billing", scopes=["orders:read", "orders:write"],
                             audiences=["https://orders.acme.test"])
    _, reader = make_client(session, acme, name="reader", scopes=["orders:read"],
                            audiences=["https://orders.acme.test"])
    api = billing.grants[0].api
    write = next(s for s in api.scopes if s.name == "orders:write")

    affected = apis.remove_scope(session, api, acting_org_id=acme.id, scope_id=write.id,
                                 actor=ACTOR)
    session.commit()

    assert affected == [billing]
    assert api.scope_names == ["orders:read"]
    assert billing.grants[0].scopes == ["orders:read"] and reader.grants[0].scopes == [
        "orders:read"]
    entries = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "client:grant:updated")).all()
    assert [(e.target_id, e.details["removed"]) for e in entries] == [
        (billing.public_id, ["orders:write"])]


def test_a_scope_description_changes_but_not_its_name(session, acme):
    api = create(session, acme, scopes=[("orders:read", "")])

    changed = apis.update_scope(session, api, acting_org_id=acme.id, scope_id=api.scopes[0].id,
                                description="Read every order", actor=ACTOR)

    assert changed and api.scopes[0].description == "Read every order"


# -- grants -----------------------------------------------------------------------------


def test_grant_takes_a_subset_of_the_apis_scopes_in_the_apis_order(session, acme):
    _, client = make_client(session, acme)
    api = create(session, acme, scopes=[("a:read", ""), ("a:write", ""), ("a:admin", "")])

    apis.grant(session, client, api, scopes=["a:admin", "a:read"], actor=ACTOR)

    assert apis.grants_of(session, client) == (
        {"https://api.example.com": ["read", "write"],
         "https://orders.acme.test": ["a:read", "a:admin"]},
        "https://api.example.com")
    assert audit_actions(session)[-1] == "client:granted"


def test_grant_of_a_scope_the_api_lacks_is_refused(session, acme):
    _, client = make_client(session, acme)
    api = create(session, acme, scopes=[("a:read", "")])

    with pytest.raises(ValidationFailed) as refused:
        apis.grant(session, client, api, scopes=["a:write"], actor=ACTOR)

    assert refused.value.message == "not a scope of Orders (https://orders.acme.test): a:write"


def test_another_orgs_api_cannot_be_granted(session, acme, globex):
    _, client = make_client(session, acme)
    theirs = create(session, globex, identifier="https://api.globex.test")

    with pytest.raises(NotFound):
        apis.grant(session, client, theirs, scopes=[], actor=ACTOR)
    with pytest.raises(NotFound):
        apis.replace_grants(session, client, [(theirs, [])])


def test_a_deployment_api_can_be_granted_to_any_orgs_client(session, acme, globex):
    shared = apis.create_api(session, org=None, identifier="https://platform.test",
                             name="Platform", scopes=[("platform:use", "")], actor=OPERATOR)
    _, ours = make_client(session, acme)
    _, theirs = make_client(session, globex)

    for client in (ours, theirs):
        apis.grant(session, client, shared, scopes=["platform:use"], actor=ACTOR)
    session.commit()

    shared_report = apis.shared_apis(session)
    assert [(s.api, s.org_slugs) for s in shared_report] == [(shared, ["acme", "globex"])]


def test_the_first_grant_is_the_default_and_the_default_can_move(session, acme):
    _, client = make_client(session, acme)
    api = create(session, acme)

    apis.grant(session, client, api, scopes=[], actor=ACTOR)
    assert client.default_audience == "https://api.example.com"
    apis.grant(session, client, api, scopes=[], make_default=True, actor=ACTOR)
    session.commit()

    assert client.default_audience == "https://orders.acme.test"
    assert session.scalar(select(ClientGrant).where(ClientGrant.is_default)).api_id == api.id


def test_ungranting_the_default_makes_the_earliest_other_grant_the_default(session, acme):
    _, client = make_client(session, acme)
    api = create(session, acme)
    apis.grant(session, client, api, scopes=[], actor=ACTOR)

    apis.ungrant(session, client, client.default_api, actor=ACTOR)
    session.commit()

    assert client.default_audience == "https://orders.acme.test"
    assert audit_actions(session)[-1] == "client:ungranted"


def test_the_last_grant_cannot_be_taken_away(session, acme):
    _, client = make_client(session, acme)

    with pytest.raises(ValidationFailed, match="a client needs at least one API"):
        apis.ungrant(session, client, client.default_api, actor=ACTOR)


def test_replacing_grants_can_drop_the_default(session, acme):
    _, client = make_client(session, acme)
    old = client.default_api
    api = create(session, acme, scopes=[("a:read", "")])

    change = apis.replace_grants(session, client, [(api, ["a:read"])])
    session.commit()

    assert change.removed == [old.identifier] and change.added == {api.identifier: ["a:read"]}
    assert client.default_audience == api.identifier


def test_apis_for_audiences_registers_missing_ones_and_refuses_another_orgs(session, acme,
                                                                               globex):
    create(session, globex, identifier="https://api.globex.test")
    grants = apis.apis_for_audiences(session, org=acme, audiences=["https://new.acme.test"],
                                     scopes=["x:read"], actor=OPERATOR)

    assert [(a.identifier, a.org_id, s) for a, s in grants] == [
        ("https://new.acme.test", acme.id, ["x:read"])]
    with pytest.raises(ValidationFailed, match="already taken"):
        apis.apis_for_audiences(session, org=acme, audiences=["https://api.globex.test"],
                                scopes=[], actor=OPERATOR)


def test_deployment_scopes_are_the_shared_apis_only(session, acme):
    apis.create_api(session, org=None, identifier="https://platform.test", name="Platform",
                    scopes=[("platform:use", ""), ("shared:read", "")], actor=OPERATOR)
    create(session, acme, scopes=[("orders:read", "")])

    assert apis.deployment_scopes(session) == ["platform:use", "shared:read"]



def test_the_database_refuses_to_delete_a_granted_api(session, acme):
    from sqlalchemy import delete
    from sqlalchemy.exc import IntegrityError

    _, client = make_client(session, acme)

    with pytest.raises(IntegrityError):
        session.execute(delete(Api).where(Api.id == client.grants[0].api_id))
        session.flush()
    session.rollback()


def test_an_org_whose_clients_hold_its_apis_can_still_be_deleted(session, acme, globex):
    make_client(session, acme)
    _, theirs = make_client(session, globex)

    session.delete(acme)
    session.commit()

    assert [a.org_id for a in session.scalars(select(Api))] == [globex.id]
    assert session.scalar(select(func.count()).select_from(ClientGrant)) == 1
