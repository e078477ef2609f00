"""Prometheus metrics: what the protocol counts, request latency, and scrape-time gauges.

Counting on the hot paths (request latency, tokens issued and refused,
introspections) adds to a plain dictionary of the process under one lock; a
thread of the process adds those counts to the metric values at most
:data:`PUBLISH_SECONDS` later (and at exit, and before this process answers a
scrape). The values are in-memory in a single process, or in a per-process
``mmap`` file in multi-process mode, where writing them on every request cost
about 6 % of a served token's CPU (bench/README.md, "Ninth session"); so a scrape
answered by one worker sees another worker's counts within a second.

Multi-process mode is on when ``PROMETHEUS_MULTIPROC_DIR`` names a directory:
every worker writes its own files there and a scrape of any worker adds up all
of them (:class:`prometheus_client.multiprocess.MultiProcessCollector`). The server's
parent process calls :func:`prepare_multiprocess_dir` before it starts workers.

Label values come from fixed sets (``auth_method``, ``error``, ``result``,
``status``) or from route names, which are Flask endpoint names or the fixed
names of the WSGI fast paths (:data:`portal.ops.middleware.FIXED_ROUTES`), so
no label ever takes a value from the request. Per-org gauges are computed at
scrape time from the database and limited to ``METRICS_ORG_SERIES`` orgs (the
ones an alert cares about first); an unlabelled gauge beside each covers every
org.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import math
import multiprocessing.util
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus-client writes in multi-process mode: kind, then pid.
_METRICS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")

#: RFC 6749 §5.2 (and RFC 8707's ``invalid_target``; 429 is ``too_many_requests``).
TOKEN_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "invalid_target", "too_many_requests",
    "server_error",
})
#: Token-endpoint client authentication methods; ``none`` when there was none.
AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "private_key_jwt",
                          "none"})
OTHER = "other"

#: Seconds. An authorization server's requests take about a millisecond to a few
#: hundred; the long tail (a locked database) shows in the top buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: Seconds a hot-path count may wait in its process (see the module's docstring).
PUBLISH_SECONDS = 1.0
_BOUNDS = (*LATENCY_BUCKETS, math.inf)  # the histogram's buckets, as prometheus-client has them
log = logging.getLogger("latchkey.ops")


class _Pending:
    """Hot-path counts of this process not yet added to its metric values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}  # a counter's child -> how many
        self._latency: dict[Any, list[float]] = {}  # a histogram's child -> sum, buckets
        self._thread: threading.Thread | None = None

    def count(self, child: Any) -> None:
        with self._lock:
            self._counts[child] = self._counts.get(child, 0) + 1
            if self._thread is None:
                self._start()

    def observe(self, child: Any, seconds: float) -> None:
        slot = bisect.bisect_left(_BOUNDS, seconds) + 1  # the first bound >= seconds
        with self._lock:
            row = self._latency.get(child)
            if row is None:
                row = self._latency[child] = [0.0] * (len(_BOUNDS) + 1)
            row[0] += seconds
            row[slot] += 1
            if self._thread is None:
                self._start()

    def publish(self) -> None:
        """Add what was counted to the metric values."""
        with self._lock:
            counts, self._counts = self._counts, {}
            latency, self._latency = self._latency, {}
        for child, number in counts.items():
            child.inc(number)
        for child, row in latency.items():
            # What Histogram.observe does for each observation, for all of them at once.
            child._sum.inc(row[0])
            for bucket, observed in zip(child._buckets, row[1:], strict=True):
                if observed:
                    bucket.inc(observed)

    def publish_logged(self) -> None:
        """:meth:`publish`; should the values not be writable, logged (what it held is
        lost), never raised: counting never fails a request, a scrape or an exit."""
        try:
            self.publish()
        except Exception:  # a vanished directory, say
            log.exception("could not write the metrics")

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="latchkey-metrics",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(PUBLISH_SECONDS)
            self.publish_logged()


