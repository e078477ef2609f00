"""Latchkey: a self-hosted machine-to-machine OAuth 2.0 server with a developer portal."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import config, extensions
from portal.core import db
from portal.core.signing_keys import services as signing_keys

log = logging.getLogger("latchkey")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the portal and OAuth app; ``test_config`` overrides every other source."""
    app = Flask(
        __name__,
        instance_path=str(config.INSTANCE_PATH),
        template_folder=str(config.ROOT / "templates"),
        static_folder=str(config.ROOT / "static"),
    )
    app.config.from_object(config.Defaults)
    app.config.from_pyfile("config.py", silent=True)  # instance/config.py
    app.config.from_prefixed_env("LATCHKEY")  # LATCHKEY_ISSUER -> ISSUER
    if test_config is not None:
        app.config.update(test_config)
    app.config["ISSUER"] = str(app.config["ISSUER"]).rstrip("/")
    app.config["SESSION_COOKIE_SECURE"] = app.config["ISSUER"].startswith("https://")

    db.init_app(app)
    try:
        _fill_generated_secrets(app)
        _check_key_encryption_keys(app)
    finally:
        # The checks' connection is not kept: an app holds no connection until a
        # request needs one (nor leaks one when it is dropped, or fails to start).
        db.engine_of(app).dispose()
    signing_keys.init_app(app)

    from api import oauth_bp, v1_bp, wellknown_bp
    from api.oauth import init_app as init_protocol
    from api.v1 import init_app as init_management_api
    from api.wellknown import init_app as init_wellknown
    from portal import cli as latchkey_cli
    from portal.views import bp as portal_bp
    from portal.views import init_app as init_views

    # The token endpoint and introspection are answered by a WSGI door in front of
    # Flask (PROTOCOL_DOOR), with the same protocol as the Flask views.
    protocol = init_protocol(app, security_headers=list(extensions.SECURITY_HEADERS.items()))
    extensions.init_app(app, protocol.store.connections)
    proxies = int(app.config["PROXY_FIX"])
    if proxies:
        # Behind a TLS-terminating proxy: trust its X-Forwarded-* headers, so
        # URLs are https (Authlib refuses plain-http OAuth off loopback). Inside
        # it, the fast path sees the client's address as Flask does.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )
    init_wellknown(app)  # JWKS and metadata skip everything below once cached
    extensions.init_hsts(app)  # outermost: HSTS on every response when the issuer is https
    extensions.csrf.exempt(oauth_bp)
    extensions.csrf.exempt(wellknown_bp)
    app.register_blueprint(oauth_bp)
    app.register_blueprint(wellknown_bp)
    extensions.csrf.exempt(v1_bp)  # Bearer API keys only, never the session cookie
    init_management_api(app)
    app.register_blueprint(portal_bp)
    init_views(app)
    latchkey_cli.register(app)
    _register_error_handlers(app)
    from portal import ops
    from portal.ops import metrics

    protocol.observer = metrics  # the token, introspection and revocation counters
    ops.init_app(app)  # last: its middleware is the outermost WSGI layer
    return app


def _fill_generated_secrets(app: Flask) -> None:
    """Use secrets from the instance folder for whatever no other source set.

    They are generated only while the database holds no data: with data, a
    missing file stops the startup (:class:`config.StartupError`) instead of
    replacing the secrets that the data was protected with.
    """
    missing = [k for k in config.GENERATED_SECRETS if not app.config.get(k)]
    if not missing:
        return
    path = Path(app.instance_path) / config.GENERATED_SECRETS_FILE
    values = config.read_instance_secrets(path)
    if values is None:
        if _database_holds_data(app):
            raise config.StartupError(
                f"{path} is missing, but the database already holds organisations, users, "
                "clients or keys protected by the secrets it held: restore it from a backup, "
                "or set LATCHKEY_SECRET_KEY, LATCHKEY_CLIENT_SECRET_HMAC_KEY and "
                "LATCHKEY_KEY_ENCRYPTION_KEYS to the values it held (new secrets would "
                "invalidate every client secret, API key, portal session and signing key, so "
                "none were generated)")
        values = config.create_instance_secrets(Path(app.instance_path))
        log.warning("generated new secrets into %s (the database holds no data yet); back it "
                    "up with the database", path)
    for key in missing:
        app.config[key] = values[key]


#: Tables whose rows depend on the generated secrets (hashed, encrypted or signed with them).
PROTECTED_TABLES = ("organizations", "users", "clients", "client_secrets", "api_keys",
                    "signing_keys")


