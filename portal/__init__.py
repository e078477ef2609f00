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
    _fill_generated_secrets(app)
    app.config["ISSUER"] = str(app.config["ISSUER"]).rstrip("/")
    app.config["SESSION_COOKIE_SECURE"] = app.config["ISSUER"].startswith("https://")

    db.init_app(app)
    signing_keys.init_app(app)

    from api import oauth_bp, wellknown_bp
    from api.oauth import init_app as init_protocol
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
    init_wellknown(app)  # outermost: JWKS and metadata skip everything below once cached
    extensions.csrf.exempt(oauth_bp)
    extensions.csrf.exempt(wellknown_bp)
    app.register_blueprint(oauth_bp)
    app.register_blueprint(wellknown_bp)
    app.register_blueprint(portal_bp)
    init_views(app)
    latchkey_cli.register(app)
    _register_error_handlers(app)
    return app


def _fill_generated_secrets(app: Flask) -> None:
    """Use secrets from the instance folder for whatever no other source set."""
    missing = [k for k in config.GENERATED_SECRETS if not app.config.get(k)]
    if missing:
        generated = config.load_or_create_instance_secrets(Path(app.instance_path))
        for key in missing:
            app.config[key] = generated[key]


def _wants_json() -> bool:
    path = request.path
    return path.startswith(("/oauth/", "/.well-known/", "/api/"))


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        code = e.code or 500
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
        request_id = uuid.uuid4().hex[:12]
        session = g.get("db_session")
        if session is not None:
            session.rollback()  # teardown closes it; the error page may still read the user
        log.exception("unhandled error (request id %s)", request_id)
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
