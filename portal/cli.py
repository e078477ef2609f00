"""The ``latchkey`` command: a Flask CLI group, so every ``flask`` command works too."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from portal.core.actor import CLI
from portal.core.db import get_session
from portal.core.errors import LatchkeyError
from portal.core.types import utcnow

if TYPE_CHECKING:
    from flask import Flask

USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    raise click.UsageError(message)


class LatchkeyGroup(FlaskGroup):
    """Prints every usage error on one line (``latchkey: error: ...``), exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not kwargs.pop("standalone_mode", True):
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.ClickException as e:
            click.echo(f"latchkey: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("latchkey: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _create_app() -> Flask:
    from portal import create_app

    return create_app()


@click.group(cls=LatchkeyGroup, create_app=_create_app, add_version_option=False)
def cli() -> None:
    """Latchkey: a machine-to-machine OAuth 2.0 server with a developer portal."""


def domain_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command in an app context; domain errors become one-line usage errors."""

    @with_appcontext
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LatchkeyError as e:
            get_session().rollback()
            fail(e.message)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _csv(value: str) -> list[str]:
    return [part for part in value.replace(",", " ").split() if part]


# -- commands ----------------------------------------------------------------------------


@click.group("db")
def db_group() -> None:
    """Database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@domain_command
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from portal.migrate import upgrade

    upgrade(revision)
    click.echo(f"database at {revision}", err=True)


@click.command("create-org")
@click.option("--name", required=True, help="Display name.")
@click.option("--slug", help="URL name; derived from --name when omitted.")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "EdDSA"]), default=None,
              help="Signing algorithm of the org's keys (default RS256).")
@click.option("--json", "as_json", is_flag=True, help="Print the org as JSON.")
@domain_command
def create_org(name: str, slug: str | None, alg: str | None, as_json: bool) -> None:
    """Create an organisation with its signing keys."""
    from portal.core.orgs import services as orgs

    session = get_session()
    org = orgs.create_org(session, name=name, slug=slug, signing_alg=alg, actor=CLI)
    session.commit()
    if as_json:
        click.echo(json.dumps({"slug": org.slug, "id": org.public_id, "name": org.name}))
    else:
        click.echo(f"created org {org.slug} ({org.public_id})")


@click.command("create-user")
@click.option("--email", required=True)
@click.option("--password", envvar="LATCHKEY_NEW_USER_PASSWORD",
              help="Or set LATCHKEY_NEW_USER_PASSWORD; prompted when neither is given.")
@click.option("--name", default="")
@click.option("--org", "org_slug", help="Slug of the org to join.")
@click.option("--role", type=click.Choice(["owner", "admin", "viewer"]), default="admin",
              show_default=True)
@domain_command
def create_user(email: str, password: str | None, name: str, org_slug: str | None,
                role: str) -> None:
    """Create a portal user, optionally as a member of an org."""
    from portal.core.orgs import services as orgs
    from portal.core.users import services as users

    session = get_session()
    org = orgs.get_org(session, org_slug) if org_slug else None
    if password is None:
        if not sys.stdin.isatty():
            fail("--password or LATCHKEY_NEW_USER_PASSWORD is required when not interactive")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = users.create_user(session, email=email, password=password, name=name, org=org,
                             role=role, actor=CLI)
    session.commit()
    click.echo(f"created user {user.email}" + (f" ({role} of {org.slug})" if org else ""))


@click.command("create-client")
@click.option("--org", "org_slug", required=True, help="Slug of the owning org.")
@click.option("--name", required=True)
@click.option("--scopes", default="", help="Allowed scopes, space- or comma-separated.")
@click.option("--audience", "audiences", multiple=True, required=True,
              help="Allowed audience (resource server); repeat for several.")
@click.option("--kind", type=click.Choice(["org", "user", "service"]), default="org",
              show_default=True)
@click.option("--user", "user_email", help="The user a --kind user client acts for.")
@click.option("--ttl", type=int, default=None, help="Token lifetime in seconds (300-86400).")
@click.option("--description", default="")
@click.option("--auth-method", "auth_methods", multiple=True,
              type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt"]),
              help="Allowed token-endpoint authentication; repeat for several.")
@click.option("--jwks", "jwks_file", type=click.File("r"),
              help="File with the client's public JWKS (for private_key_jwt).")