def _read_only_connection(app: Flask) -> Any:
    return db.engine_of(app).execution_options(**{db.READ_ONLY: True}).connect()


def _database_holds_data(app: Flask) -> bool:
    """Whether any table protected by the secrets has a row (no tables yet: False)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _read_only_connection(app) as conn:
            present = set(inspect(conn).get_table_names())
            for table in PROTECTED_TABLES:
                if table in present and conn.execute(
                        text(f"SELECT 1 FROM {table} LIMIT 1")).first():  # noqa: S608
                    return True
    except SQLAlchemyError as e:
        raise config.StartupError(
            f"{Path(app.instance_path) / config.GENERATED_SECRETS_FILE} is missing and the "
            f"database cannot be read to check that it holds no data "
            f"({type(getattr(e, 'orig', None) or e).__name__}): start the database, or "
            "restore the file") from e
    return False


def _check_key_encryption_keys(app: Flask) -> None:
    """Stop the startup when the key-encryption keys are malformed or cannot decrypt the
    org keys that sign (or will sign) tokens, instead of failing on the first token.

    A database that cannot be reached is left to the requests that need it.
    """
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from portal.core import crypto
    from portal.core.orgs.models import Organization
    from portal.core.signing_keys.models import KeyState, SigningKey

    keys = tuple(config.fernet_keys(app.config["KEY_ENCRYPTION_KEYS"]))
    try:
        with _read_only_connection(app) as conn:
            rows = conn.execute(
                select(SigningKey.kid, SigningKey.state, SigningKey.private_key_ciphertext,
                       Organization.slug)
                .join(Organization, Organization.id == SigningKey.org_id)
                .where(SigningKey.state.in_([KeyState.ACTIVE, KeyState.NEXT]))
                .order_by(SigningKey.id)
            ).all()
    except SQLAlchemyError as e:  # no schema yet (before `db upgrade`), or no database
        log.debug("signing keys not checked at startup: %s", e)
        return
    for row in rows:
        try:
            crypto.decrypt_private_key(keys, row.private_key_ciphertext)
        except crypto.KeyDecryptionFailed as e:
            raise config.StartupError(
                f"KEY_ENCRYPTION_KEYS cannot decrypt the {row.state} signing key {row.kid} of "
                f"org {row.slug}: set it to the key-encryption keys the stored keys were "
                "encrypted with (a new key goes first, the old ones stay after it)") from e


def _wants_json() -> bool:
    path = request.path
    return path.startswith(("/oauth/", "/.well-known/", "/api/"))


def _register_error_handlers(app: Flask) -> None:
    from api import v1 as management_api

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        code = e.code or 500
        if management_api.wants_problem(request.path):
            return management_api.http_problem(e)
        if _wants_json():
            oauth_codes = {413: "invalid_request", 405: "invalid_request", 404: "not_found"}
            body = {
                "error": oauth_codes.get(code, "invalid_request" if code < 500 else "server_error"),
                "error_description": _ascii(e.description or e.name),
            }
            response = jsonify(body)
            response.status_code = code
            response.headers["Cache-Control"] = "no-store"
            if code == 405 and e.get_response().headers.get("Allow"):
                response.headers["Allow"] = e.get_response().headers["Allow"]
            return response
        return render_template("errors/error.html", error=e), code

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception) -> ResponseReturnValue:
        request_id = request.environ.get("latchkey.request_id") or uuid.uuid4().hex[:12]
        session = g.get("db_session")
        if session is not None:
            session.rollback()  # teardown closes it; the error page may still read the user
        log.exception("unhandled error (request id %s)", request_id)
        if management_api.wants_problem(request.path):
            return management_api.problem(500, code="server_error",
                                          detail=f"Internal error; request id {request_id}.")
        if _wants_json():
            response = jsonify(
                {"error": "server_error",
                 "error_description": f"Internal error; request id {request_id}."}
            )
            response.status_code = 500
            response.headers["Cache-Control"] = "no-store"
            return response
        try:
            return render_template("errors/500.html", request_id=request_id), 500
        except Exception:  # the page itself failed (say, the database is down)
            log.exception("error page failed (request id %s)", request_id)
            text = f"Internal error; request id {request_id}.\n"
            return text, 500, {"Content-Type": "text/plain; charset=utf-8"}


def _ascii(text: str) -> str:
    """RFC 6749 error descriptions allow printable ASCII except quote and backslash."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')
