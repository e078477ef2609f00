"""With ``DEFER_TOKEN_RECORDS`` a token's record is in its process's journal before the
token is answered, and a record a process left there when it died is written by another
(``portal.core.tokens.journal``). ``tests/live/test_ops_shutdown.py`` kills a served
deployment mid-load; here each piece is checked on its own, on both backends.
"""

from __future__ import annotations

import fcntl
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portal.core.tokens import journal as journal_module
from portal.core.tokens.journal import SUFFIX, Journal, decode, encode
from portal.core.tokens.models import TokenSource
from portal.core.tokens.store import EXTENSION_KEY as STORE_KEY
from portal.core.types import utcnow
from tests.factories import basic, get_token, jti_of, token_records

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def extra_config() -> dict[str, Any]:
    return {"WRITE_DELAY_MS": 60_000, "DEFER_TOKEN_RECORDS": True}


def store(app) -> Any:
    return app.extensions[STORE_KEY]


def segments(app) -> list[Path]:
    directory = store(app).journal.directory
    return sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []


def journaled(app) -> list[dict[str, Any]]:
    return [decode(line) for path in segments(app) for line in path.read_bytes().splitlines()]


def as_if_it_died(app) -> list[bytes]:
    """This process's journal lines, as a process that died before its batch leaves
    them; its queue and segments are forgotten (what it had in memory is gone)."""
    lines = [encode(v) for v in journaled(app)]
    store(app).queue._pending.clear()
    for path in segments(app):
        path.unlink()
    store(app).journal.cut()
    return lines


def orphan(app, lines: list[bytes]) -> Path:
    """A segment as a process that died leaves it: named, and held by no one."""
    directory = store(app).journal.directory
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"1-dead{SUFFIX}"
    path.write_bytes(b"".join(lines))
    return path


def a_record(jti: str = "j", **values: Any) -> dict[str, Any]:
    """A token record's values, as the token endpoint journals them."""
    now = utcnow()
    return {"jti": jti, "org_id": 1, "client_id": 1, "subject": "s", "audience": [],
            "scopes": [], "kid": "k", "issued_at": now, "expires_at": now,
            "source": TokenSource.TOKEN_ENDPOINT, **values}


def test_whole_second_times_are_written_as_unix_time_and_read_back_as_they_were():
    """The token endpoint's times are whole seconds: the line carries them as numbers;
    a time with microseconds (and a line an earlier version wrote) is ISO 8601."""
    issued = utcnow().replace(microsecond=0)
    values = a_record(issued_at=issued, expires_at=issued + timedelta(seconds=300))
    line = encode(values)
    assert f'"issued_at":{int(issued.timestamp())},'.encode() in line
    assert decode(line) == values
    assert decode(line)["expires_at"].utcoffset() == timedelta(0)
    older = line.replace(str(int(issued.timestamp())).encode(),
                         f'"{issued.isoformat()}"'.encode())
    assert older != line and decode(older) == values


def test_a_record_round_trips_through_its_line():
    now = utcnow()
    values = a_record(client_id=2, audience=["a"], scopes=["read"], issued_at=now,
                      expires_at=now + timedelta(hours=1))
    line = encode(values)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == values


def test_the_record_is_in_the_journal_before_the_answer_and_leaves_it_once_written(
        app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)

    assert token_records(session) == []
    (line,) = journaled(app)
    assert (line["jti"], line["client_id"], line["org_id"]) == (jti_of(token), c.id, c.org_id)

    store(app).queue.flush()

    assert [r.jti for r in token_records(session)] == [jti_of(token)]
    assert segments(app) == []


def test_a_dead_process_s_records_are_written_and_its_segment_deleted(
        app, client, session, acme):
    secret, c = acme
    # Two tokens of a process that died before its batch: their lines, no records.
    tokens = [get_token(client, c, secret) for _ in range(2)]
    lines = as_if_it_died(app)
    path = orphan(app, lines)

    assert store(app).replay_journal() == 2

    assert sorted(r.jti for r in token_records(session)) == sorted(jti_of(t) for t in tokens)
    assert not path.exists()
    response = client.post("/oauth/introspect", data={"token": tokens[0]},
                           headers=basic(c.public_id, secret))
    assert response.get_json()["active"] is True


def test_a_replayed_record_leaves_one_written_since_as_it_is(app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)
    lines = [encode(v) for v in journaled(app)]
    # Revoked at the endpoint before its batch: the record is written, revoked.
    assert client.post("/oauth/revoke", data={"token": token},
                       headers=basic(c.public_id, secret)).status_code == 200
    orphan(app, lines)

    assert store(app).replay_journal() == 1

    (record,) = token_records(session)
    assert record.jti == jti_of(token) and record.revoked_at is not None


