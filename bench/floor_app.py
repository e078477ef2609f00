"""The floor: a bare Flask endpoint under the same gunicorn settings as ``latchkey serve``.

``bench/run.py`` measures it in every run, and reports each Latchkey endpoint's
throughput as a ratio of it: the framework's ceiling on this machine, so the
ratios can be compared between machines where absolute figures cannot.

    python bench/floor_app.py --port 8000 --workers 4 --threads 4 --worker-class gthread
"""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask, jsonify

FLOOR_PATH = "/floor"


def create_floor_app() -> Flask:
    app = Flask(__name__)

    @app.get(FLOOR_PATH)
    def floor() -> Any:
        """A small JSON document, about the size of the metadata's first lines."""
        return jsonify(status="ok", issuer="http://127.0.0.1", version=1)

    return app


def main() -> None:
    from gunicorn.app.base import BaseApplication

    from portal.cli import WORKER_CLASSES, gunicorn_options

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", choices=WORKER_CLASSES, default="gthread")
    args = parser.parse_args()
    options = gunicorn_options(bind=f"{args.host}:{args.port}", workers=args.workers,
                               threads=args.threads, worker_class=args.worker_class)

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_floor_app()

    Server().run()


if __name__ == "__main__":
    main()
