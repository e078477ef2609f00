"""Running Latchkey in production: probes, Prometheus metrics, logs with request ids.

``init_app`` is called last in ``create_app``: its middleware must be the
outermost layer of ``app.wsgi_app``, around the fast paths that answer
before Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import g, request
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from portal.ops import logs, metrics, probes
from portal.ops.middleware import ENV_ORG, ENV_ROUTE, RequestMiddleware

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import ExceptionContext

#: Settings of this package and their defaults (``LATCHKEY_<NAME>`` sets each).
DEFAULTS: dict[str, Any] = {
    "LOG_FORMAT": "text",  # or "json": one JSON object per line
    "LOG_LEVEL": "INFO",
    # One line per request (LATCHKEY_ACCESS_LOG=1). Off by default, as gunicorn's and
    # granian's are: about 60-70 µs of CPU a request, a fifth of an ES256 token's.
    "ACCESS_LOG": False,
    "METRICS_TOKEN": None,  # Bearer token for /metrics; unset: loopback callers only
    "METRICS_ORG_SERIES": 50,  # per-org gauge series at most (the rest: unlabelled totals)
    "METRICS_DIR": None,  # multi-process metrics dir when PROMETHEUS_MULTIPROC_DIR is unset
}


def init_app(app: Flask) -> None:
    """Logging, metrics, probes, and the outermost request middleware."""
    from portal.extensions import limiter
    from portal.ops.views import bp

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    logs.configure(app.config)
    metrics.install()
    probes.init_app(app)
    app.register_blueprint(bp)
    limiter.exempt(bp)  # probes and scrapes are never rate limited
    app.teardown_request(_note_route)
    _count_database_errors(app)
    app.wsgi_app = RequestMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, proxies=int(app.config["PROXY_FIX"]),
        access=_flag(app.config["ACCESS_LOG"]),
    )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _note_route(_exc: BaseException | None) -> None:
    """Tell the middleware the endpoint that answered, and the portal user's org."""
    environ = request.environ
    environ[ENV_ROUTE] = request.endpoint
    if ENV_ORG not in environ:
        # Only when the signed-in user's org is already loaded: never a query here.
        membership = getattr(g.get("_login_user"), "membership", None)
        org = membership.__dict__.get("org") if membership is not None else None
        if org is not None:
            environ[ENV_ORG] = org.public_id


def _count_database_errors(app: Flask) -> None:
    from portal.core.db import EXTENSION_KEY

    engine = app.extensions[EXTENSION_KEY]["engine"]

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if context.is_pre_ping or isinstance(context.sqlalchemy_exception, IntegrityError):
            return  # a stale pooled connection replaced; a constraint the app handles
        metrics.db_error()
