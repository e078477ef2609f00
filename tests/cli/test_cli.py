"""The ``latchkey`` command, through Flask's CLI runner on the test app."""

from __future__ import annotations

import json
from datetime import timedelta
from http import HTTPStatus

import pytest
from sqlalchemy import func, select

from portal.cli import cli
from portal.core.actor import Actor
from portal.core.apis.grants import GrantedApi
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import Client
from portal.core.orgs.models import Organization
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageEvent, UsageHourly, UsageKind
from portal.core.users.models import Membership, Role, User
from tests.factories import PASSWORD, age_next_key, basic, make_client, mint

AUDIENCE = "https://api.example.com"


def invoke(runner, *args):
    return runner.invoke(cli, list(args))


def audit_actions(session, **filters):
    stmt = select(AuditEntry.action).filter_by(**filters).order_by(AuditEntry.id)
    return list(session.scalars(stmt))


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_runner_runs_commands_against_the_test_app(session, runner):
    # FlaskCliRunner.invoke(cli, args) passes obj=ScriptInfo(create_app=lambda: app), so the
    # group never builds its own app (which would use instance/latchkey.db).
    result = invoke(runner, "create-org", "--name", "Through runner")
    assert result.exit_code == 0, result.output
    assert session.scalar(select(Organization).where(Organization.slug == "through-runner"))


def test_create_org_creates_org_with_signing_keys(session, runner):
    result = invoke(runner, "create-org", "--name", "Globex Corp", "--slug", "globex")
    assert result.exit_code == 0, result.output
    org = session.scalar(select(Organization).where(Organization.slug == "globex"))
    assert org.name == "Globex Corp"
    assert result.stdout == f"created org globex ({org.public_id})\n"
    assert sorted(k.state.value for k in signing_keys.org_keys(session, org_id=org.id)) == [
        "active", "next"]


def test_create_org_json_prints_only_json(session, runner):
    result = invoke(runner, "create-org", "--name", "Initech", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["slug"] == "initech" and body["name"] == "Initech"
    assert body["id"].startswith("org_")


def test_create_org_with_algorithm(session, runner):
    result = invoke(runner, "create-org", "--name", "Edwards", "--alg", "EdDSA")
    assert result.exit_code == 0, result.output
    org = session.scalar(select(Organization).where(Organization.slug == "edwards"))
    assert {k.alg for k in signing_keys.org_keys(session, org_id=org.id)} == {"EdDSA"}


def test_create_org_is_audited(session, runner):
    invoke(runner, "create-org", "--name", "Umbrella")
    org = session.scalar(select(Organization).where(Organization.slug == "umbrella"))
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "org:created"))
    assert entry.org_id == org.id and entry.actor == "cli" and entry.target_id == "umbrella"
    assert entry.source_ip == ""  # the CLI acts from no address


def test_create_user_joins_org_with_role(session, runner, acme):
    result = invoke(runner, "create-user", "--email", "Ada@Example.com", "--password", PASSWORD,
                    "--org", "acme", "--role", "viewer")
    assert result.exit_code == 0, result.output
    assert result.stdout == "created user ada@example.com (viewer of acme)\n"
    user = session.scalar(select(User).where(User.email == "ada@example.com"))
    member = session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert member.org_id == acme.id and member.role is Role.VIEWER
    assert user.password_hash.startswith("$argon2id$")