def test_a_live_process_s_segment_is_not_replayed(app, client, session, acme):
    secret, c = acme
    get_token(client, c, secret)
    (held,) = segments(app)  # this process's, held by its queue

    assert store(app).replay_journal() == 0

    assert token_records(session) == [] and held.exists()
    store(app).queue.flush()
    assert len(token_records(session)) == 1 and not held.exists()


def test_the_queue_s_thread_writes_orphans_at_its_first_round(app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)
    lines = as_if_it_died(app)
    orphan(app, lines)
    other = get_token(client, c, secret)  # this process's own, queued

    store(app).queue.tick()

    assert sorted(r.jti for r in token_records(session)) == sorted([jti_of(token), jti_of(other)])
    assert segments(app) == [store(app).journal.current.path]  # the orphan is gone; ours
    # takes records until it is a second old (every one in it is written already)


def test_the_thread_s_rounds_keep_a_segment_for_a_while_then_end_it(app, client, session,
                                                                    acme, monkeypatch):
    """One file for a second of batches, not one per batch; once it has ended and its
    records are all written it is gone, so segments do not pile up."""
    secret, c = acme
    queue = store(app).queue
    issued = [get_token(client, c, secret)]
    queue.tick()
    first = segments(app)
    issued.append(get_token(client, c, secret))
    queue.tick()
    assert segments(app) == first and len(first) == 1

    monkeypatch.setattr(journal_module, "SEGMENT_SECONDS", 0.0)
    issued.append(get_token(client, c, secret))
    queue.tick()

    assert segments(app) == []
    assert sorted(r.jti for r in token_records(session)) == sorted(map(jti_of, issued))
    issued.append(get_token(client, c, secret))  # the next record starts another one
    assert len(segments(app)) == 1 and segments(app) != first


def test_a_line_cut_short_is_skipped_and_the_others_written(app, client, session, acme,
                                                            caplog):
    secret, c = acme
    token = get_token(client, c, secret)
    (line,) = as_if_it_died(app)
    orphan(app, [line, line[:40]])

    with caplog.at_level(logging.ERROR, logger="latchkey.db"):
        assert store(app).replay_journal() == 1

    assert [r.jti for r in token_records(session)] == [jti_of(token)]
    assert "line 2" in caplog.text and "not a record" in caplog.text


def test_without_a_journal_the_record_is_written_before_the_answer(
        app, client, session, acme, tmp_path, caplog):
    secret, c = acme
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store(app).journal.directory = blocker / "journal"  # cannot be made: not a folder

    with caplog.at_level(logging.WARNING, logger="latchkey.db"):
        issued = [get_token(client, c, secret) for _ in range(2)]

    assert [r.jti for r in token_records(session)] == [jti_of(t) for t in issued]
    assert caplog.text.count("the journal cannot be written") == 1  # once, not per token
    assert store(app).queue.flush() == 2  # only their usage events were queued


def test_a_segment_s_lock_is_what_tells_a_live_process_from_a_dead_one(tmp_path):
    journal = Journal(tmp_path)
    segment = journal.append(a_record())
    fd = os.open(segment.path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        written: list[list[dict[str, Any]]] = []
        assert Journal(tmp_path).replay(written.append) == 0 and written == []

        segment.close(delete=False)  # as the kernel does when its process dies
        assert Journal(tmp_path).replay(written.append) == 1
        assert [row["jti"] for rows in written for row in rows] == ["j"]
        assert not segment.path.exists()
    finally:
        os.close(fd)


def test_a_forked_child_writes_a_segment_of_its_own(tmp_path):
    """A worker forked from a process that had a segment must not write to it: the
    parent's lock would keep the child's records from being replayed as its own."""
    journal = Journal(tmp_path)
    parent = journal.append(a_record("parent"))
    pid = os.fork()
    if pid == 0:  # the child: append, then die without closing anything
        try:
            child = journal.append(a_record("child"))
            os._exit(0 if child.path != parent.path else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    written: list[list[dict[str, Any]]] = []
    assert Journal(tmp_path).replay(written.append) == 1  # the dead child's, not ours
    assert [row["jti"] for rows in written for row in rows] == ["child"]
    assert parent.path.exists() and parent.path.read_bytes().count(b"\n") == 1
    parent.close(delete=True)


def test_a_line_written_in_part_ends_its_segment(tmp_path, monkeypatch):
    """A disk that fills up mid-line: the next record goes to a new segment, so replay
    loses only the part line (whose record its caller wrote instead)."""
    journal = Journal(tmp_path)
    first = journal.append(a_record("first"))
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(OSError, match="in part"):
        journal.append(a_record("cut"))
    monkeypatch.setattr(os, "write", real_write)
    after = journal.append(a_record("after"))

    assert after.path != first.path
    first.close(delete=False)
    after.close(delete=False)
    written: list[list[dict[str, Any]]] = []
    assert Journal(tmp_path).replay(written.append) == 2
    assert sorted(row["jti"] for rows in written for row in rows) == ["after", "first"]
