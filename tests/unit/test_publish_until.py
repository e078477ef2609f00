"""How long a retired signing key stays in the JWKS (``signing_keys.publish_until``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from portal.core.signing_keys.services import ROTATION_SLACK, publish_until

RETIRED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_covers_a_token_signed_by_a_stale_process_at_the_end_of_the_cache_window():
    until = publish_until(retired_at=RETIRED_AT, last_expiry=None, cache_seconds=5, max_ttl=3600)

    assert until >= RETIRED_AT + timedelta(seconds=5 + 3600)


def test_is_the_cache_window_plus_the_longest_ttl_plus_the_slack():
    until = publish_until(retired_at=RETIRED_AT, last_expiry=None, cache_seconds=5, max_ttl=86400)

    assert until == RETIRED_AT + timedelta(seconds=5 + 86400) + ROTATION_SLACK
    assert ROTATION_SLACK == timedelta(seconds=60)


def test_a_recorded_token_expiring_later_extends_it():
    later = RETIRED_AT + timedelta(days=3)

    until = publish_until(retired_at=RETIRED_AT, last_expiry=later, cache_seconds=5, max_ttl=300)

    assert until == later


def test_a_recorded_token_expiring_sooner_does_not_shorten_it():
    sooner = RETIRED_AT + timedelta(seconds=10)

    until = publish_until(retired_at=RETIRED_AT, last_expiry=sooner, cache_seconds=5, max_ttl=300)

    assert until == RETIRED_AT + timedelta(seconds=305) + ROTATION_SLACK