@click.option("--claims", "claims_json", default=None, help="Custom claims as a JSON object.")
@click.option("--json", "as_json", is_flag=True,
              help='Print only {"client_id": ..., "client_secret": ...}.')
@domain_command
def create_client(org_slug: str, name: str, scopes: str, audiences: tuple[str, ...], kind: str,
                  user_email: str | None, ttl: int | None, description: str,
                  auth_methods: tuple[str, ...], jwks_file: Any, claims_json: str | None,
                  as_json: bool) -> None:
    """Create a client; its secret is printed once and never stored in plaintext.

    Each --audience is the identifier of an API the client is granted with
    --scopes: the org's API (registered with those scopes if the org has none
    with that identifier, and given any it lacks) or a deployment API; another
    org's is refused. The first --audience is the client's default API.
    """
    from portal.core.apis import services as apis
    from portal.core.clients import services as clients
    from portal.core.orgs import services as orgs
    from portal.core.users import services as users

    session = get_session()
    org = orgs.get_org(session, org_slug)
    user = users.get_user(session, user_email) if user_email else None
    jwks = _load_json(jwks_file.read(), "--jwks") if jwks_file else None
    claims = _load_json(claims_json, "--claims") if claims_json is not None else None
    grants = apis.apis_for_audiences(session, org=org, audiences=list(audiences),
                                     scopes=_csv(scopes), actor=CLI)
    secret, client = clients.create_client(
        session, org=org, name=name, description=description, kind=kind,
        grants=grants, ttl=ttl,
        auth_methods=list(auth_methods) or None, custom_claims=claims, jwks=jwks, user=user,
        actor=CLI,
    )
    session.commit()
    if as_json:
        click.echo(json.dumps({"client_id": client.public_id, "client_secret": secret}))
        return
    click.echo(f"client_id:     {client.public_id}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("(the secret is shown only now; store it safely)", err=True)


@click.command("create-api-key")
@click.option("--org", "org_slug", required=True, help="Slug of the org the key acts for.")
@click.option("--name", required=True, help="What uses it, e.g. terraform-ci.")
@click.option("--role", type=click.Choice(["introspect", "viewer", "admin"]),
              default="introspect", show_default=True,
              help="introspect: introspection and revocation; viewer: also every read of "
                   "/api/v1; admin: also its changes.")
@click.option("--json", "as_json", is_flag=True, help='Print {"api_key": ...} only.')
@domain_command
def create_api_key(org_slug: str, name: str, role: str, as_json: bool) -> None:
    """Create an org API key; it is printed once and never stored in plaintext."""
    from portal.core.api_keys import services as api_keys
    from portal.core.orgs import services as orgs

    session = get_session()
    org = orgs.get_org(session, org_slug)
    plaintext, key = api_keys.create_api_key(session, org=org, name=name, role=role,
                                             actor=CLI)
    session.commit()
    if as_json:
        click.echo(json.dumps({"api_key": plaintext, "name": key.name, "role": key.role.value}))
        return
    click.echo(f"api_key: {plaintext}")
    click.echo(f"(role {key.role.value}; the key is shown only now; store it safely)", err=True)


def _api_json(api: Any) -> dict[str, Any]:
    return {"id": api.public_id, "identifier": api.identifier, "name": api.name,
            "org": api.org.slug if api.org is not None else None,
            "scopes": api.scope_names, "default_ttl": api.default_ttl, "max_ttl": api.max_ttl}


@click.command("create-api")
@click.option("--org", "org_slug", help="Slug of the owning org.")
@click.option("--deployment", is_flag=True,
              help="Shared by every org (their tokens are told apart by oid).")
@click.option("--identifier", required=True,
              help="Absolute URI without fragment (at most 255): the tokens' aud.")
@click.option("--name", required=True)
@click.option("--description", default="")
@click.option("--scopes", default="", help="The API's scopes, space- or comma-separated.")
@click.option("--ttl", type=int, default=None,
              help="Default lifetime of its tokens in seconds (instead of each client's).")
@click.option("--max-ttl", type=int, default=None, help="No token for it lives longer.")
@click.option("--json", "as_json", is_flag=True, help="Print the API as JSON.")
@domain_command
def create_api(org_slug: str | None, deployment: bool, identifier: str, name: str,
               description: str, scopes: str, ttl: int | None, max_ttl: int | None,
               as_json: bool) -> None:
    """Register an API (resource server) of an org, or of the deployment (--deployment).

    A deployment API is visible to every org and can be granted to any org's
    clients; its resource servers must check each token's oid.
    """
    from portal.core.apis import services as apis
    from portal.core.orgs import services as orgs

    if bool(org_slug) == deployment:
        fail("give exactly one of --org SLUG and --deployment")
    session = get_session()
    org = orgs.get_org(session, org_slug) if org_slug else None
    api = apis.create_api(session, org=org, identifier=identifier, name=name,
                          description=description, scopes=[(s, "") for s in _csv(scopes)],
                          default_ttl=ttl, max_ttl=max_ttl, actor=CLI)
    session.commit()
    if as_json:
        click.echo(json.dumps(_api_json(api)))
    else:
        owner = f"org {org.slug}" if org is not None else "the deployment (every org)"
        click.echo(f"created API {api.identifier} ({api.public_id}) of {owner}")


@click.command("update-api")
@click.option("--api", "identifier", required=True, help="The API's identifier.")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--ttl", type=int, default=None, help="Default token lifetime in seconds.")
@click.option("--max-ttl", type=int, default=None, help="Maximum token lifetime in seconds.")
@click.option("--no-ttl", is_flag=True, help="Drop the default lifetime (clients' own apply).")
@click.option("--no-max-ttl", is_flag=True, help="Drop the maximum lifetime.")
@click.option("--add-scopes", default="", help="Scopes to add, space- or comma-separated.")
@click.option("--remove-scopes", default="",
              help="Scopes to remove (also from every client granted them).")
@click.option("--json", "as_json", is_flag=True, help="Print the API as JSON.")
@domain_command
def update_api(identifier: str, name: str | None, description: str | None, ttl: int | None,
               max_ttl: int | None, no_ttl: bool, no_max_ttl: bool, add_scopes: str,
               remove_scopes: str, as_json: bool) -> None:
    """Change any API as the operator (the only way to change a deployment API)."""
    from portal.core.apis import services as apis

    session = get_session()
    api = apis.get_api_by_identifier(session, org_id=None, identifier=identifier)
    unknown = [s for s in _csv(remove_scopes) if s not in api.scope_names]
    if unknown:
        fail(f"{identifier} has no scope {' '.join(unknown)}")
    apis.update_api(
        session, api, acting_org_id=None, actor=CLI,
        name=api.name if name is None else name,
        description=api.description if description is None else description,
        default_ttl=None if no_ttl else (api.default_ttl if ttl is None else ttl),
        max_ttl=None if no_max_ttl else (api.max_ttl if max_ttl is None else max_ttl))
    for scope in _csv(add_scopes):
        apis.add_scope(session, api, acting_org_id=None, name=scope, actor=CLI)
    lost = 0
    for scope in _csv(remove_scopes):
        found = next(s for s in api.scopes if s.name == scope)
        lost += len(apis.remove_scope(session, api, acting_org_id=None, scope_id=found.id,
                                      actor=CLI))
    session.commit()
    if as_json:
        click.echo(json.dumps(_api_json(api)))
    else:
        click.echo(f"updated API {api.identifier}: scopes {' '.join(api.scope_names) or '(none)'}"
                   + (f"; {lost} grant(s) lost a removed scope" if lost else ""))


@click.command("delete-api")
@click.option("--api", "identifier", required=True, help="The API's identifier.")
@domain_command
def delete_api(identifier: str) -> None:
    """Delete an API; refused while any client is granted it."""
    from portal.core.apis import services as apis

    session = get_session()
    api = apis.get_api_by_identifier(session, org_id=None, identifier=identifier)
    apis.delete_api(session, api, acting_org_id=None, actor=CLI)
    session.commit()
    click.echo(f"deleted API {identifier}")


@click.command("grant")
@click.option("--client", "client_id", required=True, help="The client's id (lkc_...).")
@click.option("--api", "identifier", required=True,
              help="Identifier of the org's API or of a deployment API.")
@click.option("--scopes", default="", help="Scopes of that API to grant (replacing earlier ones).")
@click.option("--default", "make_default", is_flag=True,
              help="Make it the API a token request without audience gets.")
@click.option("--json", "as_json", is_flag=True, help="Print the client's grants as JSON.")
@domain_command
def grant(client_id: str, identifier: str, scopes: str, make_default: bool,
          as_json: bool) -> None:
    """Grant a client some scopes of an API (its org's, or a deployment API)."""
    from portal.core.apis import services as apis
    from portal.core.clients import services as clients

    session = get_session()
    client = clients.find_client_for_auth(session, client_id)
    if client is None:
        fail(f"no client with id {client_id}")
    try:
        api = apis.get_api_by_identifier(session, org_id=client.org_id, identifier=identifier)
    except LatchkeyError:
        fail(f"no API {identifier} of org {client.org.slug} or of the deployment")
    apis.grant(session, client, api, scopes=_csv(scopes), make_default=make_default, actor=CLI)
    session.commit()
    granted, default = apis.grants_of(session, client)
    if as_json:
        click.echo(json.dumps({"client_id": client.public_id, "grants": granted,
                               "default": default}))
    else:
        click.echo(f"{client.public_id} may get {identifier} with scopes "
                   f"{' '.join(granted[api.identifier]) or '(none)'}"
                   + (" (its default API)" if default == api.identifier else ""))


@click.command("check")
@domain_command
def check() -> int:
    """Report what the operator should look at; exit status 1 when there is something.

    Deployment APIs granted to clients of several orgs (for instance an audience
    that several orgs' clients were allowed before APIs were registered): their
    resource servers must check each token's oid. API identifiers that are not
    absolute URIs (kept from free-text audiences).
    """
    from portal.core.apis import services as apis

    session = get_session()
    findings = [
        f"shared: deployment API {s.api.identifier} ({s.api.name}) is granted to clients "
        f"of {len(s.org_slugs)} orgs ({', '.join(s.org_slugs)}): its resource servers must "
        "check the token's oid"
        for s in apis.shared_apis(session)
    ] + [
        f"identifier: API {api.identifier!r} ({api.org.slug if api.org else 'deployment'}) "
        "is not an absolute URI"
        for api in apis.malformed_identifiers(session)
    ]
    for line in findings:
        click.echo(line)
    if not findings:
        click.echo("nothing to report")
    return 1 if findings else 0


def _load_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        fail(f"{option} is not valid JSON")


@click.command("rotate-signing-key")
@click.option("--org", "org_slug", help="Rotate this org only (default: every org).")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "EdDSA"]), default=None,
              help="Algorithm of the newly published next key (default: the org keeps its "
                   "algorithm).")
