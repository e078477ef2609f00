"""Usage history per hour and per day, from raw events and the pruned hourly summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from tests.factories import make_client, make_org

NOW = datetime(2026, 11, 20, 15, 40, tzinfo=UTC)


def record(session, org, client, kind, when):
    usage.record_event(session, kind=kind, org_id=org.id, client_id=client.id, now=when)


def test_counts_land_in_their_hour_with_empty_hours_kept(session):
    org = make_org(session)
    _, c = make_client(session, org)
    _, other = make_client(session, org)
    for minutes in (0, 5, 59):
        when = NOW.replace(minute=0) + timedelta(minutes=minutes)
        record(session, org, c, UsageKind.TOKEN_ISSUED, when)
    record(session, org, c, UsageKind.TOKEN_FAILED, NOW - timedelta(hours=2))
    record(session, org, other, UsageKind.TOKEN_ISSUED, NOW)
    record(session, org, c, UsageKind.TOKEN_INTROSPECTED, NOW)  # not charted
    session.commit()

    end = NOW.replace(minute=0) + timedelta(hours=1)
    buckets = usage.series(session, org_id=org.id, client_id=c.id,
                           start=NOW - timedelta(hours=3), end=end)

    assert [b.start.hour for b in buckets] == [12, 13, 14, 15]
    assert [(b.issued, b.failed) for b in buckets] == [(0, 0), (0, 1), (0, 0), (3, 0)]
    whole_org = usage.series(session, org_id=org.id, start=NOW.replace(minute=0), end=end)
    assert [b.issued for b in whole_org] == [4]


def test_days_and_the_pruned_summary_count_the_same(session):
    org = make_org(session)
    _, c = make_client(session, org)
    old = NOW - timedelta(days=40)
    for hours in (0, 1, 30):
        record(session, org, c, UsageKind.TOKEN_ISSUED, old + timedelta(hours=hours))
    session.commit()
    window = {"org_id": org.id, "start": old - timedelta(days=1), "end": NOW, "bucket": "day"}
    before = [(b.start, b.issued) for b in usage.series(session, **window) if b.issued]

    usage.prune_events(session, now=NOW, retention_days=30)
    session.commit()

    after = [(b.start, b.issued) for b in usage.series(session, **window) if b.issued]
    assert before == after == [(usage.bucket_start(old, "day"), 2),
                               (usage.bucket_start(old + timedelta(hours=30), "day"), 1)]


def test_other_orgs_are_not_counted(session, tenants):
    org, other = tenants.ours.org, tenants.theirs.org
    _, c = make_client(session, other)
    record(session, other, c, UsageKind.TOKEN_ISSUED, NOW)
    session.commit()
    buckets = usage.series(session, org_id=org.id, start=NOW - timedelta(hours=1), end=NOW)
    assert sum(b.issued for b in buckets) == 0


def test_unknown_bucket_is_refused(session):
    with pytest.raises(ValueError):
        usage.series(session, org_id=1, start=NOW, end=NOW, bucket="week")
