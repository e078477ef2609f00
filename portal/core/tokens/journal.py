"""The token endpoint's records, appended to a file of the process before each answer.

With ``DEFER_TOKEN_RECORDS`` a token's record is written to the database in the
:class:`~portal.core.tokens.store.WriteQueue`'s next batch, after the answer. What
keeps the answer's promise (every token a client received is recorded, whatever
happens to the process) is this journal: the record is appended to a file of the
process (one ``write``, no sync) before the token is answered. A ``kill -9`` of the
process cannot lose what the kernel already has; a crash of the machine can lose its
last moments, as it can lose the database's own (``synchronous=NORMAL``,
``synchronous_commit=off``: ``DURABLE_TOKEN_WRITES``).

Each process writes *segments*: files ``<pid>-<random>.records`` in the journal's
directory, each held with an exclusive ``flock`` while its process lives. The queue
starts a new segment at its first batch after :data:`SEGMENT_SECONDS` (not at every
batch: creating, naming and deleting a file costs the kernel more than the lines it
holds) and deletes a segment once it has ended and every record in it is in the
database. A segment nobody holds is an orphan (its process died):
:meth:`Journal.replay` writes its records (``INSERT … ON CONFLICT (jti) DO NOTHING``:
a record written already stays as it is) and deletes it. ``latchkey serve`` replays
before it starts its workers, and every queue's thread looks for orphans at its first
round and every :data:`ORPHAN_SCAN_SECONDS`, so a worker that died is made good by its
siblings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from portal.core.tokens.models import TokenSource

log = logging.getLogger("latchkey.db")

SUFFIX = ".records"
#: How often a queue looks for the segments of processes that died.
ORPHAN_SCAN_SECONDS = 5.0
#: How long a segment takes new records (:meth:`Journal.rotate`). A process that dies
#: leaves at most this long of records that are in the database already, besides the
#: ones that are not: replay leaves the former as they are.
SEGMENT_SECONDS = 1.0
#: Lines replayed per transaction.
REPLAY_BATCH = 1000
_DATETIMES = ("issued_at", "expires_at")


def journal_dir(base: str | os.PathLike[str], database_url: str) -> Path:
    """The journal's directory for one database: its segments are replayed into that
    database only, whatever else shares ``base`` (the instance folder)."""
    key = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return Path(base) / key


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a value of a token record")


_encode = json.JSONEncoder(separators=(",", ":"), default=_isoformat).encode


def _time(value: datetime) -> int | str:
    # Whole seconds (the token endpoint's times) as Unix time: a third of the line's
    # cost went to writing them in ISO 8601 (bench/README.md, "Ninth session").
    return int(value.timestamp()) if value.microsecond == 0 else value.isoformat()


def encode(values: Mapping[str, Any]) -> bytes:
    """One record as one line (JSON; its times in Unix seconds when they are whole,
    else in ISO 8601)."""
    return (_encode({**values, "issued_at": _time(values["issued_at"]),
                     "expires_at": _time(values["expires_at"])}) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    """A line of :func:`encode` back as the record's values; ``ValueError`` if it is not
    one (a line cut short by a crash of the machine)."""
    values = json.loads(line)
    if not isinstance(values, dict):
        raise ValueError("not a record")
    for key in _DATETIMES:
        value = values[key]
        values[key] = (datetime.fromtimestamp(value, UTC) if type(value) is int
                       else datetime.fromisoformat(value))
    values["source"] = TokenSource(values["source"])
    return values


@dataclass(eq=False, slots=True)
class Segment:
    """One file of the journal, open and locked by this process."""

    path: Path
    fd: int
    started: float  # time.monotonic() when it was made
    unwritten: int = 0  # its records not yet in the database

    def close(self, *, delete: bool) -> None:
        if delete:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


class Journal:
    """A process's segments in ``directory`` (see the module's docstring). Not
    thread-safe: its owner (the queue) calls it under its lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current: Segment | None = None
        self._pid = os.getpid()

    def append(self, values: Mapping[str, Any]) -> Segment:
        """Write one record to the current segment (a new one after :meth:`cut`);
        ``OSError`` when it cannot be written."""
        if self._pid != os.getpid():  # forked: the parent's segment is not ours
            if self.current is not None:
                os.close(self.current.fd)
            self.current, self._pid = None, os.getpid()
        segment = self.current or self._new_segment()
        self.current = segment
        line = encode(values)
        if os.write(segment.fd, line) != len(line):
            # A disk that filled up mid-line: the next line would continue this one, so
            # the segment ends here (replay skips the part line; this record is written
            # by the caller instead).
            self.cut()
            raise OSError("a journal line was written in part")
        segment.unwritten += 1
        return segment

    def cut(self) -> None:
        """End the current segment: the next record starts another."""
        ended, self.current = self.current, None
        if ended is not None and ended.unwritten <= 0:
            ended.close(delete=True)

    def rotate(self) -> None:
        """:meth:`cut` if the current segment is :data:`SEGMENT_SECONDS` old (the
        queue's call at each batch)."""
        current = self.current
        if current is not None and time.monotonic() - current.started >= SEGMENT_SECONDS:
            self.cut()

    def _new_segment(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        # Locked before it is given the name replay looks for, so no one takes it
        # for an orphan.
        temporary = self.directory / f"{name}.new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.directory / f"{name}{SUFFIX}"
            os.rename(temporary, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return Segment(path, fd, time.monotonic())

    def written(self, segments: Sequence[Segment]) -> None:
        """One record of each of ``segments`` (one entry per record) is in the
        database: a segment ended with all of its records written is deleted."""
        for segment in segments:
            segment.unwritten -= 1
        for segment in set(segments):
            if segment.unwritten <= 0 and segment is not self.current:
                segment.close(delete=True)

    def replay(self, write: Callable[[list[dict[str, Any]]], None]) -> int:
        """Write the records of every orphaned segment with ``write`` (a list of record
        values, in one transaction) and delete it; returns how many records. A segment
        that cannot be written now stays for the next time."""
        if not self.directory.is_dir():
            return 0
        for left in self.directory.glob("*.new"):  # a process died while naming it
            _delete_if_unheld(left)
        replayed = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # replayed by another process just now
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its process is alive
                    continue
                with os.fdopen(os.dup(fd), "rb") as stream:
                    rows = _rows(path, stream.read())
                for start in range(0, len(rows), REPLAY_BATCH):
                    write(rows[start:start + REPLAY_BATCH])
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                replayed += len(rows)
            finally:
                os.close(fd)
        if replayed:
            log.warning("token records: %d replayed from the journal of a process that "
                        "stopped (those it had written already are left as they were)",
                        replayed)
        return replayed


def _delete_if_unheld(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _rows(path: Path, data: bytes) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            rows.append(decode(line))
        except (ValueError, KeyError, TypeError):
            log.error("token records: line %d of %s is not a record (cut short by a crash "
                      "of the machine?); skipped", number, path.name)
    return rows