@click.option("--wait", is_flag=True,
              help="If a next key was published too recently to sign, wait until it may "
                   "(at most JWKS_MAX_AGE + KEY_CACHE_SECONDS), then rotate.")
@domain_command
def rotate_signing_key(org_slug: str | None, alg: str | None, wait: bool) -> None:
    """Activate the published next key, retire the active one and publish a new next key.

    A next key signs only once it has been published for longer than resource
    servers may cache the JWKS; until then the rotation is refused with the time
    it can happen (or, with --wait, waits for it).
    """
    import time

    from sqlalchemy import select

    from portal.core.errors import RotationTooSoon
    from portal.core.orgs import services as orgs
    from portal.core.orgs.models import Organization
    from portal.core.signing_keys import services as signing_keys

    session = get_session()
    targets = ([orgs.get_org(session, org_slug)] if org_slug
               else list(session.scalars(select(Organization).order_by(Organization.id))))
    refused: list[str] = []
    for org in targets:
        while True:
            try:
                key = signing_keys.rotate(session, org_id=org.id, alg=alg, actor=CLI)
            except RotationTooSoon as e:
                # Keep what is done (and a next key the refusal may have published),
                # and hold no transaction (on SQLite: the write lock) while waiting.
                session.commit()
                pause = (e.ready_at - utcnow()).total_seconds() + 1
                if wait and pause <= signing_keys.publication_delay().total_seconds() + 1:
                    click.echo(f"{org.slug}: waiting {max(pause, 0):.0f} s for the next key "
                               "to be published long enough", err=True)
                    time.sleep(max(pause, 0))
                    continue
                refused.append(f"{org.slug}: {e.message}")
            else:
                session.commit()
                click.echo(f"{org.slug}: now signing with {key.kid} ({key.alg})")
            break
    if refused:
        fail(" ".join(refused) + ("" if wait else " (or pass --wait)"))


