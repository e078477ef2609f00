"""Logging: text or one JSON object per line, every line with its request's id.

``LOG_FORMAT`` (``LATCHKEY_LOG_FORMAT``) is ``text`` (the default) or ``json``;
``LOG_LEVEL`` the level of Latchkey's own loggers. One handler on the root
logger writes every record of the worker (Latchkey's, Flask's, SQLAlchemy's,
Alembic's) to standard error in that format. JSON lines have ``time`` (UTC, ISO
8601, milliseconds), ``level``, ``logger``, ``message``, ``request_id`` inside
a request, the access log's fields (:mod:`portal.ops.middleware`), and
``exc_info`` (the traceback as one string) for an exception.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

#: The id of the request this thread is answering (set by the request middleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("latchkey_request_id", default=None)

FORMATS = ("text", "json")
#: Where the access log's fields ride on a log record.
FIELDS_ATTR = "latchkey_fields"


_second: tuple[int, str] = (-1, "")
#: Made once: ``json.dumps`` with arguments builds a new encoder on every call.
_encoder = json.JSONEncoder(separators=(",", ":"), default=str)


def _timestamp(created: float) -> str:
    """``created`` as UTC ISO 8601 with milliseconds (the date part made once a second)."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        fields = getattr(record, FIELDS_ATTR, None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return _encoder.encode(doc)


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message``; tracebacks follow on their own lines."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = REQUEST_ID.get()
        line = (f"{_timestamp(record.created)} {record.levelname} {record.name} "
                f"[{request_id or '-'}] {record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    _latchkey = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # One write of a whole line: standard error is line-buffered, so it is
        # flushed at once, without StreamHandler's separate flush (a second lock).
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``text`` or ``json``."""
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter()


def log_format(config: Mapping[str, Any]) -> str:
    """``LOG_FORMAT`` checked: ``text`` or ``json``."""
    value = str(config.get("LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def configure(config: Mapping[str, Any]) -> None:
    """Install the one stderr handler on the root logger (replacing a previous one)."""
    fmt = log_format(config)
    level = str(config.get("LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"LOG_LEVEL must be a logging level such as INFO, not {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_latchkey", False):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    logging.getLogger("latchkey").setLevel(level)


def server_log_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict giving the HTTP server's own loggers
    (granian's ``_granian`` and ``granian.access``, gunicorn's ``gunicorn.error``)
    Latchkey's format, so every line a deployment prints is in one format."""
    fmt = log_format(config)
    cls = "portal.ops.logs.JsonFormatter" if fmt == "json" else "portal.ops.logs.TextFormatter"
    names = ("_granian", "granian.access", "gunicorn.error")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"latchkey": {"()": cls}},
        "handlers": {"latchkey": {"class": "portal.ops.logs.StderrHandler",
                                  "formatter": "latchkey"}},
        "loggers": {name: {"handlers": ["latchkey"], "level": "INFO", "propagate": False}
                    for name in names},
    }
