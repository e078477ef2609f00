"""Benchmark Latchkey's OAuth endpoints with wrk against a real ``latchkey serve``.

For each backend (SQLite, PostgreSQL), each server (``latchkey serve``'s granian, or
gunicorn's sync or gthread workers) and each way into the protocol (the WSGI door,
and the Flask views alone: ``LATCHKEY_PROTOCOL_DOOR=0``), it creates a throwaway
database, seeds an org and a client, starts the server on a free port of 127.0.0.1
and drives every endpoint with wrk (Lua scripts in ``bench/lua/``) at each
concurrency for a bounded time, and reads the CPU time the server's processes spent
on it. A bare Flask endpoint under the same server settings (``bench/floor_app.py``) is
measured in the same run; every endpoint's throughput is printed as a ratio of
it. So is the signing ceiling beside it: an endpoint that only signs a token
with a key of the bench's algorithm, the most any token endpoint could reach
on this machine. Then a long run of 64 concurrent token requests checks that writes under
load give no errors and no "database is locked" in the server log. It prints
one table and writes the figures as JSON to ``bench/results/``. See
``bench/README.md``.

Standard library, plus ``cryptography`` and ``psycopg`` (installed with Latchkey).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote_plus, urlencode

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))  # when imported, not run
from floor_app import ALGS, FLOOR_PATH, SIGN_PATH, new_key  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
LUA_DIR = BENCH_DIR / "lua"
RESULTS_DIR = BENCH_DIR / "results"
BIN = Path(sys.prefix) / "bin"
LATCHKEY = BIN / "latchkey"
HOST = "127.0.0.1"
READY_PATH = "/.well-known/openid-configuration"
READY_TIMEOUT = 30.0  # seconds for a server to answer after it is started
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
WRK_TIMEOUT = "10s"  # a request slower than this counts as a timeout
AUDIENCE = "https://api.bench.test"
LOG_TAIL_LINES = 40
LOCKED = "database is locked"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")
WORKER_CLASSES = ("granian", "sync", "gthread")
#: "wsgi": the protocol's WSGI door answers token and introspection; "flask": the views.
DOORS = ("wsgi", "flask")
#: What runs through both doors (the others never go through the protocol's doors).
DOOR_ENDPOINTS = frozenset({"token-basic", "token-json", "token-wrong-secret", "introspect"})
MEMORY_LIMIT_MB = 120
MEMORY_CHUNK_SECONDS = 20.0


class BenchError(Exception):
    """Setup or server failure: the message is printed and the run exits non-zero."""


@dataclass(frozen=True)
class Endpoint:
    """One request to repeat: a name, a Lua script and the variables the script reads."""

    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)
    expect_status: int = 200  # a wrong secret's runs answer 401, and count it as success


@dataclass
class Result:
    backend: str  # "-" for the floor
    worker_class: str
    endpoint: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # statuses >= 400 other than the endpoint's own (a wrong secret's 401)
    socket_errors: int  # connect, read and write errors and timeouts (wrk's own counts)
    peak_rss_mb: float | None  # the largest VmHWM among the workers after the run
    # The floor measured just before and just after this run (mean req/s): the
    # machine's speed drifts from minute to minute on a shared VM.
    adjacent_floor_rps: float | None = None
    floor_rps: float | None = None  # the floor the ratio is taken of
    floor_ratio: float | None = None
    door: str = "wsgi"
    cpu_ms_per_request: float | None = None  # CPU of the server's processes over requests


@dataclass
class Check:
    """A pass/fail line printed under the table (writes under load, memory)."""

    name: str
    passed: bool
    detail: str


# -- command line ----------------------------------------------------------------------


def int_list(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {value}") from e
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def choice_list(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        picked = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [p for p in picked if p not in choices]
        if unknown or not picked:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(choices)} (comma-separated), not {value!r}")
        return list(dict.fromkeys(picked))
    return parse


ENDPOINT_KEYS = ("token-basic", "token-json", "token-wrong-secret", "introspect", "jwks",
                 "metadata")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="duration of each wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unrecorded seconds of load before each endpoint (default 2)")
    parser.add_argument("--concurrency", type=int_list, default=[1, 16, 64],
                        help="comma-separated connection counts (default 1,16,64)")
    parser.add_argument("--backends", type=choice_list(BACKENDS), default=list(BACKENDS),
                        help="comma-separated: sqlite,postgresql (default both)")
    parser.add_argument("--worker-classes", type=choice_list(WORKER_CLASSES),
                        default=["granian"],
                        help="comma-separated servers: granian (latchkey serve's), and "
                             "gunicorn's sync,gthread (default granian)")
    parser.add_argument("--doors", type=choice_list(DOORS), default=list(DOORS),
                        help="comma-separated ways into the protocol: wsgi (the door, on by "
                             "default in latchkey serve), flask (the views alone); "
                             "default both")
    parser.add_argument("--endpoints", type=choice_list(ENDPOINT_KEYS),
                        default=list(ENDPOINT_KEYS),
                        help="comma-separated subset of " + ",".join(ENDPOINT_KEYS))
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes (default 2, as latchkey serve ships)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker (default latchkey serve's: granian 1, "
                             "gthread 4; sync workers have 1)")
    parser.add_argument("--wrk-threads", type=int, default=2,
                        help="wrk threads, at most the concurrency (default 2)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help="a PostgreSQL database to connect to in order to create and drop "
                             f"the bench database (default {DEFAULT_POSTGRES})")
    parser.add_argument("--lock-seconds", type=float, default=30.0,
                        help="length of the writes-under-load check: 64 concurrent token "
                             "requests on each backend (default 30; 0 skips it)")
    parser.add_argument("--alg", choices=ALGS, default="RS256",
                        help="signing algorithm of the bench org's keys (default RS256, "
                             "the product's default)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the floor app (no ratios, no signing ceiling)")
    parser.add_argument("--memory-tokens", type=int, default=0,
                        help="instead of the table: issue this many tokens through one "
                             "worker and report its RSS (e.g. 100000)")
    parser.add_argument("--memory-max-seconds", type=float, default=900.0,
                        help="time bound of the memory mode (default 900)")
    parser.add_argument("--profile", action="store_true",
                        help="record the token (basic) run at concurrency 16 (else the highest) "
                             "with py-spy (pip install py-spy) into bench/results/")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.lock_seconds < 0:
        parser.error("--seconds must be positive, --warmup and --lock-seconds not negative")
    if args.workers < 1 or (args.threads is not None and args.threads < 1) \
            or args.wrk_threads < 1:
        parser.error("--workers, --threads and --wrk-threads must be at least 1")
    return args


# -- databases -------------------------------------------------------------------------


@contextmanager
def database(backend: str, tmp: Path, args: argparse.Namespace, label: str) -> Iterator[str]:
    """A fresh, empty database URL for one server; PostgreSQL's is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp}/{label}.db"
        return
    import psycopg

    name = f"latchkey_bench_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(args.postgres_url.replace("+psycopg", ""), autocommit=True)
    except psycopg.Error as e:
        raise BenchError(f"cannot connect to PostgreSQL at {args.postgres_url}: {e}") from e
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = args.postgres_url.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_bytes(url: str) -> dict[str, dict[str, int]]:
    """Rows and bytes on disk (tables and their indexes) of the two tables that grow."""
    tables = ("issued_tokens", "usage_events")
    found: dict[str, dict[str, int]] = {}
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1])
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for table in tables:
                rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                size = conn.execute(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
                    "(SELECT name FROM sqlite_master WHERE tbl_name = ?)", (table,)
                ).fetchone()[0]
                found[table] = {"rows": rows, "bytes": size}
        finally:
            conn.close()
        return found
    import psycopg

    with psycopg.connect(url) as pg:
        for table in tables:
            rows = (pg.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,))[0]  # noqa: S608
            size = (pg.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                    or (0,))[0]
            found[table] = {"rows": rows, "bytes": size}
    return found


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def bench_env(tmp: Path, port: int, database_url: str) -> dict[str, str]:
    """Settings for every ``latchkey`` process: nothing is read from or written to instance/."""
    env = dict(os.environ)
    env.update({
        "LATCHKEY_DATABASE_URL": database_url,
        "LATCHKEY_ISSUER": f"http://{HOST}:{port}",
        "LATCHKEY_SECRET_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_CLIENT_SECRET_HMAC_KEY": secrets.token_urlsafe(32),
        "LATCHKEY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        # Successful requests are never counted; this only keeps a mistake from
        # turning into a wall of 429s that would look like throughput.
        "LATCHKEY_TOKEN_FAILURE_RATE_LIMIT": "1000000/minute",
        "LATCHKEY_TOKEN_JOURNAL_DIR": str(tmp / "token-journal"),
        "TMPDIR": str(tmp),
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


def seed(env: dict[str, str], alg: str) -> tuple[str, str]:
    """Migrate, create an org (keys of ``alg``) and a client; return the client's id and secret."""
    latchkey(env, "db", "upgrade")
    latchkey(env, "create-org", "--name", "Bench", "--slug", "bench", "--alg", alg)
    out = latchkey(env, "create-client", "--org", "bench", "--name", "bench", "--scopes",
                   "read write", "--audience", AUDIENCE, "--json")
    created = json.loads(out)
    return created["client_id"], created["client_secret"]


def start(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen[bytes], port: int, path: str, workers: int) -> None:
    """Wait until ``path`` answers 200 and every worker has been forked."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"the server exited with status {server.returncode}")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200 and len(worker_pids(server.pid)) >= workers:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise BenchError(f"the server did not answer GET {path} within {READY_TIMEOUT:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the direct children of the master process."""
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for child in worker_pids(pid):
        found += process_tree(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds spent so far by ``pid`` and its descendants."""
    ticks = 0
    for proc in process_tree(pid):
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(master: int) -> float | None:
    """The largest peak resident set size (VmHWM) among the workers, in MB."""
    peaks = [status_kb(pid, "VmHWM") for pid in worker_pids(master)]
    values = [p for p in peaks if p is not None]
    return round(max(values) / 1024, 1) if values else None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"


def log_count(path: Path, needle: str) -> int:
    try:
        return path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


@contextmanager
def running(cmd: list[str], env: dict[str, str], port: int, ready_path: str, workers: int,
            log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        server = start(cmd, env, log)
        try:
            wait_ready(server, port, ready_path, workers)
            yield server
            if server.poll() is not None:
                raise BenchError(f"the server exited during the run (status {server.returncode})")
        except BenchError as e:
            raise BenchError(f"{e}\n--- last lines of {log_path.name} ---\n{log_tail(log_path)}"
                             ) from e
        finally:
            stop(server)


def threads_args(args: argparse.Namespace) -> list[str]:
    return [] if args.threads is None else ["--threads", str(args.threads)]


def server_cmd(port: int, args: argparse.Namespace, worker_class: str,
               workers: int | None = None) -> list[str]:
    return [str(LATCHKEY), "serve", "--host", HOST, "--port", str(port),
            "--workers", str(workers or args.workers), *threads_args(args),
            "--worker-class", worker_class]


def floor_cmd(port: int, args: argparse.Namespace, worker_class: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "floor_app.py"), "--host", HOST, "--port", str(port),
            "--workers", str(args.workers), *threads_args(args),
            "--worker-class", worker_class, "--alg", args.alg]


# -- requests --------------------------------------------------------------------------


def basic_auth(client_id: str, secret: str) -> str:
    """client_secret_basic: each part form-encoded first (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


FORM = "application/x-www-form-urlencoded"


def request_once(port: int, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


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


def endpoints(client_id: str, secret: str, token: str) -> dict[str, Endpoint]:
    basic = basic_auth(client_id, secret)
    json_body = json.dumps({"grant_type": "client_credentials", "client_id": client_id,
                            "client_secret": secret})
    return {
        "token-basic": Endpoint("token (basic)", "token_basic.lua",
                                {"BENCH_AUTHORIZATION": basic}),
        "token-json": Endpoint("token (json)", "token_json.lua", {"BENCH_BODY": json_body}),
        "token-wrong-secret": Endpoint("token (wrong secret)", "token_basic.lua",
                                       {"BENCH_AUTHORIZATION": basic_auth(client_id, "wrong")},
                                       expect_status=401),
        "introspect": Endpoint("introspect", "introspect.lua",
                               {"BENCH_AUTHORIZATION": basic,
                                "BENCH_BODY": urlencode({"token": token})}),
        "jwks": Endpoint("jwks", "get.lua", {"BENCH_PATH": "/.well-known/jwks.json"}),
        "metadata": Endpoint("metadata", "get.lua",
                             {"BENCH_PATH": "/.well-known/oauth-authorization-server"}),
    }


FLOOR = Endpoint("floor (bare flask)", "get.lua", {"BENCH_PATH": FLOOR_PATH})
#: What a token endpoint that only signed could reach (``bench/floor_app.py``).
SIGN_CEILING = Endpoint("ceiling: sign only", "get.lua", {"BENCH_PATH": SIGN_PATH})


# -- load ------------------------------------------------------------------------------


def wrk(port: int, endpoint: Endpoint, concurrency: int, seconds: float, wrk_threads: int,
        tmp: Path) -> dict[str, Any]:
    """Run wrk once and return the summary its Lua ``done()`` wrote."""
    out = tmp / f"wrk-{secrets.token_hex(4)}.json"
    env = dict(os.environ, BENCH_OUT=str(out), BENCH_LUA_DIR=str(LUA_DIR), **endpoint.env)
    threads = max(1, min(wrk_threads, concurrency))
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s",
           "--timeout", WRK_TIMEOUT, "-s", str(LUA_DIR / endpoint.script),
           f"http://{HOST}:{port}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return summary


def to_result(summary: dict[str, Any], *, backend: str, worker_class: str, name: str,
              concurrency: int, rss: float | None, expect_status: int = 200,
              door: str = "wsgi", cpu_seconds: float | None = None) -> Result:
    seconds = summary["duration_us"] / 1e6
    # wrk counts statuses >= 400; a run that expects one (a wrong secret's 401) counts
    # the responses below 400 as the unexpected ones instead.
    unexpected = summary["non_2xx"] if expect_status < 400 \
        else summary["requests"] - summary["non_2xx"]
    cpu = None
    if cpu_seconds is not None and summary["requests"]:
        cpu = round(cpu_seconds * 1000 / summary["requests"], 3)
    return Result(
        backend=backend, worker_class=worker_class, endpoint=name, concurrency=concurrency,
        requests=summary["requests"], seconds=round(seconds, 2),
        rps=round(rate(summary), 1),
        p50_ms=round(summary["p50_us"] / 1000, 2), p99_ms=round(summary["p99_us"] / 1000, 2),
        non_2xx=unexpected, door=door, cpu_ms_per_request=cpu,
        socket_errors=sum(summary[k] for k in ("connect_errors", "read_errors", "write_errors",
                                               "timeouts")),
        peak_rss_mb=rss,
    )


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def measure_all(server: subprocess.Popen[bytes], port: int, picked: list[Endpoint],
                args: argparse.Namespace, tmp: Path, *, backend: str, worker_class: str,
                profile_to: Path | None = None, floor_port: int | None = None,
                door: str = "wsgi") -> list[Result]:
    """Each endpoint at each concurrency; with ``floor_port``, the floor app is run for
    a quarter as long just before and just after each of them (see ``adjacent_floor_rps``)."""
    results = []
    for endpoint in picked:
        if args.warmup > 0:
            wrk(port, endpoint, max(args.concurrency), args.warmup, args.wrk_threads, tmp)
        for concurrency in args.concurrency:
            progress(f"{backend:<10} {worker_class:<7} {door:<5} {endpoint.name:<20} "
                     f"c{concurrency}")
            floors = []
            if floor_port is not None:
                floors.append(floor_rps(floor_port, concurrency, args, tmp))
            spy = None
            if profile_to is not None and endpoint.script == "token_basic.lua" \
                    and concurrency == profile_concurrency(args.concurrency):
                spy = Profiler(server.pid, args.seconds, profile_to)
            cpu_before = tree_cpu_seconds(server.pid)
            summary = wrk(port, endpoint, concurrency, args.seconds, args.wrk_threads, tmp)
            cpu_after = tree_cpu_seconds(server.pid)
            if spy is not None:
                spy.wait(timeout=args.seconds + 30)
            result = to_result(summary, backend=backend, worker_class=worker_class,
                               name=endpoint.name, concurrency=concurrency,
                               rss=peak_rss_mb(server.pid), expect_status=endpoint.expect_status,
                               door=door, cpu_seconds=cpu_after - cpu_before)
            if floor_port is not None:
                floors.append(floor_rps(floor_port, concurrency, args, tmp))
                result.adjacent_floor_rps = round(sum(floors) / len(floors), 1)
            results.append(result)
    return results


def floor_rps(port: int, concurrency: int, args: argparse.Namespace, tmp: Path) -> float:
    """The floor's req/s over a quarter of a run's length, now."""
    summary = wrk(port, FLOOR, concurrency, max(1, round(args.seconds / 4)), args.wrk_threads,
                  tmp)  # wrk takes whole seconds
    return rate(summary)


def rate(summary: dict[str, Any]) -> float:
    """Requests per second of one wrk run."""
    seconds = summary["duration_us"] / 1e6
    return float(summary["requests"] / seconds) if seconds else 0.0


def profile_concurrency(levels: list[int]) -> int:
    """The concurrency the profiler records: 16 (the targets' level) when it is run."""
    return 16 if 16 in levels else max(levels)


class Profiler:
    """Two py-spy recorders over every worker, as collapsed stacks (a stack and its count).

    ``<name>.stacks`` samples every thread that is not idle: where in-flight
    requests spend wall time, waits for the database included. ``<name>.gil.stacks``
    samples only the thread holding the GIL: where the CPU goes.
    """

    def __init__(self, master: int, seconds: float, out: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if spy is None:
            progress("py-spy not found (pip install py-spy): not profiling")
            return
        for extra, suffix in (([], ".stacks"), (["--gil"], ".gil.stacks")):
            self.procs.append(subprocess.Popen(
                [spy, "record", "--pid", str(master), "--subprocesses", "--format", "raw",
                 "--rate", "100", "--duration", str(max(1, int(seconds))), "--nonblocking",
                 *extra, "--output", str(out.with_suffix(suffix))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))

    def wait(self, timeout: float) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- one backend and worker class ------------------------------------------------------


def bench_backend(backend: str, worker_class: str, args: argparse.Namespace, tmp: Path,
                  when: datetime, door: str = "wsgi"
                  ) -> tuple[list[Result], list[Check], dict[str, Any]]:
    label = f"{backend}-{worker_class}" + ("" if door == "wsgi" else f"-{door}")
    port = free_port()
    log_path = tmp / f"server-{label}.log"
    checks: list[Check] = []
    with database(backend, tmp, args, label) as url:
        env = bench_env(tmp, port, url)
        if door == "flask":
            env["LATCHKEY_PROTOCOL_DOOR"] = "0"  # the Flask views answer everything
        client_id, secret = seed(env, args.alg)
        with running(server_cmd(port, args, worker_class), env, port, READY_PATH, args.workers,
                     log_path) as server, floor_beside(worker_class, args, tmp) as floor_port:
            token = fetch_token(port, basic_auth(client_id, secret))
            table = endpoints(client_id, secret, token)
            picked = [table[key] for key in args.endpoints
                      if door == "wsgi" or key in DOOR_ENDPOINTS]
            profile_to = None
            if args.profile:
                profile_to = RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}-{label}"
            results = measure_all(server, port, picked, args, tmp, backend=backend,
                                  worker_class=worker_class, profile_to=profile_to,
                                  floor_port=floor_port, door=door)
            if args.lock_seconds > 0 and worker_class == args.worker_classes[-1] \
                    and door == args.doors[0]:
                progress(f"{backend:<10} {worker_class:<7} writes under load: token (basic) "
                         f"c64 for {args.lock_seconds:g} s")
                summary = wrk(port, table["token-basic"], 64, args.lock_seconds,
                              args.wrk_threads, tmp)
                lock = to_result(summary, backend=backend, worker_class=worker_class,
                                 name="token (basic) 64 x 30 s", concurrency=64,
                                 rss=peak_rss_mb(server.pid))
                errors = lock.non_2xx + lock.socket_errors
                checks.append(Check(
                    f"writes under load, {backend}",
                    passed=errors == 0 and log_count(log_path, LOCKED) == 0,
                    detail=f"{lock.requests} token requests at c64 in {lock.seconds:g} s "
                           f"({lock.rps:.0f}/s, p99 {lock.p99_ms:.1f} ms): {lock.non_2xx} "
                           f"non-2xx, {lock.socket_errors} socket errors",
                ))
        sizes = table_bytes(url)
    locked = log_count(log_path, LOCKED)
    tracebacks = log_count(log_path, "Traceback")
    checks.append(Check(
        f"server log, {label}", passed=locked == 0 and tracebacks == 0,
        detail=f'{locked} "{LOCKED}", {tracebacks} tracebacks',
    ))
    return results, checks, sizes


@contextmanager
def floor_server(worker_class: str, args: argparse.Namespace, tmp: Path
                 ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with running(floor_cmd(port, args, worker_class), env, port, FLOOR_PATH, args.workers,
                 tmp / f"floor-{worker_class}.log") as server:
        yield server, port


@contextmanager
def floor_beside(worker_class: str, args: argparse.Namespace, tmp: Path
                 ) -> Iterator[int | None]:
    """The floor app's port, idle beside the server under test (None with --no-floor)."""
    if args.no_floor:
        yield None
        return
    with floor_server(worker_class, args, tmp) as (_server, port):
        yield port


def bench_floor(worker_class: str, args: argparse.Namespace, tmp: Path) -> list[Result]:
    """The floor's own rows, and the signing ceiling's next to floors of its own."""
    with floor_server(worker_class, args, tmp) as (server, port):
        results = measure_all(server, port, [FLOOR], args, tmp, backend="-",
                              worker_class=worker_class)
        return results + measure_all(server, port, [SIGN_CEILING], args, tmp, backend="-",
                                     worker_class=worker_class, floor_port=port)


def bench_memory(args: argparse.Namespace, tmp: Path) -> Check:
    """Issue ``--memory-tokens`` tokens through one worker; its RSS must stay under 120 MB."""
    backend = args.backends[0]
    worker_class = args.worker_classes[-1]
    port = free_port()
    with database(backend, tmp, args, "memory") as url:
        env = bench_env(tmp, port, url)
        client_id, secret = seed(env, args.alg)
        with running(server_cmd(port, args, worker_class, workers=1), env, port, READY_PATH, 1,
                     tmp / "server-memory.log") as server:
            fetch_token(port, basic_auth(client_id, secret))
            pid = worker_pids(server.pid)[0]
            table = endpoints(client_id, secret, "")
            wrk(port, table["token-basic"], 16, 2, args.wrk_threads, tmp)  # warm up
            before = status_kb(pid, "VmRSS") or 0
            progress(f"memory: {args.memory_tokens} tokens through one {worker_class} worker "
                     f"on {backend} (at most {args.memory_max_seconds:g} s)")
            # wrk's main thread sleeps for the whole -d even when its threads stop
            # early, so the budget is spent in short runs until it is reached.
            issued = non_2xx = 0
            started = time.monotonic()
            while issued < args.memory_tokens:
                left = args.memory_max_seconds - (time.monotonic() - started)
                if left <= 0:
                    break
                chunk = wrk(port, table["token-basic"], 16, min(MEMORY_CHUNK_SECONDS, left),
                            args.wrk_threads, tmp)
                issued += chunk["requests"]
                non_2xx += chunk["non_2xx"] + chunk["timeouts"]
            elapsed = time.monotonic() - started
            after = status_kb(pid, "VmRSS") or 0
            peak = status_kb(pid, "VmHWM") or 0
            alive = pid in worker_pids(server.pid)
    passed = alive and issued >= args.memory_tokens and peak / 1024 < MEMORY_LIMIT_MB \
        and non_2xx == 0
    return Check(
        f"memory, {backend} {worker_class}", passed=passed,
        detail=f"{issued} tokens ({non_2xx} non-2xx or timeouts) in {elapsed:.0f} s; "
               f"worker RSS {before / 1024:.1f} MB after "
               f"warm-up, {after / 1024:.1f} MB after, peak {peak / 1024:.1f} MB "
               f"(limit {MEMORY_LIMIT_MB} MB){'' if alive else '; the worker was replaced'}",
    )


# -- crypto ----------------------------------------------------------------------------


def crypto_costs(rounds: int = 300) -> dict[str, dict[str, float]]:
    """Microseconds per PyJWT sign and verify of a token-sized claim set, per algorithm."""
    import jwt

    claims = {"iss": "http://127.0.0.1:5000", "sub": "lkc_" + "x" * 22, "aud": AUDIENCE,
              "exp": 2_000_000_000, "iat": 1_700_000_000, "nbf": 1_700_000_000,
              "jti": "j" * 24, "client_id": "lkc_" + "x" * 22, "scope": "read write",
              "oid": "org_" + "x" * 12}
    keys = {alg: new_key(alg) for alg in ALGS}
    costs = {}
    for alg, key in keys.items():
        headers = {"typ": "at+jwt", "kid": "k"}
        started = time.perf_counter()
        for _ in range(rounds):
            token = jwt.encode(claims, key, algorithm=alg, headers=headers)
        sign = (time.perf_counter() - started) / rounds
        public = key.public_key()
        started = time.perf_counter()
        for _ in range(rounds):
            jwt.decode(token, public, algorithms=[alg], options={"verify_aud": False,
                                                                  "verify_exp": False})
        verify = (time.perf_counter() - started) / rounds
        costs[alg] = {"sign_us": round(sign * 1e6, 1), "verify_us": round(verify * 1e6, 1)}
    return costs


# -- report ----------------------------------------------------------------------------


COLUMNS = ("backend", "server", "door", "endpoint", "conc", "req/s", "x floor", "floor/s",
           "CPU ms", "p50 ms", "p99 ms", "non-2xx", "sock err", "RSS MB")
LEFT_COLUMNS = 4  # left-aligned; the figures after them are right-aligned


def add_ratios(results: list[Result]) -> None:
    """Each run's req/s over the floor's: the floor measured around it when there is
    one, else the floor's own row at the same worker class and concurrency."""
    floors = {(r.worker_class, r.concurrency): r.rps for r in results
              if r.endpoint == FLOOR.name}
    for r in results:
        floor = r.adjacent_floor_rps or floors.get((r.worker_class, r.concurrency))
        if floor:
            r.floor_rps = round(floor, 1)
            r.floor_ratio = round(r.rps / floor, 2)


def format_table(results: list[Result]) -> str:
    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [COLUMNS] + [
        (r.backend, r.worker_class, r.door if r.backend != "-" else "-", r.endpoint,
         str(r.concurrency), f"{r.rps:.0f}", opt(r.floor_ratio, ".2f"), opt(r.floor_rps, ".0f"),
         opt(r.cpu_ms_per_request, ".2f"), f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", str(r.non_2xx),
         str(r.socket_errors), opt(r.peak_rss_mb, ".1f"))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        left = LEFT_COLUMNS
        cells = [c.ljust(w) for c, w in zip(row[:left], widths[:left], strict=True)]
        cells += [c.rjust(w) for c, w in zip(row[left:], widths[left:], strict=True)]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_sizes(sizes: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    lines = []
    for label, tables in sizes.items():
        tokens, events = tables["issued_tokens"], tables["usage_events"]
        per_token = tokens["bytes"] / tokens["rows"] if tokens["rows"] else 0
        per_event = events["bytes"] / events["rows"] if events["rows"] else 0
        lines.append(f"  {label:<20} issued_tokens {tokens['rows']:>7} rows "
                     f"{per_token:6.0f} B/row; usage_events {events['rows']:>7} rows "
                     f"{per_event:6.0f} B/row; per issued token (record + its event) "
                     f"{per_token + per_event:.0f} B")
    return lines


def git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() or None


def write_results(document: dict[str, Any], when: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks still stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if not LATCHKEY.exists():
        print(f"bench: {LATCHKEY} not found; run with the virtualenv's python (make bench)",
              file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("bench: wrk not found; `make bench` installs it (apt-get install wrk)",
              file=sys.stderr)
        return 2
    when = datetime.now(UTC)
    cpus = os.cpu_count()
    threads = args.threads or "latchkey serve's default"
    print(f"bench: {args.workers} workers ({threads} threads each) on {HOST}, "
          f"tokens signed with {args.alg}, "
          f"wrk {args.wrk_threads} threads, {args.seconds:g} s per run, {cpus} CPUs shared with "
          f"wrk", file=sys.stderr)
    results: list[Result] = []
    checks: list[Check] = []
    sizes: dict[str, dict[str, dict[str, int]]] = {}
    crypto: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="latchkey-bench-") as tmp:
        tmp_path = Path(tmp)
        try:
            if args.memory_tokens:
                checks.append(bench_memory(args, tmp_path))
            else:
                crypto = crypto_costs()
                if not args.no_floor:
                    for worker_class in args.worker_classes:
                        results += bench_floor(worker_class, args, tmp_path)
                for backend in args.backends:
                    for worker_class in args.worker_classes:
                        for door in args.doors:
                            found, more, table_sizes = bench_backend(
                                backend, worker_class, args, tmp_path, when, door)
                            results += found
                            checks += more
                            if door == args.doors[0]:
                                sizes[f"{backend}-{worker_class}"] = table_sizes
        except BenchError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
    add_ratios(results)
    if results:
        print(format_table(results))
    if crypto:
        print("\nsigning cost per token (PyJWT, this machine): " + "; ".join(
            f"{alg} sign {c['sign_us']:.0f} us, verify {c['verify_us']:.0f} us"
            for alg, c in crypto.items()))
    if sizes:
        print("\nbytes on disk (tables + indexes) after the run:")
        print("\n".join(format_sizes(sizes)))
    if checks:
        print("\nchecks:")
        for check in checks:
            print(f"  [{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    document: dict[str, Any] = {
        "timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_commit": git_commit(),
        "machine": {"cpu_count": cpus, "platform": platform.platform(),
                    "python": platform.python_version(),
                    "note": "wrk runs on the same machine and shares its CPUs"},
        "server": {"workers": args.workers, "threads": args.threads, "signing_alg": args.alg,
                   "worker_classes": args.worker_classes, "doors": args.doors,
                   "backends": args.backends},
        "load": {"generator": "wrk", "seconds": args.seconds, "warmup_seconds": args.warmup,
                 "concurrency": args.concurrency, "wrk_threads": args.wrk_threads,
                 "lock_check_seconds": args.lock_seconds, "memory_tokens": args.memory_tokens},
        "results": [asdict(r) for r in results],
        "checks": [asdict(c) for c in checks],
        "table_bytes": sizes,
        "crypto_us": crypto,
    }
    path = write_results(document, when)
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
