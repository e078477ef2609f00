"""The usage history page (chart, totals, filtered and paged events) and its CSV export."""

from __future__ import annotations

import csv
import io
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from tests.factories import make_client


@pytest.fixture
def billing(session, org):
    _, client = make_client(session, org, name="billing")
    return client


@pytest.fixture
def reports(session, org):
    _, client = make_client(session, org, name="reports")
    return client


def record(session, client, kind=UsageKind.TOKEN_ISSUED, *, ago=timedelta(minutes=5), **kwargs):
    kwargs.setdefault("client_ref", client.public_id)
    event = usage.record_event(session, kind=kind, org_id=client.org_id, client_id=client.id,
                               now=utcnow() - ago, **kwargs)
    session.commit()
    return event


def jtis(page: str) -> list[str]:
    return re.findall(r"<td><code>(jti-[^<]+)</code></td>", page)


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


# -- the page -------------------------------------------------------------------------


@pytest.mark.parametrize("portal_name", ["owner", "admin", "viewer"])
def test_everyone_in_the_org_reads_the_usage(request, session, billing, portal_name):
    portal = request.getfixturevalue(portal_name)
    record(session, billing, jti="jti-one", source_ip="203.0.113.7")
    record(session, billing, UsageKind.TOKEN_FAILED, reason="invalid_client: bad secret")

    response = portal.get("/usage")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<h1>Usage</h1>" in page
    assert 'id="total-issued">1<' in page and 'id="total-failed">1<' in page
    assert "jti-one" in page and "203.0.113.7" in page and "invalid_client: bad secret" in page
    assert 'class="badge badge-token_failed"' in page
    assert 'data-chart-table="org-usage-table"' in page  # the chart, drawn from its table


def test_empty_state_when_there_are_no_events(owner):
    page = owner.get("/usage").get_data(as_text=True)

    assert "No events match these filters" in page
    assert 'id="total-issued">0<' in page


def test_another_orgs_events_are_not_shown(owner, session, other_org, billing):
    _, theirs = make_client(session, other_org, name="globex")
    record(session, theirs, jti="jti-theirs", source_ip="198.51.100.9")
    record(session, billing, jti="jti-ours")

    page = owner.get("/usage").get_data(as_text=True)

    assert jtis(page) == ["jti-ours"]
    assert "198.51.100.9" not in page and "globex" not in page


def test_filter_by_client_kind_and_outcome(owner, session, billing, reports):
    record(session, billing, jti="jti-billing-issued")
    introspected = UsageKind.TOKEN_INTROSPECTED
    record(session, billing, introspected, reason="inactive", jti="jti-billing-inactive")
    record(session, billing, introspected, reason="active", jti="jti-billing-active")
    record(session, reports, jti="jti-reports-issued")

    by_client = owner.get(f"/usage?client={billing.public_id}").get_data(as_text=True)
    by_kind = owner.get("/usage?kind=token_issued").get_data(as_text=True)
    failed = owner.get("/usage?outcome=failed").get_data(as_text=True)
    ok = owner.get(f"/usage?outcome=ok&client={billing.public_id}").get_data(as_text=True)

    assert sorted(jtis(by_client)) == ["jti-billing-active", "jti-billing-inactive",
                                       "jti-billing-issued"]
    assert "<h1>Usage of billing</h1>" in by_client
    assert sorted(jtis(by_kind)) == ["jti-billing-issued", "jti-reports-issued"]
    assert jtis(failed) == ["jti-billing-inactive"]
    assert sorted(jtis(ok)) == ["jti-billing-active", "jti-billing-issued"]


def test_filter_by_period_and_dates(owner, session, billing):
    record(session, billing, jti="jti-now", ago=timedelta(hours=1))
    record(session, billing, jti="jti-3-days", ago=timedelta(days=3))
    old = record(session, billing, jti="jti-20-days", ago=timedelta(days=20))
    day = old.occurred_at.date()

    last_day = owner.get("/usage").get_data(as_text=True)
    week = owner.get("/usage?period=7d").get_data(as_text=True)
    month = owner.get("/usage?period=30d").get_data(as_text=True)
    that_day = owner.get(f"/usage?start={day}&end={day}").get_data(as_text=True)

    assert jtis(last_day) == ["jti-now"]
    assert jtis(week) == ["jti-now", "jti-3-days"]
    assert jtis(month) == ["jti-now", "jti-3-days", "jti-20-days"]
    assert jtis(that_day) == ["jti-20-days"]


