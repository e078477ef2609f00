"""Introspection's ceiling: the least work an introspection can do, as a ratio of the floor.

RFC 7662 and PRODUCT.md ask each introspection for a caller found by its
secret, a signature verified and a usage event written. This serves a bare
WSGI endpoint (no Flask, like Latchkey's fast path) that does only that: one
indexed ``SELECT`` of a client by id and secret hash, one ``INSERT`` into a
table with ``usage_events``' indexes in autocommit mode, and the verification
of one token signed at start with a key of ``--alg``. No body is parsed, no
claim checked, nothing else read. It runs under the same gunicorn settings as
``latchkey serve`` beside the floor (``bench/floor_app.py``'s Flask endpoint),
on SQLite and on PostgreSQL, and drives the two in turns with wrk:

    .venv/bin/python bench/ceilings.py --rounds 3 --seconds 5

No implementation of introspection that writes its usage event per call can
beat this ratio on the same machine and database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py: wrk, servers, databases)
from floor_app import ALGS, create_floor_app, new_key, signer  # noqa: E402
from jwt.utils import base64url_decode  # noqa: E402

CEILING_PATH = "/ceiling/introspect"
CLIENTS = 1000
SCHEMA = (
    "CREATE TABLE clients (id INTEGER PRIMARY KEY, client_id VARCHAR(64) UNIQUE, "
    "secret_hash BYTEA UNIQUE, scopes TEXT)",
    "CREATE TABLE events (id {serial} PRIMARY KEY, org_id INTEGER, client_id INTEGER, "
    "client_ref VARCHAR(64), kind VARCHAR(32), reason VARCHAR(300), jti VARCHAR(64), "
    "source_ip VARCHAR(45), occurred_at {time})",
    "CREATE INDEX ix_events_org_time ON events (org_id, occurred_at)",
    "CREATE INDEX ix_events_client_time ON events (client_id, occurred_at)",
    "CREATE INDEX ix_events_time ON events (occurred_at)",
)
SELECT = "SELECT id, scopes FROM clients WHERE client_id = {p} AND secret_hash = {p}"
INSERT = ("INSERT INTO events (org_id, client_id, client_ref, kind, reason, jti, source_ip, "
          "occurred_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")


def secret_hash(n: int) -> bytes:
    return hashlib.sha256(f"secret-{n}".encode()).digest()


def create_schema(url: str) -> None:
    rows = [(n, f"client-{n}", secret_hash(n), "read write") for n in range(CLIENTS)]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1])
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            conn.execute(statement.format(serial="INTEGER", time="VARCHAR(32)")
                         .replace("BYTEA", "BLOB"))
        conn.executemany("INSERT INTO clients VALUES (?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url) as pg:
        for statement in SCHEMA:
            pg.execute(statement.format(serial="BIGSERIAL", time="TIMESTAMPTZ"))
        pg.cursor().executemany("INSERT INTO clients VALUES (%s, %s, %s, %s)", rows)


def connector(url: str) -> tuple[Callable[[], Any], str]:
    """A function making one autocommit connection, and the driver's placeholder."""
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1]

        def connect_sqlite() -> Any:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            for pragma in ("busy_timeout=30000", "synchronous=NORMAL", "foreign_keys=ON"):
                conn.execute(f"PRAGMA {pragma}")
            return conn

        return connect_sqlite, "?"
    import psycopg

    return lambda: psycopg.connect(url, autocommit=True), "%s"


def ceiling_app(url: str, alg: str) -> Callable[..., Iterable[bytes]]:
    """The floor app with the introspection ceiling in front of it."""
    from jwt.algorithms import get_default_algorithms

    key = new_key(alg)
    token = json.loads(signer(alg, key)())["access_token"]
    head, body, signature = token.split(".")
    signing_input = f"{head}.{body}".encode()
    raw_signature = base64url_decode(signature)
    algorithm = get_default_algorithms()[alg]
    public = key.public_key()
    connect, p = connector(url)
    select, insert = SELECT.format(p=p), INSERT.format(p=p)
    local = threading.local()
    flask_app = create_floor_app().wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != CEILING_PATH:
            return flask_app(environ, start_response)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
        active = bool(algorithm.verify(signing_input, public, raw_signature))
        row = conn.execute(select, ("client-7", secret_hash(7))).fetchone()
        conn.execute(insert, (1, row[0], "client-7", "token_introspected",
                              "active" if active else "inactive", "j" * 24,
                              environ.get("REMOTE_ADDR", ""), datetime.now(UTC).isoformat()))
        answer = json.dumps({"active": active, "scope": row[1]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    return wsgi


def serve(args: argparse.Namespace) -> None:
    from gunicorn.app.base import BaseApplication

    from portal.cli import gunicorn_options

    options = gunicorn_options(bind=f"{run.HOST}:{args.port}", workers=args.workers,
                               threads=args.threads, worker_class=args.worker_class)
    app = ceiling_app(args.database, args.alg)

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Server().run()


CEILING = run.Endpoint("ceiling: introspect", "get.lua", {"BENCH_PATH": CEILING_PATH})


def measure(args: argparse.Namespace, backend: str, tmp: Path) -> list[float]:
    """The ceiling's ratio to the floor run just before it, once per round."""
    ratios = []
    with run.database(backend, tmp, args, f"ceiling-{backend}") as url:
        create_schema(url)
        port = run.free_port()
        cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--database", url,
               "--workers", str(args.workers), "--threads", str(args.threads),
               "--worker-class", args.worker_class, "--alg", args.alg]
        env = dict(os.environ, PYTHONPATH=str(run.ROOT))
        with run.running(cmd, env, port, run.FLOOR_PATH, args.workers,
                         tmp / f"ceiling-{backend}.log"):
            run.wrk(port, CEILING, args.concurrency, 1, args.wrk_threads, tmp)  # warm-up
            for _ in range(args.rounds):
                floor, ceiling = (
                    run.wrk(port, endpoint, args.concurrency, args.seconds, args.wrk_threads,
                            tmp)
                    for endpoint in (run.FLOOR, CEILING)
                )
                for summary in (floor, ceiling):
                    if summary["non_2xx"]:
                        raise run.BenchError(f"{summary['non_2xx']} non-2xx responses")
                ratios.append(run.rate(ceiling) / run.rate(floor))
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--database", default="", help=argparse.SUPPRESS)
    parser.add_argument("--backends", type=run.choice_list(run.BACKENDS),
                        default=list(run.BACKENDS))
    parser.add_argument("--rounds", type=int, default=3, help="floor/ceiling pairs (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run (default 5)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", choices=run.WORKER_CLASSES, default="sync")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--alg", choices=ALGS, default="RS256")
    parser.add_argument("--postgres-url", default=run.DEFAULT_POSTGRES)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    print(f"introspection ceiling: {args.workers} {args.worker_class} workers, c"
          f"{args.concurrency}, {args.alg}, {args.rounds} x {args.seconds} s per backend",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="latchkey-ceiling-") as tmp:
        try:
            for backend in args.backends:
                ratios = measure(args, backend, Path(tmp))
                print(f"{backend:<10} ceiling: introspect  x floor "
                      + "  ".join(f"{r:.2f}" for r in ratios)
                      + f"  (mean {sum(ratios) / len(ratios):.2f})")
        except run.BenchError as e:
            print(f"ceilings: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
