"""The live tests that serve a test's own app (``live_server``) do so on SQLite; the
``latchkey serve`` ones (tests/live/servers.py) choose their databases themselves."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url