def test_chart_buckets_by_hour_up_to_two_days_then_by_day(owner, session, billing):
    record(session, billing)
    hourly = owner.get("/usage").get_data(as_text=True)
    daily = owner.get("/usage?period=7d").get_data(as_text=True)
    forced = owner.get("/usage?period=7d&bucket=hour").get_data(as_text=True)

    assert "<th scope=\"col\">Hour (UTC)</th>" in hourly
    assert "<th scope=\"col\">Day (UTC)</th>" in daily
    assert "<th scope=\"col\">Hour (UTC)</th>" in forced


def test_events_are_paged_newest_first_keeping_the_filters(owner, session, billing, reports):
    for i in range(60):
        record(session, billing, jti=f"jti-{i:02d}", ago=timedelta(minutes=i + 1))
    record(session, reports, jti="jti-other-client")

    first = owner.get(f"/usage?client={billing.public_id}").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = owner.get(older).get_data(as_text=True)

    assert jtis(first) == [f"jti-{i:02d}" for i in range(50)]
    assert f"client={billing.public_id}" in older and "page=2" in older
    assert jtis(second) == [f"jti-{i:02d}" for i in range(50, 60)]
    assert 'rel="prev"' in second and 'rel="next"' not in second


@pytest.mark.parametrize(("query", "message"), [
    ("client=lkc_nobody", "No client of this organisation has that ID."),
    ("start=yesterday", "Not a valid date value."),
    ("start=2024-02-30", "Not a valid date value."),
    ("start=2024-03-02&end=2024-03-01", "The “to” date is before the “from” date."),
    ("start=2023-01-01&end=2024-12-31", "Choose at most 400 days at a time."),
    ("start=0001-01-01", "Choose a date between 1970 and 9000."),
    ("start=2024-01-01&end=2024-03-01&bucket=hour", "Hourly charts cover at most 31 days"),
    ("kind=token_stolen", "Not a valid choice"),
    ("period=forever", "Not a valid choice"),
])
def test_bad_filters_are_a_form_error(owner, query, message):
    response = owner.get(f"/usage?{query}")

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page
    assert "These filters cannot be used" in page


def test_another_orgs_client_is_an_unknown_client(owner, session, other_org):
    _, theirs = make_client(session, other_org)

    response = owner.get(f"/usage?client={theirs.public_id}")

    assert response.status_code == 400
    assert "No client of this organisation has that ID." in response.get_data(as_text=True)


def test_page_links_to_the_csv_with_the_same_filters(owner, billing):
    page = owner.get(f"/usage?client={billing.public_id}&kind=token_failed").get_data(as_text=True)

    link = re.search(r'<a [^>]*href="(/usage\.csv[^"]*)"[^>]*>Download CSV</a>', page)
    assert link
    assert f"client={billing.public_id}" in link.group(1) and "kind=token_failed" in link.group(1)


# -- CSV ------------------------------------------------------------------------------


def test_csv_has_a_header_row_and_one_row_per_event(owner, session, billing, org):
    event = record(session, billing, UsageKind.TOKEN_FAILED, reason="invalid_scope: nope",
                   source_ip="203.0.113.7", jti=None)
    record(session, billing, jti="jti-ok", ago=timedelta(minutes=1))

    response = owner.get("/usage.csv")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    today = utcnow().strftime("%Y%m%d")
    assert disposition.startswith("attachment; filename=\"latchkey-usage-")
    assert disposition.endswith(f'{today}.csv"')
    rows = csv_rows(response)
    assert rows[0] == ["occurred_at", "client_id", "client_name", "kind", "reason",
                       "source_ip", "jti", "scope", "audience", "caller", "caller_name"]
    assert rows[1] == [rows[1][0], billing.public_id, "billing", "token_issued", "", "", "jti-ok",
                       "", "", billing.public_id, "billing"]
    assert rows[2] == [event.occurred_at.isoformat().replace("+00:00", "Z"), billing.public_id,
                       "billing", "token_failed", "invalid_scope: nope", "203.0.113.7", "",
                       "", "", billing.public_id, "billing"]
    assert len(rows) == 3


def test_csv_applies_the_filters_and_the_org(owner, session, billing, reports, other_org):
    _, theirs = make_client(session, other_org)
    record(session, billing, jti="jti-billing")
    record(session, reports, jti="jti-reports")
    record(session, theirs, jti="jti-theirs")

    everything = csv_rows(owner.get("/usage.csv"))
    one_client = csv_rows(owner.get(f"/usage.csv?client={reports.public_id}"))

    assert sorted(r[6] for r in everything[1:]) == ["jti-billing", "jti-reports"]
    assert [r[6] for r in one_client[1:]] == ["jti-reports"]


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://evil.test")', "+1+1", "-2+3",
                                     "@SUM(A1)", "\t=1"])
