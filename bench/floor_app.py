"""The floor: a bare Flask endpoint under the same server settings as ``latchkey serve``.

``bench/run.py`` measures it in every run, and reports each Latchkey endpoint's
throughput as a ratio of it: the framework's ceiling on this machine, so the
ratios can be compared between machines where absolute figures cannot.

Beside it, ``GET /floor/sign`` is the signing ceiling: a bare WSGI endpoint
(no Flask, like Latchkey's own fast path) that does nothing but what no
token endpoint can skip, sign a token-sized JWT with a new ``jti`` and time
(a key of ``--alg``, made at start) and answer it as a token response. No
client is read or authenticated and nothing is written, so no implementation
of the token endpoint can go faster than it on the same machine.

    python bench/floor_app.py --port 8000 --workers 4 --worker-class granian
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, jsonify

FLOOR_PATH = "/floor"
SIGN_PATH = "/floor/sign"
ALGS = ("RS256", "ES256", "EdDSA")


def create_floor_app() -> Flask:
    app = Flask(__name__)

    @app.get(FLOOR_PATH)
    def floor() -> Any:
        """A small JSON document, about the size of the metadata's first lines."""
        return jsonify(status="ok", issuer="http://127.0.0.1", version=1)

    return app


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def new_key(alg: str) -> Any:
    """A new private key for ``alg`` (RSA 2048, P-256 or Ed25519, as Latchkey makes them)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def signer(alg: str, key: Any = None) -> Callable[[], bytes]:
    """A function returning a new token response body, signed with ``key`` (default a
    new key of ``alg``)."""
    from jwt.algorithms import get_default_algorithms

    key = new_key(alg) if key is None else key
    algorithm = get_default_algorithms()[alg]
    header = _b64(json.dumps({"alg": alg, "kid": "bench", "typ": "at+jwt"}).encode())

    def token_response() -> bytes:
        now = int(time.time())
        claims = {"iss": "http://127.0.0.1", "sub": "lkc_bench", "aud": "https://api.bench.test",
                  "exp": now + 3600, "iat": now, "nbf": now, "jti": secrets.token_urlsafe(18),
                  "client_id": "lkc_bench", "scope": "read write"}
        signing_input = header + b"." + _b64(json.dumps(claims).encode())
        token = signing_input + b"." + _b64(algorithm.sign(signing_input, key))
        return json.dumps({"access_token": token.decode(), "token_type": "Bearer",
                           "expires_in": 3600, "scope": "read write"}).encode()

    return token_response


def with_sign_ceiling(app: Flask, alg: str) -> Callable[..., Iterable[bytes]]:
    """``app`` with ``GET /floor/sign`` answered in front of it, without Flask."""
    token_response = signer(alg)
    flask_app = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != SIGN_PATH:
            return flask_app(environ, start_response)
        body = token_response()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


#: The signing ceiling's algorithm in a granian worker (which imports ``make_floor``).
ALG_VARIABLE = "BENCH_FLOOR_ALG"


def make_floor() -> Callable[..., Iterable[bytes]]:
    """The floor app with its signing ceiling, as a granian worker builds it."""
    import os

    app = create_floor_app()
    return with_sign_ceiling(app, os.environ.get(ALG_VARIABLE, "RS256"))


def main() -> None:
    import os
    from pathlib import Path

    from portal.cli import DEFAULT_THREADS, WORKER_CLASSES, granian_options, gunicorn_options

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker (default: latchkey serve's for the class)")
    parser.add_argument("--worker-class", choices=WORKER_CLASSES, default="granian")
    parser.add_argument("--alg", choices=ALGS, default="RS256",
                        help="algorithm of the signing ceiling's key (default RS256)")
    args = parser.parse_args()
    threads = args.threads or DEFAULT_THREADS[args.worker_class]
    if args.worker_class == "granian":
        from granian.constants import Interfaces
        from granian.server import Server as Granian

        os.environ[ALG_VARIABLE] = args.alg
        options = granian_options(host=args.host, port=args.port, workers=args.workers,
                                  threads=threads)
        options["target"] = "floor_app:make_floor"
        Granian(interface=Interfaces.WSGI, working_dir=Path(__file__).resolve().parent,
                **options).serve()
        return

    from gunicorn.app.base import BaseApplication

    options = gunicorn_options(bind=f"{args.host}:{args.port}", workers=args.workers,
                               threads=threads, worker_class=args.worker_class)

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            app = create_floor_app()
            app.wsgi_app = with_sign_ceiling(app, args.alg)  # type: ignore[method-assign]
            return app

    Server().run()


if __name__ == "__main__":
    main()
