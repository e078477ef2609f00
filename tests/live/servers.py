"""Every live server of the tests, on 127.0.0.1 and a free port.

Two kinds: :func:`serving` runs a test's own app (its database, its rows) in a
werkzeug thread of the test process (the ``live_server`` fixture, tests/conftest.py);
:class:`Server` runs ``latchkey serve`` as a separate process, for the black-box and
operations tests, polled by :func:`wait_ready` until it answers.

Every :class:`Server` writes its standard output and error to files; :data:`SERVER_LOGS`
lists them all, so that the log audit (``test_zz_log_audit.py``) can read the
logs of every server the live tests started in this run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

LATCHKEY = str(Path(sys.executable).parent / "latchkey")
AUDIENCE = "https://api.example.com"
STARTUP_SECONDS = 30
#: Every log file of every server started through this module in this run.
SERVER_LOGS: list[Path] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def serving(app: Any, *, issuer: bool = True) -> Iterator[str]:
    """``app`` served by a werkzeug thread on 127.0.0.1 and a free port; yields its base URL.

    With ``issuer`` (the default) the app's ``ISSUER`` becomes that URL, so tokens' ``iss``,
    the metadata and the portal's snippets point at the server that answers them.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    if issuer:
        app.config["ISSUER"] = base
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        thread.join(timeout=10)


def wait_ready(base: str, *, name: str, alive: Callable[[], int | None], log: Path,
               path: str = "/healthz", seconds: float = STARTUP_SECONDS) -> None:
    """Poll ``base + path`` until it answers 200; fail at once if ``alive()`` (a
    ``Popen.poll``) says the process exited, or after ``seconds``, with ``log``'s tail."""
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        if (code := alive()) is not None:
            pytest.fail(f"{name} exited with {code} during startup\n{tail(log)}", pytrace=False)
        try:
            response = requests.get(base + path, timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.ConnectionError as e:
            last = type(e).__name__
        time.sleep(0.1)
    pytest.fail(f"{name} not ready after {seconds} s ({last})\n{tail(log)}", pytrace=False)


@dataclass
class Deployment:
    """One database, one set of secrets and settings: what several servers share."""

    workdir: Path
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([LATCHKEY, *args], env=self.env, cwd=self.workdir,
                                capture_output=True, text=True, timeout=120, check=False)
        if check:
            assert result.returncode == 0, (
                f"latchkey {' '.join(args)} exited {result.returncode}\n{result.stderr[-3000:]}")
        return result

    def create_client(self, org: str, *extra: str) -> tuple[str, str]:
        out = self.cli("create-client", "--org", org, "--name", f"c-{secrets.token_hex(3)}",
                       "--scopes", "read write", "--audience", AUDIENCE, "--json", *extra)
        created = json.loads(out.stdout)
        return created["client_id"], created["client_secret"]


def make_deployment(workdir: Path, database_url: str, **settings: str) -> Deployment:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LATCHKEY_", "FLASK_", "PROMETHEUS_"))}
    env.update({
        "LATCHKEY_DATABASE_URL": database_url,
        "LATCHKEY_ISSUER": "http://127.0.0.1:5000",
        "LATCHKEY_SECRET_KEY": "sk-" + secrets.token_hex(32),
        "LATCHKEY_CLIENT_SECRET_HMAC_KEY": "hk-" + secrets.token_hex(32),
        "LATCHKEY_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "LATCHKEY_LOG_FORMAT": "json",
        "LATCHKEY_ACCESS_LOG": "1",  # so the log audit reads every request's line too
        "LATCHKEY_TOKEN_JOURNAL_DIR": str(workdir / "token-journal"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({f"LATCHKEY_{k}": v for k, v in settings.items()})
    deployment = Deployment(workdir=workdir, env=env)
    deployment.cli("db", "upgrade")
    return deployment


@dataclass
class Server:
    """One ``latchkey serve --workers N`` process (its own process group).

    ``argv``: the command's arguments after ``latchkey`` instead of
    ``serve --host 127.0.0.1 --port <port> --workers <workers>`` (a guide's own line).
    """

    deployment: Deployment
    port: int
    name: str
    workers: int = 2
    process: subprocess.Popen[bytes] | None = None
    metrics_dir: Path | None = None
    logs: list[Path] = field(default_factory=list)
    argv: Sequence[str] = ()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        workdir = self.deployment.workdir
        index = len(self.logs) // 2
        out = workdir / f"{self.name}-{index}.out"
        err = workdir / f"{self.name}-{index}.err"
        self.logs += [out, err]
        SERVER_LOGS.extend([out, err])
        env = dict(self.deployment.env)
        # Until `latchkey serve` prepares it (portal.ops.metrics.prepare_multiprocess_dir),
        # the test gives each server its own multi-process metrics directory.
        self.metrics_dir = workdir / f"{self.name}-metrics"
        if self.metrics_dir.exists():
            for stale in self.metrics_dir.glob("*.db"):
                stale.unlink()
        self.metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        argv = list(self.argv) or ["serve", "--host", "127.0.0.1", "--port", str(self.port),
                                   "--workers", str(self.workers)]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.process = subprocess.Popen(
                [LATCHKEY, *argv], env=env, cwd=workdir, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )
        wait_ready(self.base, name=self.name, alive=self.process.poll, log=self.logs[-1])
        return self

    def kill(self) -> None:
        """SIGKILL the server and its workers (its process group), as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the group if it has not exited in 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # any worker left behind
            except ProcessLookupError:
                pass

    @contextmanager
    def running(self) -> Iterator[Server]:
        """Started, and stopped afterwards whatever happens."""
        try:
            yield self.start()
        finally:
            self.stop()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def token(self, client_id: str, secret: str, **data: str) -> requests.Response:
        return requests.post(self.base + "/oauth/token",
                             data={"grant_type": "client_credentials", **data},
                             auth=(client_id, secret), timeout=10)

    def introspect(self, client_id: str, secret: str, token: str) -> requests.Response:
        return requests.post(self.base + "/oauth/introspect", data={"token": token},
                             auth=(client_id, secret), timeout=10)