def test_csv_cells_never_start_a_formula(owner, session, org, payload):
    usage.record_event(session, kind=UsageKind.TOKEN_FAILED, org_id=org.id,
                       client_ref=payload, reason=payload)
    session.commit()

    rows = csv_rows(owner.get("/usage.csv"))

    assert rows[1][1] == "'" + payload and rows[1][4] == "'" + payload


def test_csv_with_bad_filters_is_a_form_error(owner):
    response = owner.get("/usage.csv?start=2024-03-02&end=2024-03-01")

    assert response.status_code == 400
    assert "text/html" in response.content_type


def test_viewer_can_export_csv(viewer, session, billing):
    record(session, billing, jti="jti-one")

    response = viewer.get("/usage.csv")

    assert response.status_code == 200 and len(csv_rows(response)) == 2


def test_csv_stops_at_its_row_cap_with_a_note(owner, session, billing, monkeypatch):
    from portal.views import usage as usage_views

    monkeypatch.setattr(usage_views, "CSV_MAX_ROWS", 3)
    for i in range(5):
        record(session, billing, jti=f"jti-{i}", ago=timedelta(minutes=i + 1))

    rows = csv_rows(owner.get("/usage.csv"))

    assert [r[6] for r in rows[1:4]] == ["jti-0", "jti-1", "jti-2"]
    assert rows[4][0].startswith("# export stopped at 3 rows")
    assert len(rows) == 5


def test_csv_export_leaves_no_transaction_open(owner, session, billing):
    """The body streams after the request's teardown; it must not hold the SQLite write lock."""
    import sqlite3

    from portal.core.db import get_engine

    for n in range(3):
        record(session, billing, jti=f"jti-{n}")
    session.close()
    # In a thread of its own, the request gets its own app context, torn down as
    # in production (here, requests share the test's context and its session).
    with ThreadPoolExecutor(1) as pool:
        rows = pool.submit(lambda: csv_rows(owner.get("/usage.csv"))).result()
    assert len(rows) == 4

    other = sqlite3.connect(get_engine().url.database, timeout=0.2)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if the export still holds it
        other.rollback()
    finally:
        other.close()


# -- who each event names; totals of every kind; the empty chart ---------------------------


def test_events_name_the_caller_and_the_token_client(owner, session, billing, reports):
    record(session, billing, UsageKind.TOKEN_INTROSPECTED, client_ref=f"client:{reports.public_id}",
           reason="active", jti="jti-theirs")
    usage.record_event(session, kind=UsageKind.TOKEN_INTROSPECTED, org_id=billing.org_id,
                       client_ref=f"client:{reports.public_id}", reason="inactive",
                       now=utcnow() - timedelta(minutes=1))
    session.commit()

    page = owner.get(f"/usage?client={reports.public_id}").get_data(as_text=True)

    cells = re.findall(r'<td class="usage-party">(.*?)</td>', page)
    link = f'<a href="/clients/{reports.public_id}">reports</a>'
    # newest first: the inactive one (caller named, token not recognised), then the active one
    assert cells[:2] == [link, '<span class="muted">not recognised</span>']
    assert cells[2:4] == [link, f'<a href="/clients/{billing.public_id}">billing</a>']
    assert f"client:{reports.public_id}" not in page


def test_totals_show_introspections_and_revocations(owner, session, billing):
    record(session, billing)
    record(session, billing, UsageKind.TOKEN_INTROSPECTED, client_ref=f"client:{billing.public_id}")
    record(session, billing, UsageKind.TOKEN_INTROSPECTED, client_ref="api_key:abcd")
    record(session, billing, UsageKind.TOKEN_REVOKED, client_ref="user:a@example.com")

    page = owner.get("/usage").get_data(as_text=True)

    assert 'id="total-issued">1<' in page and 'id="total-failed">0<' in page
    assert 'id="total-introspected">2<' in page and 'id="total-revoked">1<' in page


def test_a_chart_with_nothing_to_draw_says_so(owner, session, billing):
    record(session, billing, UsageKind.TOKEN_INTROSPECTED)  # not charted

    page = owner.get("/usage").get_data(as_text=True)
    detail = owner.get(f"/clients/{billing.public_id}").get_data(as_text=True)

    assert "No token requests in this period yet." in page
    assert "No token requests in the last 24 hours yet." in detail
    assert "data-chart-table" not in page + detail  # no empty axis to draw