@click.command("prune")
@click.option("--retention-days", type=click.IntRange(min=1), default=None,
              help="Usage history to keep in full (default: USAGE_RETENTION_DAYS).")
@domain_command
def prune(retention_days: int | None) -> None:
    """Delete expired token records, old usage events (kept as hourly counts) and dead keys."""
    from sqlalchemy import delete

    from portal.core.signing_keys import services as signing_keys
    from portal.core.tokens import services as tokens
    from portal.core.tokens.models import UsedAssertion
    from portal.core.usage import services as usage

    session = get_session()
    now = utcnow()
    days = retention_days or int(current_app.config["USAGE_RETENTION_DAYS"])
    # Keep revoked/expired token records for a day so "why was I refused" can be answered.
    expired = tokens.prune_expired(session, now=now, keep_for=timedelta(days=1))
    events = usage.prune_events(session, now=now, retention_days=days)
    keys = signing_keys.prune_retired(session, now=now)
    session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))
    session.commit()
    click.echo(f"pruned {expired} expired tokens, {events} usage events, {keys} retired keys")


@click.command("rotate-kek")
@domain_command
def rotate_kek() -> None:
    """Re-encrypt every private signing key with the first of KEY_ENCRYPTION_KEYS.

    Put a new key first in KEY_ENCRYPTION_KEYS (keeping the old one after it)
    on every instance, run this once, then remove the old key.
    """
    from portal.core.signing_keys.reencrypt import reencrypt_private_keys

    session = get_session()
    changed, unchanged = reencrypt_private_keys(session, actor=CLI)
    session.commit()
    click.echo(f"re-encrypted {changed} signing keys with the first key-encryption key "
               f"({unchanged} already were)")


