"""Benchmark Latchkey's OAuth endpoints against a real ``latchkey serve`` (gunicorn).

Sets up a throwaway database and client, starts the server on a free port of
127.0.0.1, drives each endpoint at each concurrency from a pool of threads
(one keep-alive connection per thread), prints a table and writes the same
figures as JSON to ``bench/results/``. See ``bench/README.md``.

Standard library only, plus ``cryptography`` (installed with Latchkey).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote_plus, urlencode

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
LATCHKEY = Path(sys.prefix) / "bin" / "latchkey"
HOST = "127.0.0.1"
READY_PATH = "/.well-known/openid-configuration"
READY_TIMEOUT = 30.0  # seconds for the server to answer after it is started
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
REQUEST_TIMEOUT = 30.0
AUDIENCE = "https://api.bench.test"
LOG_TAIL_LINES = 40


class BenchError(Exception):
    """Setup or server failure: the message is printed and the run exits non-zero."""


@dataclass(frozen=True)
class Target:
    """One HTTP request to repeat."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    endpoint: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    statuses: dict[str, int]  # "0" counts connection errors and timeouts


# -- command line ----------------------------------------------------------------------


def concurrency_list(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {value}") from e
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="duration of each run (default 5)")
    parser.add_argument("--concurrency", type=concurrency_list, default=[1, 16],
                        help="comma-separated client thread counts (default 1,16)")
    parser.add_argument("--max-requests", type=int, default=20000,
                        help="stop a run after this many requests (default 20000)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unrecorded seconds of load before each endpoint (default 1)")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1),
                        help="gunicorn workers (default 2 x CPU count)")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per gunicorn worker (default 4)")
    parser.add_argument("--database-url", default=None,
                        help="e.g. postgresql://user@127.0.0.1/latchkey_bench (default: a "
                             "temporary SQLite file); the database is migrated and left filled")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.max_requests < 1:
        parser.error("--seconds and --max-requests must be positive, --warmup not negative")
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return args


# -- setup -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def bench_env(tmp: Path, port: int, database_url: str | None) -> dict[str, str]:
    """Settings for every ``latchkey`` process: nothing is read from or written to instance/."""
    env = dict(os.environ)
    env.update({
        "LATCHKEY_DATABASE_URL": database_url or f"sqlite:///{tmp}/bench.db",
        "LATCHKEY_ISSUER": f"http://{HOST}:{port}",
        "LATCHKEY_SECRET_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_CLIENT_SECRET_HMAC_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        # Successful requests are never counted; this only keeps a mistake from
        # turning into a wall of 429s that would look like throughput.
        "LATCHKEY_TOKEN_FAILURE_RATE_LIMIT": "1000000/minute",
    })
    return env


def latchkey(env: dict[str, str], *args: str) -> str:
    """Run a ``latchkey`` command and return its stdout."""
    proc = subprocess.run([str(LATCHKEY), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"`latchkey {args[0]}` failed (exit {proc.returncode}):\n"
                         f"{proc.stderr.strip()}")
    return proc.stdout


def create_client(env: dict[str, str], slug: str) -> tuple[str, str]:
    """Migrate, create an org and a client; return the client's id and secret."""
    latchkey(env, "db", "upgrade")
    latchkey(env, "create-org", "--name", "Bench", "--slug", slug)
    out = latchkey(env, "create-client", "--org", slug, "--name", "bench", "--scopes",
                   "read write", "--audience", AUDIENCE, "--json")
    created = json.loads(out)
    return created["client_id"], created["client_secret"]


# -- server ----------------------------------------------------------------------------


def start_server(env: dict[str, str], port: int, workers: int, threads: int,
                 log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(LATCHKEY), "serve", "--host", HOST, "--port", str(port),
         "--workers", str(workers), "--threads", str(threads)],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )


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


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"


# -- targets ---------------------------------------------------------------------------