@dataclass
class _Metrics:
    """This process's metric objects, with every child for a fixed label set made up front."""

    pid: int
    directory: str | None
    registry: CollectorRegistry  # single-process mode: the metrics; else empty
    issued: dict[str, Any]
    refused: dict[tuple[str, str], Any]
    introspected: dict[bool, Any]
    revoked: Any
    db_errors: Any
    latency: Histogram
    pending: _Pending = field(default_factory=_Pending)
    _latency_children: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def latency_child(self, route: str, status: str) -> Any:
        child = self._latency_children.get((route, status))
        if child is None:
            with self._lock:
                child = self.latency.labels(route=route, status=status)
                self._latency_children[(route, status)] = child
        return child


_metrics: _Metrics | None = None
_build_lock = threading.Lock()


def _build() -> _Metrics:
    directory = os.environ.get(ENV_DIR) or None
    # The value class (in-memory or mmap files) is chosen when prometheus_client
    # is first imported. A parent that imported it before PROMETHEUS_MULTIPROC_DIR
    # was set and then forked its workers would leave them counting in memory,
    # invisible to each other: choose again now, before any metric is made.
    values.ValueClass = values.get_value_class()
    disable_created_metrics()  # no *_created series: they would double what a scrape sends
    registry = CollectorRegistry(auto_describe=True)
    # In multi-process mode the metrics live in files and a scrape reads those;
    # registering them as well would report this worker's values twice.
    target = None if directory else registry
    issued = Counter("latchkey_tokens_issued", "Access tokens issued at the token endpoint.",
                     ["auth_method"], registry=target)
    refused = Counter("latchkey_token_requests_refused",
                      "Token requests refused, by RFC 6749 error code and auth method.",
                      ["error", "auth_method"], registry=target)
    introspected = Counter("latchkey_introspections", "Introspection answers, by result.",
                           ["result"], registry=target)
    revoked = Counter("latchkey_revocations", "Tokens revoked (RFC 7009 and the portal/API).",
                      registry=target)
    db_errors = Counter("latchkey_database_errors",
                        "Database errors (connection, timeout, lock, SQL; not constraint "
                        "violations, which the app expects and handles).", registry=target)
    latency = Histogram("latchkey_http_request_duration_seconds",
                        "Time to answer a request, by route name and status class.",
                        ["route", "status"], buckets=LATENCY_BUCKETS, registry=target)
    return _Metrics(
        pid=os.getpid(),
        directory=directory,
        registry=registry,
        issued={m: issued.labels(auth_method=m) for m in AUTH_METHODS | {OTHER}},
        refused={(e, m): refused.labels(error=e, auth_method=m)
                 for e in TOKEN_ERRORS | {OTHER} for m in AUTH_METHODS | {OTHER}},
        introspected={True: introspected.labels(result="active"),
                      False: introspected.labels(result="inactive")},
        revoked=revoked,
        db_errors=db_errors,
        latency=latency,
    )


def install() -> _Metrics:
    """Make this process's metrics, once per process and multi-process directory.

    Called by ``create_app`` in every worker; a worker forked from a parent that
    already had metrics gets its own (the parent's are in memory, or in files
    named after the parent's pid).
    """
    global _metrics
    directory = os.environ.get(ENV_DIR) or None
    with _build_lock:
        if _metrics is None or _metrics.pid != os.getpid() or _metrics.directory != directory:
            if _metrics is not None and _metrics.pid == os.getpid():
                _metrics.pending.publish_logged()  # into the values they were counted for
            _metrics = _build()
            # Worker processes started by multiprocessing leave through os._exit, after
            # running its finalizers (not atexit's).
            atexit.register(_metrics.pending.publish_logged)
            multiprocessing.util.Finalize(None, _metrics.pending.publish_logged,
                                          exitpriority=10)
        return _metrics


def _current() -> _Metrics:
    return _metrics if _metrics is not None else install()


# -- what the protocol counts (called by the token, introspection and revocation code) ---


def token_issued(auth_method: str) -> None:
    """One access token issued at the token endpoint, by ``auth_method``."""
    m = _current()
    m.pending.count(m.issued.get(auth_method) or m.issued[OTHER])


def token_refused(error: str, auth_method: str | None) -> None:
    """One token request refused with RFC 6749 ``error`` (``invalid_client``, ...).

    ``auth_method`` is the client authentication the request used, None when
    it used none (or could not be told). Values outside the known sets count
    as ``other``, so a label never takes a value from the request.
    """
    m = _current()
    key = (error if error in TOKEN_ERRORS else OTHER,
           OTHER if auth_method is not None and auth_method not in AUTH_METHODS
           else auth_method or "none")
    m.pending.count(m.refused[key])