#: ``granian`` (the default) serves with granian's Rust HTTP server; ``sync`` and
#: ``gthread`` with gunicorn's worker classes of those names, kept for comparison
#: (``make bench``, the peers benchmark).
WORKER_CLASSES = ("granian", "sync", "gthread")
#: Blocking threads per granian worker (see ``SERVE_THREADS``): two. With one, a slow
#: portal request (argon2 at sign-in, a large usage page) held every other request of
#: its worker behind it: tokens fell to a tenth of idle while one failed-sign-in loop or
#: one viewer ran (``make bench-portal-busy``, bench/README.md); with two they stay
#: within 20 % but for one failed-sign-in loop on PostgreSQL (x0.77: argon2 takes the
#: cores), at a small cost to an idle server's tokens.
DEFAULT_THREADS = {"granian": 2, "gthread": 4, "sync": 1}


def gunicorn_options(*, bind: str, workers: int, threads: int, worker_class: str) -> dict[str, Any]:
    """The gunicorn settings of ``latchkey serve --worker-class sync|gthread`` (the
    benchmark's floor app reuses them).

    ``sync`` workers serve one request at a time and close the connection after
    it; ``gthread`` workers keep connections alive and run ``threads`` requests
    at once. gunicorn silently turns ``sync`` with more than one thread into
    ``gthread``, so ``sync`` always gets one.
    """
    return {
        "bind": bind,
        "workers": workers,
        "threads": 1 if worker_class == "sync" else threads,
        "worker_class": worker_class,
        "accesslog": "-",
        # The access log must never carry secrets: no query strings with credentials.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(D)sus',
        "preload_app": False,
    }


#: The access log written by granian (``SERVE_ACCESS_LOG``): never a query string.
ACCESS_LOG_FORMAT = '%(addr)s "%(method)s %(path)s" %(status)d %(dt_ms).3fms'


def granian_options(*, host: str, port: int, workers: int, threads: int,
                    access_log: bool = True) -> dict[str, Any]:
    """The granian settings of ``latchkey serve`` (the benchmark's floor app reuses them).

    Each worker process builds its own app (``portal:create_app``), so no database
    connection or pool crosses a fork; requests run on ``threads`` Python threads
    per worker while granian's Rust side parses HTTP and keeps connections alive.
    """
    return {
        "target": "portal:create_app",
        "factory": True,
        "address": host,
        "port": port,
        "workers": workers,
        "blocking_threads": threads,
        "websockets": False,
        "log_access": access_log,
        "log_access_format": ACCESS_LOG_FORMAT,
    }


@click.command("serve")
@click.option("--host", default=None, help="Default: SERVE_HOST (127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: 5000.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes. Default: SERVE_WORKERS (2).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads per worker. Default: SERVE_THREADS (granian 2, gthread 4).")
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default=None,
              help="granian (default: SERVE_WORKER_CLASS), or gunicorn's sync or gthread.")
