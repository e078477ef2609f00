"""Summarise py-spy collapsed stacks (``bench/run.py --profile``) by where the time goes.

    python bench/profile_summary.py bench/results/<timestamp>-sqlite-gthread.stacks

Each sample is put in the first bucket (in the order below) whose marker appears
anywhere in its stack, so the buckets add up to 100 % of the samples taken
while a worker was running Python (py-spy leaves out idle threads,
including threads waiting for the GIL or for the database).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

#: (bucket, markers): a sample goes to the first bucket one of whose markers is in its stack.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("sign the JWT (cryptography)", ("RSAAlgorithm.sign", "ECAlgorithm.sign",
                                     "OKPAlgorithm.sign")),
    ("rest of signing (JSON, base64)", ("ActiveKey.sign", "PyJWT.encode", "PyJWS.encode",
                                        "api_jwt.py", "api_jws.py")),
    ("verify a JWT (introspection)", ("signed_by", "verified_claims", "read_token")),
    ("load/decrypt the signing key", ("load_pem_private_key", "decrypt_private_key")),
    ("DB: begin/commit", ("Session.commit", "SessionTransaction.commit",
                          "RawConnections.write")),
    ("DB: write the token and usage rows", ("record_issued", "record_token", "insert_event",
                                           "record_event", "Session.flush",
                                           "_stale_last_used")),
    ("DB: find the client, its secrets and grants", ("TokenStore.client",
                                                     "client_and_record", "api_key_and_record")),
    ("DB: other reads (keys, records, membership)", ("active_key", "public_key (")),
    ("DB: connection checkout/ping/begin", ("_connection_for_bind", "Session.connection",
                                            "autocommit (", "do_ping",
                                            "RawConnections.connection")),
    ("HMAC of the secret", ("hmac_digest", "find_secret")),
    ("body parsing", ("read_body", "http_request", "parse_basic")),
    ("failure rate limit check", ("ratelimit/__init__.py",)),
    ("the exchange's rules", ("core/tokens/exchange.py",)),
    ("our endpoint code (rest)", ("api/oauth/",)),
    # Not "flask/": every worker's stack starts in flask/cli.py (``latchkey serve``).
    ("Flask/Werkzeug request machinery", ("flask/app.py", "flask/ctx.py", "flask/wrappers.py",
                                          "flask/sessions.py", "flask/json", "werkzeug/",
                                          "flask_login/", "flask_wtf/", "flask_limiter/")),
    ("gunicorn (HTTP parsing, access log, sockets)", ("gunicorn/",)),
]


def summarise(path: Path) -> list[tuple[str, int, float]]:
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        bucket = next((name for name, markers in BUCKETS if any(m in stack for m in markers)),
                      "other (interpreter, GC, threads)")
        counts[bucket] += int(n)
    total = sum(counts.values()) or 1
    return [(name, n, 100 * n / total) for name, n in counts.most_common()]


def main() -> None:
    for arg in sys.argv[1:]:
        rows = summarise(Path(arg))
        print(f"{arg}: {sum(n for _, n, _ in rows)} samples")
        for name, n, share in rows:
            print(f"  {share:5.1f} %  {n:6d}  {name}")


if __name__ == "__main__":
    main()
