"""Token throughput while the portal is busy, against an idle portal (``make bench-portal-busy``).

The reproduction of the security review's H3, as a check: on each backend it
seeds an org with a viewer, a client and ``--events`` usage events spread over
30 days, starts ``latchkey serve`` on a free port of 127.0.0.1 and measures
token issuance as a resource server's client sees it: paced sequential token
requests (``--pace-ms`` apart) on one keep-alive connection for ``--seconds``,
giving tokens/s and the p50 and max latency. It does so five times in a row:

1. idle;
2. while a signed-in viewer reloads ``/usage?period=30d`` in a loop;
3. idle;
4. while ``--signin-loops`` loops post failed sign-ins (unknown email, as an
   attacker would; the sign-in rate limits are raised for the run, as if the
   attempts came from many addresses);
5. idle.

A busy phase passes when its tokens/s is at least ``--threshold`` (0.8) of the
mean of the idle phases before and after it. On SQLite, a separate process
also tries ``BEGIN IMMEDIATE`` without waiting every 10 ms in each phase and
counts how often the write lock was held (the review's direct proof). Prints a
table and the checks, writes ``bench/results/portal-busy-<UTC timestamp>.json``
and exits 1 when a check fails. Standard library plus Latchkey's own packages
(for seeding the usage events).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BIN = Path(sys.prefix) / "bin"
LATCHKEY = BIN / "latchkey"
HOST = "127.0.0.1"
READY_PATH = "/.well-known/openid-configuration"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")
FORM = "application/x-www-form-urlencoded"
AUDIENCE = "https://api.busy.test"
VIEWER_EMAIL = "viewer@busy.test"
USAGE_PATH = "/usage?period=30d"
CSRF_INPUT = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
LOCK_PROBE_INTERVAL = 0.01
LOCKED = "database is locked"
UNLIMITED = "1000000/minute"


class BenchError(Exception):
    """Setup or server failure: the message is printed and the run exits 1."""


@dataclass
class Phase:
    """One measured phase: token requests, and what loaded the portal meanwhile."""

    backend: str
    name: str
    seconds: float
    tokens: int
    token_errors: int
    tokens_per_s: float
    p50_ms: float
    max_ms: float
    load_requests: int = 0  # portal requests answered by the load loops
    load_per_s: float = 0.0
    load_errors: int = 0  # answers other than the expected ones (429 counted apart)
    load_limited: int = 0  # 429 answers
    load_p50_ms: float | None = None
    lock_tries: int | None = None  # SQLite: BEGIN IMMEDIATE probes
    lock_held: int | None = None  # ... that found the write lock taken
    idle_reference: float | None = None  # mean tokens/s of the idle phases around it
    ratio: float | None = None


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Loop:
    """What one load loop did (sent back from its process)."""

    requests: int = 0
    errors: int = 0
    limited: int = 0
    latencies: list[float] = field(default_factory=list)


# -- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each of the five phases (default 10)")
    parser.add_argument("--pace-ms", type=float, default=10.0,
                        help="pause after each token response (default 10)")
    parser.add_argument("--events", type=int, default=70_000,
                        help="usage events seeded over the last 30 days (default 70000)")
    parser.add_argument("--signin-loops", type=int, default=1,
                        help="concurrent failed sign-in loops (default 1)")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="least busy/idle ratio of tokens/s that passes (default 0.8)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite,postgresql (default both)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help="where to CREATE DATABASE / DROP DATABASE the bench database")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends: choose from {', '.join(BACKENDS)}")
    if args.seconds <= 0 or args.pace_ms < 0 or args.events < 0 or args.signin_loops < 1:
        parser.error("--seconds must be positive, --pace-ms and --events not negative, "
                     "--signin-loops at least 1")
    return args


# -- database and server ---------------------------------------------------------------


@contextmanager
def database(backend: str, tmp: Path, postgres_url: str) -> Iterator[str]:
    """A fresh, empty database; PostgreSQL's is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp}/portal-busy.db"
        return
    import psycopg

    name = f"latchkey_busy_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True)
    except psycopg.Error as e:
        raise BenchError(f"cannot connect to PostgreSQL at {postgres_url}: {e}") from e
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(tmp: Path, port: int, database_url: str, password: str) -> dict[str, str]:
    """Every ``latchkey`` process's settings: nothing read from or written to instance/."""
    env = dict(os.environ)
    env.update({
        "LATCHKEY_DATABASE_URL": database_url,
        "LATCHKEY_ISSUER": f"http://{HOST}:{port}",
        "LATCHKEY_SECRET_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_CLIENT_SECRET_HMAC_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "LATCHKEY_NEW_USER_PASSWORD": password,
        # The failed sign-ins stand for many source addresses; the token
        # requests all succeed, so their failure limit never applies.
        "LATCHKEY_SIGNIN_RATE_LIMIT_PER_ACCOUNT": UNLIMITED,
        "LATCHKEY_SIGNIN_RATE_LIMIT_PER_ADDRESS": UNLIMITED,
        "LATCHKEY_TOKEN_FAILURE_RATE_LIMIT": UNLIMITED,
        "TMPDIR": str(tmp),
    })
    return env


