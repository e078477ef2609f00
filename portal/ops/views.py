"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from datetime import timedelta

from flask import Blueprint, Response, current_app, json, request
from prometheus_client.core import Metric
from sqlalchemy.exc import SQLAlchemyError

from portal.core.types import utcnow
from portal.ops import metrics, queries
from portal.ops.probes import probe

bp = Blueprint("ops", __name__)
log = logging.getLogger("latchkey.ops")

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
EXPIRING_WITHIN = timedelta(days=7)


def _json(status: int, body: dict[str, object]) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get(HEALTH_PATH)
def healthz() -> Response:
    """Liveness: the process answers. No database, no Redis."""
    return _json(200, {"status": "ok"})


@bp.get(READY_PATH)
def readyz() -> Response:
    """Readiness: database, schema at the migration head, a usable signing key, Redis."""
    result = probe(current_app._get_current_object()).check()  # type: ignore[attr-defined]
    if result.ready:
        return _json(200, {"status": "ready", "checks": result.checks})
    return _json(503, {"status": "not ready", "failing": result.failing,
                       "checks": result.checks})


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` is a loopback address (IPv4-mapped IPv6 too)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def _metrics_refusal() -> Response | None:
    """401/403 unless the caller may read the metrics; None when it may."""
    expected = current_app.config.get("METRICS_TOKEN")
    if expected:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if presented and hmac.compare_digest(presented.encode(), str(expected).encode()):
            return None
        response = _json(401, {"error": "unauthorized",
                               "error_description": "Send Authorization: Bearer <METRICS_TOKEN>."})
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # request.remote_addr is the client's address behind a trusted proxy (PROXY_FIX),
    # so a proxy on this machine does not make every caller loopback.
    if is_loopback(request.remote_addr):
        return None
    return _json(403, {"error": "forbidden", "error_description":
                       "Metrics answer loopback only; set LATCHKEY_METRICS_TOKEN to scrape "
                       "from elsewhere."})


@bp.get(METRICS_PATH, endpoint="metrics")
def metrics_page() -> Response:
    """Prometheus text format: every worker's counts added up, and gauges read now."""
    refused = _metrics_refusal()
    if refused is not None:
        return refused
    body, content_type = metrics.exposition(_database_gauges)
    response = Response(body, status=200, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def _database_gauges() -> Iterator[Metric]:
    """Signing-key ages and expiring secrets, read at scrape time.

    Per-org series are limited to ``METRICS_ORG_SERIES`` orgs: the oldest
    keys, the orgs with most expiring secrets. The unlabelled gauges cover all.
    """
    now = utcnow()
    limit = max(0, int(current_app.config["METRICS_ORG_SERIES"]))
    try:
        with queries.reading() as session:
            ages = queries.signing_key_ages(session, now=now, limit=limit)
            expiring = queries.secrets_expiring(session, now=now, within=EXPIRING_WITHIN,
                                                limit=limit)
    except SQLAlchemyError as e:
        log.warning("metrics: database gauges unavailable (%s)", type(e).__name__)
        yield metrics.gauge("latchkey_database_up",
                            "1 when the scrape could read the database.", 0)
        return
    yield metrics.gauge("latchkey_database_up", "1 when the scrape could read the database.", 1)
    yield metrics.gauge("latchkey_orgs", "Organisations.", ages.orgs)
    yield metrics.gauge("latchkey_orgs_without_signing_key",
                        "Organisations with no active signing key (cannot issue tokens).",
                        ages.orgs_without_key)
    if ages.oldest_age is not None:
        yield metrics.gauge("latchkey_signing_key_max_age_seconds",
                            "Age of the oldest active signing key of any org.",
                            ages.oldest_age)
    yield metrics.labelled_gauge(
        "latchkey_org_signing_key_age_seconds",
        "Age of an org's active signing key (the METRICS_ORG_SERIES oldest).",
        "org", ages.oldest)
    yield metrics.gauge("latchkey_client_secrets_expiring_soon",
                        "Client secrets, not revoked, that expire within 7 days.",
                        expiring.total)
    yield metrics.labelled_gauge(
        "latchkey_org_client_secrets_expiring_soon",
        "An org's client secrets expiring within 7 days (the METRICS_ORG_SERIES orgs "
        "with most).", "org", expiring.by_org)