def test_create_user_takes_password_from_environment(session, runner):
    result = runner.invoke(cli, ["create-user", "--email", "env@example.com"],
                           env={"LATCHKEY_NEW_USER_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert session.scalar(select(User).where(User.email == "env@example.com")) is not None


def test_create_user_and_membership_are_audited(session, runner, acme):
    invoke(runner, "create-user", "--email", "grace@example.com", "--password", PASSWORD,
           "--org", "acme", "--role", "admin")
    assert audit_actions(session, org_id=acme.id, actor="cli") == [
        "user:created", "member:added"]


def test_create_client_json_prints_exactly_one_object(runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "billing",
                    "--scopes", "read write", "--audience", AUDIENCE, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    body = json.loads(result.stdout)
    assert set(body) == {"client_id", "client_secret"}
    assert body["client_id"].startswith("lkc_")
    assert body["client_secret"].startswith("lk_secret_")


def test_create_client_secret_works_at_token_endpoint(client, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "billing",
                    "--scopes", "read,write", "--audience", AUDIENCE, "--json")
    body = json.loads(result.stdout)
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(body["client_id"], body["client_secret"]))
    assert response.status_code == HTTPStatus.OK, response.get_json()
    assert response.get_json()["scope"] == "read write"


def test_create_client_stores_its_settings(session, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "jobs", "--scopes", "read",
                    "--audience", "https://a.example.com", "--audience", "https://b.example.com",
                    "--ttl", "600", "--claims", '{"tenant": "blue"}', "--kind", "service",
                    "--auth-method", "client_secret_post", "--json")
    assert result.exit_code == 0, result.output
    created = session.scalar(select(Client).where(
        Client.public_id == json.loads(result.stdout)["client_id"]))
    assert created.org_id == acme.id and created.kind.value == "service"
    assert created.granted == {
        "https://a.example.com": GrantedApi("https://a.example.com", ("read",)),
        "https://b.example.com": GrantedApi("https://b.example.com", ("read",))}
    assert created.default_audience == "https://a.example.com"
    assert created.token_ttl == 600 and created.custom_claims == {"tenant": "blue"}
    assert created.auth_methods == ["client_secret_post"]


def test_create_client_secret_is_never_stored_in_plaintext(session, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "billing",
                    "--audience", AUDIENCE, "--json")
    secret = json.loads(result.stdout)["client_secret"]
    created = session.scalar(select(Client).where(Client.name == "billing"))
    assert all(secret.encode() not in s.secret_hash for s in created.secrets)
    assert created.secrets[0].hint == secret[-4:]


def test_create_client_is_audited(session, runner, acme):
    result = invoke(runner, "create-client", "--org", "acme", "--name", "billing",
                    "--audience", AUDIENCE, "--json")
    client_id = json.loads(result.stdout)["client_id"]
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "client:created"))
    assert entry.source_ip == ""  # the CLI acts from no address
    assert entry.org_id == acme.id and entry.actor == "cli" and entry.target_id == client_id


@pytest.mark.parametrize(("args", "needle"), [
    (["create-client", "--org", "nope", "--name", "x", "--audience", AUDIENCE], "nope"),
    (["create-client", "--org", "acme", "--audience", AUDIENCE], "--name"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE, "--ttl", "10"],
     "TTL"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE,
      "--claims", '{"iss": "x"}'], "iss"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE,
      "--claims", "{not json"], "--claims"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE,
      "--claims", "[1, 2]"], "JSON object"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE,
      "--ttl", "ten"], "ten"),
    (["create-client", "--org", "acme", "--name", "x", "--audience", AUDIENCE,
      "--auth-method", "private_key_jwt"], "JWKS"),
    (["create-org", "--name", "Acme", "--slug", "acme"], "already exists"),
    (["create-org", "--name", "Bad", "--slug", "Not A Slug!"], "slug"),
    (["create-user", "--email", "not-an-email", "--password", PASSWORD], "email"),
    (["create-user", "--email", "short@example.com", "--password", "short"], "password"),
    (["create-user", "--email", "a@example.com", "--password", PASSWORD, "--org", "nope"],
     "nope"),
    (["rotate-signing-key", "--org", "nope"], "nope"),
    (["no-such-command"], "no-such-command"),
])
def test_bad_arguments_exit_2_with_one_line_error(runner, acme, args, needle):
    result = invoke(runner, *args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line.startswith("latchkey: error:"), line
    assert needle in line
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_failed_command_changes_nothing(session, runner, acme):
    before = session.scalar(select(func.count()).select_from(Client))
    result = invoke(runner, "create-client", "--org", "acme", "--name", "x", "--audience",
                    AUDIENCE, "--claims", '{"sub": "admin"}')
    assert result.exit_code == 2
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Client)) == before
    assert audit_actions(session, action="client:created") == []


def test_rotate_signing_key_rotates_every_org(session, runner, acme, globex):
    nexts = {org.id: next(k.kid for k in signing_keys.org_keys(session, org_id=org.id)
                          if k.state is KeyState.NEXT) for org in (acme, globex)}
    age_next_key(session, acme)
    age_next_key(session, globex)
    result = invoke(runner, "rotate-signing-key")
    assert result.exit_code == 0, result.output
    session.expire_all()
    for org in (acme, globex):
        active = [k for k in signing_keys.org_keys(session, org_id=org.id)
                  if k.state is KeyState.ACTIVE]
        assert [k.kid for k in active] == [nexts[org.id]]
        assert audit_actions(session, org_id=org.id, action="signing_key:rotated") == [
            "signing_key:rotated"]


