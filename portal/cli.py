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

from portal.core.db import get_session
from portal.core.errors import LatchkeyError
from portal.core.types import utcnow

if TYPE_CHECKING:
    from flask import Flask

ACTOR = "cli"
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
    org = orgs.create_org(session, name=name, slug=slug, signing_alg=alg, actor=ACTOR)
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
                             role=role, actor=ACTOR)
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
    """Create a client; its secret is printed once and never stored in plaintext."""
    from portal.core.clients import services as clients
    from portal.core.orgs import services as orgs
    from portal.core.users import services as users

    session = get_session()
    org = orgs.get_org(session, org_slug)
    user = users.get_user(session, user_email) if user_email else None
    jwks = _load_json(jwks_file.read(), "--jwks") if jwks_file else None
    claims = _load_json(claims_json, "--claims") if claims_json is not None else None
    client, secret = clients.create_client(
        session, org=org, name=name, description=description, kind=kind,
        scopes=_csv(scopes), audiences=list(audiences), ttl=ttl,
        auth_methods=list(auth_methods) or None, custom_claims=claims, jwks=jwks, user=user,
        actor=ACTOR,
    )
    session.commit()
    if as_json:
        click.echo(json.dumps({"client_id": client.client_id, "client_secret": secret}))
        return
    click.echo(f"client_id:     {client.client_id}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("(the secret is shown only now; store it safely)", err=True)


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

    from portal.core.actor import CLI
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


WORKER_CLASSES = ("gthread", "sync")


def gunicorn_options(*, bind: str, workers: int, threads: int, worker_class: str) -> dict[str, Any]:
    """The gunicorn settings of ``latchkey serve`` (the benchmark's floor app reuses them).

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


@click.command("serve")
@click.option("--host", default=None, help="Default: SERVE_HOST (127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: 5000.")
@click.option("--workers", type=click.IntRange(min=1), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads per gthread worker (sync workers have one).")
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default=None,
              help="gunicorn worker class. Default: SERVE_WORKER_CLASS (gthread).")
@with_appcontext
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None,
          worker_class: str | None) -> None:
    """Serve the portal and the OAuth endpoints with gunicorn."""
    from gunicorn.app.base import BaseApplication

    cfg = current_app.config
    options = gunicorn_options(
        bind=f"{host or cfg['SERVE_HOST']}:{port or cfg['SERVE_PORT']}",
        workers=workers or int(cfg["SERVE_WORKERS"]),
        threads=threads or int(cfg["SERVE_THREADS"]),
        worker_class=worker_class or str(cfg.get("SERVE_WORKER_CLASS", "gthread")),
    )

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Called in each worker after the fork: every worker builds its own
            # app, so no database connection or pool crosses a fork.
            from portal import create_app

            return create_app()

    click.echo(f"serving on http://{options['bind']} (issuer {cfg['ISSUER']})", err=True)
    Server().run()


@click.command("seed-demo")
@domain_command
def seed_demo() -> None:
    """On first run, create a demo org, admin and client and print how to use them."""
    import secrets as pysecrets

    from sqlalchemy import select

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
    org = orgs.create_org(session, name="Demo Org", slug="demo", actor=ACTOR)
    password = pysecrets.token_urlsafe(12)
    users.create_user(session, email="admin@demo.test", password=password, name="Demo Admin",
                      org=org, role="owner", actor=ACTOR)
    client, secret = clients.create_client(
        session, org=org, name="Demo service", description="Created by make run",
        scopes=["orders:read", "orders:write"], audiences=["https://api.demo.test"],
        actor=ACTOR,
    )
    session.commit()
    click.echo(
        "\n".join([
            "",
            "Latchkey demo seeded (shown once; nothing here is stored in plaintext):",
            f"  portal:         {issuer}/",
            "  sign in as:     admin@demo.test",
            f"  password:       {password}",
            f"  client_id:      {client.client_id}",
            f"  client_secret:  {secret}",
            "",
            "Get a token:",
            f"  curl -s -u '{client.client_id}:{secret}' \\",
            "       -d grant_type=client_credentials \\",
            f"       {issuer}/oauth/token",
            "",
        ])
    )


COMMANDS = [db_group, create_org, create_user, create_client, rotate_signing_key, prune, serve,
            seed_demo]


def register(app: Flask) -> None:
    """Add the commands to ``app.cli`` so ``flask`` and ``latchkey`` both offer them."""
    for command in COMMANDS:
        app.cli.add_command(command)