def introspected(active: bool) -> None:
    """One introspection answered, ``active`` or not."""
    m = _current()
    m.pending.count(m.introspected[bool(active)])


def revoked() -> None:
    """One token revoked."""
    _current().revoked.inc()


def db_error() -> None:
    """One database error (connection, timeout, lock, SQL; not a constraint violation)."""
    _current().db_errors.inc()


def observe_request(route: str, status: int, seconds: float) -> None:
    """One request answered: its route name, HTTP status and duration."""
    klass = STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "5xx"
    m = _current()
    m.pending.observe(m.latency_child(route, klass), seconds)


# -- multi-process mode ----------------------------------------------------------------


def prepare_multiprocess_dir(config: Mapping[str, Any]) -> Path:
    """Set up multi-process mode for a server about to start its workers; returns the dir.

    Call it in the server's parent process before any worker starts. It uses
    ``PROMETHEUS_MULTIPROC_DIR`` when the environment sets it, else
    ``METRICS_DIR`` from ``config``, else a new private temporary directory;
    deletes the files a previous run left there (counts start at zero with the
    server, and files of dead pids would be added forever); and sets
    ``PROMETHEUS_MULTIPROC_DIR``, which the workers inherit. Two servers on one
    machine must not share a directory.
    """
    chosen = os.environ.get(ENV_DIR) or config.get("METRICS_DIR")
    if chosen:
        path = Path(str(chosen))
        path.mkdir(parents=True, exist_ok=True)
        files = list(path.glob("*.db"))
        foreign = [f.name for f in files if not _METRICS_FILE.fullmatch(f.name)]
        if foreign:
            # A scrape reads every *.db file there; never delete what is not ours.
            raise ValueError(f"{path} must be a directory for metrics only; it holds "
                             f"{', '.join(sorted(foreign))}")
        for stale in files:
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="latchkey-metrics-"))
    os.environ[ENV_DIR] = str(path)
    install()
    return path


def remove_multiprocess_dir(path: Path) -> None:
    """Delete a directory :func:`prepare_multiprocess_dir` made (when the server stops)."""
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def multiprocess_metrics(config: Mapping[str, Any]) -> Iterator[Path]:
    """:func:`prepare_multiprocess_dir` for the server's lifetime; a directory it made
    itself (neither ``PROMETHEUS_MULTIPROC_DIR`` nor ``METRICS_DIR`` set) is deleted after.

    ``with multiprocess_metrics(cfg): server.serve()`` in the server's parent process.
    """
    own = not (os.environ.get(ENV_DIR) or config.get("METRICS_DIR"))
    path = prepare_multiprocess_dir(config)
    try:
        yield path
    finally:
        if own:
            remove_multiprocess_dir(path)


# -- the scrape ------------------------------------------------------------------------


class _CallbackCollector:
    """A collector whose metrics a function computes at scrape time."""

    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time only; nothing to check up front


def exposition(extra: Callable[[], Iterator[Metric]] | None = None) -> tuple[bytes, str]:
    """Every metric in Prometheus text format, and its content type.

    ``extra`` yields the gauges computed at scrape time (from the database).
    """
    m = _current()
    m.pending.publish_logged()  # this process's own counts, at once
    registry = CollectorRegistry(auto_describe=False)  # one per scrape: nothing shared
    if m.directory:
        MultiProcessCollector(registry, path=m.directory)
    else:
        registry.register(_CallbackCollector(m.registry.collect))  # type: ignore[arg-type]
    if extra is not None:
        registry.register(_CallbackCollector(extra))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """An unlabelled gauge computed at scrape time."""
    return GaugeMetricFamily(name, documentation, value=value)


def labelled_gauge(name: str, documentation: str, label: str,
                   series: Iterable[tuple[str, float]]) -> GaugeMetricFamily:
    """A gauge computed at scrape time, one series per ``(label value, value)``."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for label_value, number in series:
        family.add_metric([label_value], number)
    return family