def basic_auth(client_id: str, secret: str) -> str:
    """client_secret_basic: each part form-encoded first (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


FORM = "application/x-www-form-urlencoded"


def fetch_token(port: int, authorization: str) -> str:
    """One token for the introspection runs; also checks that both endpoints work."""
    status, body = request_once(port, "POST", "/oauth/token", b"grant_type=client_credentials",
                                {"Authorization": authorization, "Content-Type": FORM})
    if status != 200:
        raise BenchError(f"POST /oauth/token answered {status}: {body[:300]!r}")
    token: str = json.loads(body)["access_token"]
    status, body = request_once(port, "POST", "/oauth/introspect",
                                urlencode({"token": token}).encode(),
                                {"Authorization": authorization, "Content-Type": FORM})
    if status != 200 or not json.loads(body).get("active"):
        raise BenchError(f"POST /oauth/introspect answered {status}: {body[:300]!r}")
    return token


def request_once(port: int, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def make_targets(client_id: str, secret: str, token: str) -> list[Target]:
    basic = basic_auth(client_id, secret)
    json_body = json.dumps({"grant_type": "client_credentials", "client_id": client_id,
                            "client_secret": secret}).encode()
    return [
        Target("token (basic, form)", "POST", "/oauth/token", b"grant_type=client_credentials",
               {"Authorization": basic, "Content-Type": FORM}),
        Target("token (json body)", "POST", "/oauth/token", json_body,
               {"Content-Type": "application/json"}),
        Target("introspect (basic)", "POST", "/oauth/introspect",
               urlencode({"token": token}).encode(),
               {"Authorization": basic, "Content-Type": FORM}),
        Target("jwks", "GET", "/.well-known/jwks.json"),
        Target("metadata", "GET", "/.well-known/oauth-authorization-server"),
    ]


# -- load ------------------------------------------------------------------------------


def drive(port: int, target: Target, concurrency: int, seconds: float,
          max_requests: int) -> tuple[list[float], Counter[int], float]:
    """Repeat ``target`` from ``concurrency`` threads until time or the request budget runs out.

    Returns every latency (seconds), the count of each status (0: connection
    error) and the wall time from start until the last request finished.
    """
    budget = threading.Semaphore(max_requests)

    def worker() -> tuple[list[float], Counter[int]]:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        try:
            while time.perf_counter() < deadline and budget.acquire(blocking=False):
                started = time.perf_counter()
                try:
                    conn.request(target.method, target.path, body=target.body,
                                 headers=target.headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    status = 0
                    conn.close()  # the next request reconnects
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            conn.close()
        return latencies, statuses

    started = time.perf_counter()
    deadline = started + seconds
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        parts = [f.result() for f in [pool.submit(worker) for _ in range(concurrency)]]
    elapsed = time.perf_counter() - started
    latencies = [latency for part, _ in parts for latency in part]
    statuses: Counter[int] = Counter()
    for _, counts in parts:
        statuses.update(counts)
    return latencies, statuses, elapsed


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1] * 1000, 2)


def measure(port: int, target: Target, concurrency: int, seconds: float,
            max_requests: int) -> Result:
    latencies, statuses, elapsed = drive(port, target, concurrency, seconds, max_requests)
    latencies.sort()
    return Result(
        endpoint=target.name,
        concurrency=concurrency,
        requests=len(latencies),
        seconds=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        non_2xx=sum(n for status, n in statuses.items() if not 200 <= status < 300),
        statuses={str(status): n for status, n in sorted(statuses.items())},
    )


def run_all(port: int, targets: list[Target], args: argparse.Namespace) -> list[Result]:
    results = []
    for target in targets:
        if args.warmup > 0:
            drive(port, target, max(args.concurrency), args.warmup, args.max_requests)
        for concurrency in args.concurrency:
            print(f"  {target.name:<20} concurrency {concurrency:>3} ...", file=sys.stderr,
                  flush=True)
            results.append(measure(port, target, concurrency, args.seconds, args.max_requests))
    return results


# -- report ----------------------------------------------------------------------------


COLUMNS = ("endpoint", "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "non-2xx")


def format_table(results: list[Result]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [COLUMNS] + [
        (r.endpoint, str(r.concurrency), str(r.requests), f"{r.rps:.1f}", ms(r.p50_ms),
         ms(r.p99_ms), str(r.non_2xx))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                       strict=True)]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() or None


def write_results(results: list[Result], args: argparse.Namespace, when: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    database = "sqlite"
    if args.database_url:  # only the backend: the URL may carry a password
        database = args.database_url.split(":", 1)[0].split("+", 1)[0]
    document: dict[str, Any] = {
        "timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_commit": git_commit(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "server": {"workers": args.workers, "threads": args.threads, "database": database},
        "load": {"seconds": args.seconds, "warmup_seconds": args.warmup,
                 "max_requests": args.max_requests, "concurrency": args.concurrency,
                 "generator": "python http.client, one keep-alive connection per thread"},
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if not LATCHKEY.exists():
        print(f"bench: {LATCHKEY} not found; run with the virtualenv's python "
              "(make bench)", file=sys.stderr)
        return 2
    when = datetime.now(UTC)
    port = free_port()
    # A fresh SQLite file starts empty; a given database may already have a "bench" org.
    slug = f"bench-{secrets.token_hex(3)}" if args.database_url else "bench"
    print(f"bench: {args.workers} workers x {args.threads} threads on {HOST}:{port}, "
          f"{args.seconds:g} s per run", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="latchkey-bench-") as tmp:
        tmp_path = Path(tmp)
        env = bench_env(tmp_path, port, args.database_url)
        log_path = tmp_path / "server.log"
        try:
            client_id, secret = create_client(env, slug)
            with log_path.open("wb") as log:
                server = start_server(env, port, args.workers, args.threads, log)
                try:
                    wait_ready(server, port)
                    token = fetch_token(port, basic_auth(client_id, secret))
                    results = run_all(port, make_targets(client_id, secret, token), args)
                    if server.poll() is not None:
                        raise BenchError(f"the server exited during the run "
                                         f"(status {server.returncode})")
                finally:
                    stop_server(server)
        except BenchError as e:
            print(f"bench: {e}", file=sys.stderr)
            if log_path.exists():
                print(f"--- last lines of the server log ---\n{log_tail(log_path)}",
                      file=sys.stderr)
            return 1
    print(format_table(results))
    path = write_results(results, args, when)
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