def test_rotate_signing_key_for_one_org(session, runner, acme, globex):
    age_next_key(session, acme)
    result = invoke(runner, "rotate-signing-key", "--org", "acme")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("acme: now signing with ")
    assert audit_actions(session, org_id=acme.id, action="signing_key:rotated") == [
        "signing_key:rotated"]
    assert audit_actions(session, org_id=globex.id, action="signing_key:rotated") == []
    assert {k.state for k in signing_keys.org_keys(session, org_id=globex.id)} == {
        KeyState.ACTIVE, KeyState.NEXT}


def test_rotation_audit_entry_names_actor_cli(session, runner, acme):
    age_next_key(session, acme)
    invoke(runner, "rotate-signing-key", "--org", "acme")
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "signing_key:rotated"))
    assert entry.actor == "cli"


def _issue(session, org, c, *, issued_at, ttl=300):
    return mint(session, c, ttl=ttl, now=issued_at).values["jti"]


def test_prune_deletes_token_records_expired_over_a_day_ago(session, runner, acme):
    _, c = make_client(session, acme)
    now = utcnow()
    old = _issue(session, acme, c, issued_at=now - timedelta(days=3))
    recent = _issue(session, acme, c, issued_at=now - timedelta(hours=12))
    live = _issue(session, acme, c, issued_at=now)
    result = invoke(runner, "prune")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pruned 1 expired tokens, ")
    session.expire_all()
    remaining = set(session.scalars(select(IssuedToken.jti)))
    assert remaining == {recent, live}
    assert old not in remaining


def test_prune_folds_old_usage_events_into_hourly_counts(session, runner, acme):
    _, c = make_client(session, acme)
    old_hour = (utcnow() - timedelta(days=100)).replace(minute=0, second=0, microsecond=0)
    for minute in (1, 20, 59):
        usage.record_event(session, kind=UsageKind.TOKEN_ISSUED, org_id=acme.id, client_id=c.id,
                           client_ref=c.public_id, now=old_hour + timedelta(minutes=minute))
    usage.record_event(session, kind=UsageKind.TOKEN_FAILED, org_id=acme.id, client_id=c.id,
                       client_ref=c.public_id, now=old_hour + timedelta(minutes=5))
    usage.record_event(session, kind=UsageKind.TOKEN_ISSUED, org_id=acme.id, client_id=c.id,
                       client_ref=c.public_id, now=utcnow() - timedelta(days=1))
    session.commit()
    result = invoke(runner, "prune")
    assert result.exit_code == 0, result.output
    assert ", 4 usage events, " in result.stdout
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 1
    hourly = {(row.kind, row.hour, row.count, row.client_id)
              for row in session.scalars(select(UsageHourly))}
    assert hourly == {(UsageKind.TOKEN_ISSUED, old_hour, 3, c.id),
                      (UsageKind.TOKEN_FAILED, old_hour, 1, c.id)}


def test_prune_retention_days_option_overrides_config(session, runner, acme):
    usage.record_event(session, kind=UsageKind.TOKEN_ISSUED, org_id=acme.id,
                       now=utcnow() - timedelta(days=10))
    session.commit()
    assert ", 0 usage events, " in invoke(runner, "prune").stdout
    result = invoke(runner, "prune", "--retention-days", "7")
    assert ", 1 usage events, " in result.stdout
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_prune_deletes_retired_keys_whose_tokens_expired(session, runner, acme):
    age_next_key(session, acme, ready_by=utcnow() - timedelta(days=2))
    signing_keys.rotate(session, org_id=acme.id, actor=Actor("test"),
                        now=utcnow() - timedelta(days=2))
    session.commit()
    result = invoke(runner, "prune")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(", 1 retired keys\n")
    session.expire_all()
    assert {k.state for k in signing_keys.org_keys(session, org_id=acme.id)} == {
        KeyState.ACTIVE, KeyState.NEXT}


def test_help_lists_the_commands(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("serve", "db", "create-org", "create-user", "create-client",
                    "rotate-signing-key", "prune"):
        assert command in result.stdout
