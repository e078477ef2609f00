"""This checkout against another one, in one run: the same endpoints, the same load.

    python bench/compare.py --against /path/to/other/checkout   (make bench-compare)

The other checkout needs its own virtualenv (``make install`` in it). For each backend
and signing algorithm, each side in turn gets a fresh database, seeds an org and a client
through its own ``latchkey`` and is served as it ships (``latchkey serve --workers 2``,
its default server); wrk drives each endpoint for a bounded time while the server's CPU
time is read. Rounds alternate which side goes first, so a machine getting busier or
quieter during the run does not favour one side. It prints, per row, both sides' req/s
(the mean over rounds), their ratio and CPU milliseconds per request, and writes the
figures as JSON to ``bench/results/``.

Standard library and the pieces of ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py)

ENDPOINTS = ("token-basic", "token-json", "token-wrong-secret", "introspect")
HERE = "this checkout"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True,
                        help="the other checkout (with its .venv)")
    parser.add_argument("--seconds", type=float, default=6, help="each wrk run (default 6)")
    parser.add_argument("--warmup", type=float, default=2, help="unrecorded load first (2)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (16)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating (2)")
    parser.add_argument("--backends", type=run.choice_list(run.BACKENDS),
                        default=list(run.BACKENDS))
    parser.add_argument("--algs", type=run.choice_list(("RS256", "ES256", "EdDSA")),
                        default=["RS256", "ES256"])
    parser.add_argument("--endpoints", type=run.choice_list(ENDPOINTS), default=list(ENDPOINTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--postgres-url", default=run.DEFAULT_POSTGRES)
    args = parser.parse_args(argv)
    args.against = args.against.resolve()
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds, --rounds and --concurrency must be positive")
    return args


def cli(binary: Path, root: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(binary), *args], env=env, cwd=root, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise run.BenchError(f"`{binary} {args[0]}` failed (exit {proc.returncode}):\n"
                             f"{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def measure_side(label: str, root: Path, backend: str, alg: str, args: argparse.Namespace,
                 tmp: Path, round_no: int) -> dict[str, tuple[float, float | None, int]]:
    """Each endpoint's (req/s, CPU ms per request, unexpected answers) on one side."""
    binary = root / ".venv" / "bin" / "latchkey"
    port = run.free_port()
    name = f"{label.replace(' ', '-')}-{backend}-{alg}-{round_no}"  # a fresh database each
    found: dict[str, tuple[float, float | None, int]] = {}
    with run.database(backend, tmp, args, name) as url:
        env = run.bench_env(tmp, port, url)
        cli(binary, root, env, "db", "upgrade")
        cli(binary, root, env, "create-org", "--name", "Bench", "--slug", "bench", "--alg", alg)
        created = json.loads(cli(binary, root, env, "create-client", "--org", "bench", "--name",
                                 "bench", "--scopes", "read write", "--audience", run.AUDIENCE,
                                 "--json"))
        cmd = [str(binary), "serve", "--host", run.HOST, "--port", str(port),
               "--workers", str(args.workers)]
        with run.running(cmd, env, port, run.READY_PATH, args.workers,
                         tmp / f"server-{name}.log") as server:
            basic = run.basic_auth(created["client_id"], created["client_secret"])
            table = run.endpoints(created["client_id"], created["client_secret"],
                                  run.fetch_token(port, basic))
            for key in args.endpoints:
                endpoint = table[key]
                run.progress(f"{label:<14} {backend:<10} {alg} {endpoint.name}")
                if args.warmup > 0:
                    run.wrk(port, endpoint, args.concurrency, args.warmup, args.wrk_threads, tmp)
                before = run.tree_cpu_seconds(server.pid)
                summary = run.wrk(port, endpoint, args.concurrency, args.seconds,
                                  args.wrk_threads, tmp)
                result = run.to_result(summary, backend=backend, worker_class="as shipped",
                                       name=endpoint.name, concurrency=args.concurrency,
                                       rss=None, expect_status=endpoint.expect_status,
                                       cpu_seconds=run.tree_cpu_seconds(server.pid) - before)
                found[key] = (result.rps, result.cpu_ms_per_request,
                              result.non_2xx + result.socket_errors)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    other = args.against.name or str(args.against)
    if not (args.against / ".venv" / "bin" / "latchkey").exists():
        print(f"compare: {args.against}/.venv/bin/latchkey not found: run `make install` there",
              file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("compare: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    sides = [(HERE, run.ROOT), (other, args.against)]
    # (backend, alg, endpoint, side) -> the rounds' figures
    rounds: dict[tuple[str, str, str, str], list[tuple[float, float | None, int]]] = \
        defaultdict(list)
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="latchkey-compare-") as tmp:
        try:
            for backend in args.backends:
                for alg in args.algs:
                    for n in range(args.rounds):
                        for label, root in (sides if n % 2 == 0 else sides[::-1]):
                            measured = measure_side(label, root, backend, alg, args, Path(tmp), n)
                            for key, figures in measured.items():
                                rounds[(backend, alg, key, label)].append(figures)
        except run.BenchError as e:
            print(f"compare: {e}", file=sys.stderr)
            return 1
    rows = []
    for backend in args.backends:
        for alg in args.algs:
            for key in args.endpoints:
                row: dict[str, Any] = {"backend": backend, "alg": alg, "endpoint": key}
                for label, _root in sides:
                    taken = rounds[(backend, alg, key, label)]
                    cpus = [cpu for _rps, cpu, _bad in taken if cpu is not None]
                    row[label] = {"rps": round(mean(rps for rps, _cpu, _bad in taken), 1),
                                  "cpu_ms": round(mean(cpus), 3) if cpus else None,
                                  "unexpected": sum(bad for _rps, _cpu, bad in taken)}
                row["ratio"] = round(row[HERE]["rps"] / row[other]["rps"], 2) \
                    if row[other]["rps"] else None
                rows.append(row)
    print(f"\nc{args.concurrency}, {args.workers} workers each, {args.seconds:g} s x "
          f"{args.rounds} rounds; {HERE} ({run.git_commit()}) vs {other}")
    print(f"{'backend':<10} {'alg':<6} {'endpoint':<20} {'here req/s':>10} {'other':>8} "
          f"{'ratio':>6} {'here CPU ms':>11} {'other':>7} {'unexpected':>10}")
    for row in rows:
        here, there = row[HERE], row[other]
        print(f"{row['backend']:<10} {row['alg']:<6} {row['endpoint']:<20} "
              f"{here['rps']:>10.0f} {there['rps']:>8.0f} {row['ratio']:>6.2f} "
              f"{here['cpu_ms'] or 0:>11.2f} {there['cpu_ms'] or 0:>7.2f} "
              f"{here['unexpected'] + there['unexpected']:>10}")
    run.RESULTS_DIR.mkdir(exist_ok=True)
    path = run.RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}-compare.json"
    path.write_text(json.dumps({
        "timestamp": when.isoformat(timespec="seconds"), "git_commit": run.git_commit(),
        "against": str(args.against), "concurrency": args.concurrency,
        "seconds": args.seconds, "rounds": args.rounds, "rows": rows,
        "note": "wrk runs on the same machine and shares its CPUs; ratios within this run",
    }, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(run.ROOT)}")
    unexpected = sum(row[label]["unexpected"] for row in rows for label, _ in sides)
    return 0 if unexpected == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("compare: interrupted", file=sys.stderr)
        sys.exit(130)