@with_appcontext
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None,
          worker_class: str | None) -> None:
    """Serve the portal and the OAuth endpoints (granian; gunicorn on request)."""
    from portal.core.db import get_engine
    from portal.core.tokens.store import token_store

    cfg = current_app.config
    kind = worker_class or str(cfg.get("SERVE_WORKER_CLASS") or "granian")
    host = host or str(cfg["SERVE_HOST"])
    port = port or int(cfg["SERVE_PORT"])
    workers = workers or int(cfg["SERVE_WORKERS"])
    threads = threads or int(cfg.get("SERVE_THREADS") or DEFAULT_THREADS[kind])
    # Token records that a process killed before it wrote them left in its journal
    # (logged when there are some; should the database be unreachable now, the workers
    # write them later).
    store = token_store()
    try:
        store.replay_journal()
    except (OSError, store.connections.database_errors) as e:
        click.echo(f"the token-record journal could not be written now ({e}); the "
                   "workers will try again", err=True)
    get_engine().dispose()  # nothing of this process's app crosses into a worker
    click.echo(f"serving on http://{host}:{port} (issuer {cfg['ISSUER']}; {kind}, "
               f"{workers} workers x {threads} threads)", err=True)
    from portal.ops.logs import server_log_config
    from portal.ops.metrics import multiprocess_metrics

    # Every worker's metrics add up in one directory, emptied at start (portal.ops).
    with multiprocess_metrics(cfg):
        if kind == "granian":
            from granian.constants import Interfaces
            from granian.server import Server as Granian

            Granian(interface=Interfaces.WSGI, log_dictconfig=server_log_config(cfg),
                    **granian_options(host=host, port=port, workers=workers, threads=threads,
                                      access_log=bool(cfg.get("SERVE_ACCESS_LOG")))).serve()
        else:
            _serve_gunicorn(gunicorn_options(bind=f"{host}:{port}", workers=workers,
                                             threads=threads, worker_class=kind))


def _serve_gunicorn(options: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Called in each worker after the fork: every worker builds its own
            # app, so no database connection or pool crosses a fork.
            from portal import create_app

            return create_app()

    Server().run()


@click.command("seed-demo")
@domain_command
def seed_demo() -> None:
    """On first run, create a demo org, admin and client and print how to use them."""
    import secrets as pysecrets

    from sqlalchemy import select

    from portal.core.apis import services as apis
    from portal.core.clients import services as clients
    from portal.core.orgs import services as orgs
    from portal.core.orgs.models import Organization
    from portal.core.users import services as users

    session = get_session()
    issuer = str(current_app.config["ISSUER"])
    if session.scalar(select(Organization.id).limit(1)) is not None:
        click.echo(
            f"Latchkey: demo data already exists; the portal is at {issuer}/\n"
            "  (credentials were printed on first run; `make reset` starts over)"
        )
        return
    org = orgs.create_org(session, name="Demo Org", slug="demo", actor=CLI)
    password = pysecrets.token_urlsafe(12)
    users.create_user(session, email="admin@demo.test", password=password, name="Demo Admin",
                      org=org, role="owner", actor=CLI)
    api = apis.create_api(
        session, org=org, identifier="https://api.demo.test", name="Demo orders API",
        description="Created by make run", actor=CLI,
        scopes=[("orders:read", "Read orders"), ("orders:write", "Create and change orders")],
    )
    secret, client = clients.create_client(
        session, org=org, name="Demo service", description="Created by make run",
        grants=[(api, ["orders:read", "orders:write"])], actor=CLI,
    )
    session.commit()
    click.echo(
        "\n".join([
            "",
            "Latchkey demo seeded (shown once; nothing here is stored in plaintext):",
            f"  portal:         {issuer}/",
            "  sign in as:     admin@demo.test",
            f"  password:       {password}",
            f"  client_id:      {client.public_id}",
            f"  client_secret:  {secret}",
            "",
            "Get a token:",
            f"  curl -s -u '{client.public_id}:{secret}' \\",
            "       -d grant_type=client_credentials \\",
            f"       {issuer}/oauth/token",
            "",
        ])
    )


COMMANDS = [db_group, create_org, create_user, create_client, create_api_key, create_api,
            update_api, delete_api, grant, check, rotate_signing_key, prune, serve, seed_demo,
            rotate_kek]


def register(app: Flask) -> None:
    """Add the commands to ``app.cli`` so ``flask`` and ``latchkey`` both offer them."""
    for command in COMMANDS:
        app.cli.add_command(command)
