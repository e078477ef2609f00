"""The org audit log: newest first, paged, filtered by actor, action, target and dates."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import delete

from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.audit.models import AuditEntry
from portal.core.types import utcnow


def entry(session, org, action="client:created", *, actor="user:ana@acme.test",
          target="lkc_one", ago=timedelta(minutes=5), **details):
    made = audit.record(session, org_id=org.id, actor=Actor(actor, "203.0.113.7"), action=action,
                        target_type=action.split(":")[0], target_id=target, details=details,
                        now=utcnow() - ago)
    session.commit()
    return made


def targets(page: str) -> list[str]:
    return re.findall(r"<code>(t-[^<]+)</code>", page)


@pytest.mark.parametrize("portal_name", ["owner", "admin", "viewer"])
def test_log_shows_the_orgs_entries_newest_first(request, session, org, other_org, portal_name):
    portal = request.getfixturevalue(portal_name)
    entry(session, org, target="t-older", ago=timedelta(hours=2), name="billing")
    entry(session, org, "token:minted", target="t-newer", scopes=["read", "write"], ttl=900)
    entry(session, other_org, target="t-theirs", actor="user:spy@globex.test")

    response = portal.get("/audit")

    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    assert targets(page) == ["t-newer", "t-older"]
    assert "spy@globex.test" not in page
    assert "scopes: read, write" in page and "ttl: 900" in page and "name: billing" in page
    assert "203.0.113.7" in page and "user:ana@acme.test" in page


def test_empty_state(owner, session, org):
    session.execute(delete(AuditEntry))
    session.commit()

    assert "Nothing has been recorded yet" in owner.get("/audit").get_data(as_text=True)


def test_filter_matching_nothing_says_so(owner):
    page = owner.get("/audit?actor=nobody-at-all").get_data(as_text=True)

    assert "No audit entries match these filters" in page


def test_filter_by_actor_action_target_and_dates(owner, session, org):
    entry(session, org, "client:created", actor="user:ana@acme.test", target="t-ana")
    entry(session, org, "client:secret:added", actor="api_key:Ab12", target="t-key")
    entry(session, org, "token:revoked", actor="user:bo@acme.test", target="t-bo")
    old = entry(session, org, "client:created", actor="cli", target="t-old", ago=timedelta(days=40))
    day = old.occurred_at.date()

    by_actor = owner.get("/audit?actor=ANA@").get_data(as_text=True)
    by_action = owner.get("/audit?action=token:revoked").get_data(as_text=True)
    by_group = owner.get("/audit?action=client:").get_data(as_text=True)
    by_target = owner.get("/audit?target=t-key").get_data(as_text=True)
    by_date = owner.get(f"/audit?start={day}&end={day}").get_data(as_text=True)

    assert targets(by_actor) == ["t-ana"]
    assert targets(by_action) == ["t-bo"]
    assert targets(by_group) == ["t-key", "t-ana", "t-old"]
    assert targets(by_target) == ["t-key"]
    assert targets(by_date) == ["t-old"]


def test_actor_filter_treats_wildcards_literally(owner, session, org):
    entry(session, org, actor="user:ana@acme.test", target="t-ana")

    page = owner.get("/audit?actor=%25").get_data(as_text=True)

    assert targets(page) == []


def test_action_filter_offers_actions_in_use_and_groups(owner, session, org):
    entry(session, org, "client:created", target="t-1")
    entry(session, org, "token:minted", target="t-2")

    page = owner.get("/audit").get_data(as_text=True)

    assert '<option value="client:created">client:created</option>' in page
    assert '<option value="token:">Every token action</option>' in page
    for field in ("actor", "action", "target", "start", "end"):
        assert f'<label for="{field}"' in page


def test_entries_are_paged_keeping_the_filters(owner, session, org):
    for i in range(55):
        entry(session, org, "token:minted", target=f"t-{i:02d}", ago=timedelta(minutes=i + 1))

    first = owner.get("/audit?action=token:minted").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = owner.get(older).get_data(as_text=True)

    assert targets(first) == [f"t-{i:02d}" for i in range(50)]
    assert "action=token" in older and "page=2" in older
    assert targets(second) == [f"t-{i:02d}" for i in range(50, 55)]


@pytest.mark.parametrize(("query", "message"), [
    ("start=not-a-date", "Not a valid date value."),
    ("start=2024-03-02&end=2024-03-01", "The “to” date is before the “from” date."),
    ("actor=" + "x" * 201, "Field cannot be longer than 200 characters."),
])
def test_bad_filters_are_a_form_error(owner, query, message):
    response = owner.get(f"/audit?{query}")

    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