def latchkey(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(LATCHKEY), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"`latchkey {args[0]}` failed (exit {proc.returncode}):\n"
                         f"{proc.stderr.strip()}")
    return proc.stdout


def seed(env: dict[str, str], database_url: str, events: int) -> tuple[str, str]:
    """An org with a viewer and a client, and ``events`` usage events; the client's credentials."""
    latchkey(env, "db", "upgrade")
    latchkey(env, "create-org", "--name", "Busy", "--slug", "busy")
    latchkey(env, "create-user", "--email", VIEWER_EMAIL, "--org", "busy", "--role", "viewer")
    created = json.loads(latchkey(env, "create-client", "--org", "busy", "--name", "busy",
                                  "--scopes", "read write", "--audience", AUDIENCE, "--json"))
    seed_usage(database_url, created["client_id"], events)
    return created["client_id"], created["client_secret"]


def seed_usage(database_url: str, client_id: str, count: int) -> None:
    """``count`` usage events of the client over the last 30 days (mostly issued tokens)."""
    from sqlalchemy import insert, select

    from portal.core.clients.models import Client
    from portal.core.db import make_engine
    from portal.core.usage.models import UsageEvent, UsageKind

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            row = conn.execute(select(Client.id, Client.org_id)
                               .where(Client.public_id == client_id)).one()
            now = datetime.now(UTC)
            span = timedelta(days=30).total_seconds()
            batch: list[dict[str, Any]] = []
            for i in range(count):
                failed = i % 12 == 0
                kind = UsageKind.TOKEN_FAILED if failed else (
                    UsageKind.TOKEN_INTROSPECTED if i % 12 == 1 else UsageKind.TOKEN_ISSUED)
                batch.append({
                    "org_id": row.org_id, "client_id": row.id, "client_ref": client_id,
                    "kind": kind, "reason": "invalid_client: bad secret" if failed else "",
                    "jti": None if failed else secrets.token_urlsafe(16),
                    "source_ip": f"203.0.113.{i % 250}",
                    "occurred_at": now - timedelta(seconds=span * i / max(count, 1)),
                })
                if len(batch) == 5000:
                    conn.execute(insert(UsageEvent), batch)
                    batch = []
            if batch:
                conn.execute(insert(UsageEvent), batch)
    finally:
        engine.dispose()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextmanager
def serving(env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    """``latchkey serve`` (its default workers) on ``port`` until the block ends."""
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [str(LATCHKEY), "serve", "--host", HOST, "--port", str(port)], env=env, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(server, port)
            yield
            if server.poll() is not None:
                raise BenchError(f"the server exited during the run ({server.returncode})")
        except BenchError as e:
            raise BenchError(f"{e}\n--- end of {log_path.name} ---\n{log_tail(log_path)}") from e
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


def wait_ready(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"the server exited with status {server.returncode}")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", READY_PATH)
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise BenchError(f"the server did not answer GET {READY_PATH} within {READY_TIMEOUT:.0f} s")


# -- clients ---------------------------------------------------------------------------


class Browser:
    """One keep-alive connection with a cookie jar: a person's browser tab."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, str]:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = FORM
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed the keep-alive connection: once more
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                if attempt == 2:
                    raise
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data.decode(errors="replace")

    def csrf_token(self, path: str) -> str:
        status, page = self.request("GET", path)
        match = CSRF_INPUT.search(page)
        if status != 200 or match is None:
            raise BenchError(f"GET {path} answered {status} without a CSRF token")
        return match.group(1)


def viewer_loop(port: int, password: str, stop: Any, out: Any) -> None:
    """A signed-in viewer reloading the usage page for 30 days until ``stop`` is set."""
    browser = Browser(port)
    token = browser.csrf_token("/signin")
    status, _ = browser.request("POST", "/signin", {"csrf_token": token, "email": VIEWER_EMAIL,
                                                    "password": password})
    loop = Loop()
    if status != 302:
        loop.errors = 1
        out.put(loop)
        return
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = browser.request("GET", USAGE_PATH)
        loop.latencies.append(time.perf_counter() - started)
        loop.requests += 1
        if status != 200:
            loop.errors += 1
    out.put(loop)


def signin_loop(port: int, _password: str, stop: Any, out: Any) -> None:
    """Failed sign-ins (an unknown email) one after another until ``stop`` is set."""
    browser = Browser(port)
    token = browser.csrf_token("/signin")
    loop = Loop()
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = browser.request("POST", "/signin", {
            "csrf_token": token, "email": "nobody@busy.test", "password": "wrong-password"})
        loop.latencies.append(time.perf_counter() - started)
        loop.requests += 1
        if status == 429:
            loop.limited += 1
        elif status not in (200, 400):
            loop.errors += 1
    out.put(loop)


def lock_probe(path: str, stop: Any, out: Any) -> None:
    """Try to take SQLite's write lock without waiting, every 10 ms; count refusals."""
    tries = held = 0
    while not stop.is_set():
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            held += 1
        finally:
            conn.close()
        tries += 1
        time.sleep(LOCK_PROBE_INTERVAL)
    out.put((tries, held))


def basic_auth(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def token_run(port: int, authorization: str, seconds: float, pace: float
              ) -> tuple[int, int, list[float], float]:
    """Sequential token requests on one keep-alive connection, ``pace`` s apart."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    headers = {"Authorization": authorization, "Content-Type": FORM}
    tokens = errors = 0
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                conn.request("POST", "/oauth/token", body="grant_type=client_credentials",
                             headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                ok = False
            latencies.append(time.perf_counter() - t)
            if ok:
                tokens += 1
            else:
                errors += 1
            if pace:
                time.sleep(pace)
    finally:
        conn.close()
    return tokens, errors, latencies, time.perf_counter() - started


# -- phases ----------------------------------------------------------------------------


def measure(backend: str, name: str, port: int, authorization: str, args: argparse.Namespace,
            db_path: str | None, loads: list[Callable[..., None]], password: str) -> Phase:
    """One phase: the token run while ``loads`` (each in its own process) run."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=load, args=(port, password, stop, out), daemon=True)
             for load in loads]
    probe_out = ctx.Queue()
    if db_path is not None:
        procs.append(ctx.Process(target=lock_probe, args=(db_path, stop, probe_out), daemon=True))
    for proc in procs:
        proc.start()
    if loads:
        time.sleep(1.0)  # let the loops sign in and reach their steady state
    try:
        tokens, errors, latencies, elapsed = token_run(port, authorization, args.seconds,
                                                       args.pace_ms / 1000)
    finally:
        stop.set()
    loops = [out.get(timeout=120) for _ in loads]
    lock = probe_out.get(timeout=30) if db_path is not None else None
    for proc in procs:
        proc.join(timeout=30)
    load_latencies = [x for loop in loops for x in loop.latencies]
    answered = sum(loop.requests for loop in loops)
    return Phase(
        backend=backend, name=name, seconds=round(elapsed, 2), tokens=tokens,
        token_errors=errors, tokens_per_s=round(tokens / elapsed, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
        max_ms=round(max(latencies) * 1000, 1) if latencies else 0.0,
        load_requests=answered, load_per_s=round(answered / elapsed, 1),
        load_errors=sum(loop.errors for loop in loops),
        load_limited=sum(loop.limited for loop in loops),
        load_p50_ms=(round(statistics.median(load_latencies) * 1000, 1)
                     if load_latencies else None),
        lock_tries=lock[0] if lock else None, lock_held=lock[1] if lock else None,
    )


def bench_backend(backend: str, args: argparse.Namespace, tmp: Path) -> list[Phase]:
    port = free_port()
    password = secrets.token_urlsafe(16)
    with database(backend, tmp, args.postgres_url) as url:
        env = server_env(tmp, port, url, password)
        progress(f"{backend}: seeding {args.events} usage events")
        client_id, secret = seed(env, url, args.events)
        authorization = basic_auth(client_id, secret)
        db_path = url.split("sqlite:///", 1)[1] if backend == "sqlite" else None
        log_path = tmp / f"serve-{backend}.log"
        with serving(env, port, log_path):
            token_run(port, authorization, 2.0, 0.0)  # warm every worker's caches
            check_pages(port, password)
            plan: list[tuple[str, list[Callable[..., None]]]] = [
                ("idle", []),
                ("viewer reloading /usage", [viewer_loop]),
                ("idle", []),
                (f"{args.signin_loops} failed sign-in loop(s)",
                 [signin_loop] * args.signin_loops),
                ("idle", []),
            ]
            phases = []
            for name, loads in plan:
                progress(f"{backend}: {name} ({args.seconds:g} s)")
                phases.append(measure(backend, name, port, authorization, args, db_path, loads,
                                      password))
        locked = log_tail(log_path, 100_000).count(LOCKED)
        if locked:
            raise BenchError(f"{locked} '{LOCKED}' in the {backend} server log:\n"
                             f"{log_tail(log_path)}")
    for i, phase in enumerate(phases):
        if i % 2 == 1:
            reference = (phases[i - 1].tokens_per_s + phases[i + 1].tokens_per_s) / 2
            phase.idle_reference = round(reference, 1)
            phase.ratio = round(phase.tokens_per_s / reference, 2) if reference else None
    return phases


def check_pages(port: int, password: str) -> None:
    """The viewer can sign in and read the usage page (else the loads would measure errors)."""
    browser = Browser(port)
    token = browser.csrf_token("/signin")
    status, _ = browser.request("POST", "/signin", {"csrf_token": token, "email": VIEWER_EMAIL,
                                                    "password": password})
    if status != 302:
        raise BenchError(f"the viewer's sign-in answered {status}, not 302")
    status, _ = browser.request("GET", USAGE_PATH)
    if status != 200:
        raise BenchError(f"GET {USAGE_PATH} answered {status} to the viewer, not 200")


# -- report ----------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def format_table(phases: list[Phase]) -> str:
    head = ("backend", "phase", "tokens", "tokens/s", "x idle", "p50 ms", "max ms", "errors",
            "portal req/s", "portal p50 ms", "write lock held")
    rows = [head]
    for p in phases:
        lock = (f"{p.lock_held}/{p.lock_tries}" if p.lock_tries is not None else "-")
        rows.append((
            p.backend, p.name, str(p.tokens), f"{p.tokens_per_s:.1f}",
            f"{p.ratio:.2f}" if p.ratio is not None else "",
            f"{p.p50_ms:.1f}", f"{p.max_ms:.1f}", str(p.token_errors),
            f"{p.load_per_s:.1f}" if p.load_requests else "-",
            f"{p.load_p50_ms:.0f}" if p.load_p50_ms is not None else "-",
            lock,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def checks_of(phases: list[Phase], threshold: float) -> list[Check]:
    checks = []
    for p in phases:
        if p.ratio is not None:
            checks.append(Check(
                f"{p.backend}: tokens/s during '{p.name}' within {1 - threshold:.0%} of idle",
                p.ratio >= threshold and p.token_errors == 0,
                f"{p.tokens_per_s:.1f} vs {p.idle_reference:.1f} tokens/s idle (x{p.ratio:.2f}), "
                f"p50 {p.p50_ms:.1f} ms, max {p.max_ms:.1f} ms, {p.token_errors} errors; "
                f"the portal answered {p.load_requests} requests ({p.load_errors} unexpected, "
                f"{p.load_limited} rate-limited)"))
        if p.load_errors:
            checks.append(Check(f"{p.backend}: '{p.name}' load answered as expected", False,
                                f"{p.load_errors} unexpected answers"))
    return checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if not LATCHKEY.exists():
        print(f"portal_busy: {LATCHKEY} not found; run with the virtualenv's python "
              "(make bench-portal-busy)", file=sys.stderr)
        return 2
    when = datetime.now(UTC)
    print(f"portal_busy: {args.seconds:g} s per phase, token requests {args.pace_ms:g} ms apart "
          f"on one keep-alive connection, {args.events} usage events, "
          f"{os.cpu_count()} CPUs shared with the load", file=sys.stderr)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="latchkey-busy-") as tmp:
        try:
            for backend in args.backends:
                phases += bench_backend(backend, args, Path(tmp))
        except BenchError as e:
            print(f"portal_busy: {e}", file=sys.stderr)
            return 1
    checks = checks_of(phases, args.threshold)
    print(format_table(phases))
    print("\nchecks:")
    for check in checks:
        print(f"  [{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"portal-busy-{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({
        "timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_commit": git_commit(),
        "settings": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "phases": [asdict(p) for p in phases],
        "checks": [asdict(c) for c in checks],
    }, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0 if all(c.passed for c in checks) else 1


def git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("portal_busy: interrupted", file=sys.stderr)
        sys.exit(130)
