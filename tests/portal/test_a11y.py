"""Keyboard and screen-reader basics on every portal page (standard-library HTML parsing).

Every page reachable with a GET, filled with real objects of the org
(``org_objects``), is checked for: ``<html lang>``; exactly one ``<h1>``, the
first heading, and no skipped levels after it; a label for every form control;
an accessible name on every button; ``alt`` on every image; unique ids on
controls; and no control taken out of the tab order.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

import pytest

from tests.factories import make_org, make_user
from tests.portal.conftest import Portal

UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}
CONTROLS = {"input", "select", "textarea"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class A11yChecker(HTMLParser):
    """Collects the problems of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.lang: str | None = None
        self.headings: list[int] = []
        self.label_for: set[str] = set()
        self.label_depth = 0
        self.controls: list[tuple[str, dict[str, str | None], bool]] = []
        self.control_ids: list[str] = []
        self.button: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang") or ""
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        elif tag == "label":
            self.label_depth += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        elif tag == "img" and a.get("alt") is None:
            self.problems.append(f"<img src={a.get('src')!r}> has no alt attribute")
        elif tag == "button":
            self.button = {"attrs": a, "text": ""}
        if tag in CONTROLS:
            self.controls.append((tag, a, self.label_depth > 0))
            if a.get("id") and (a.get("type") or "").lower() not in UNLABELLED_TYPES:
                self.control_ids.append(str(a["id"]))
        if tag in CONTROLS | {"button", "a"} and (a.get("tabindex") or "0").lstrip("-") != "0":
            self.problems.append(f"<{tag} id={a.get('id')!r}> has tabindex={a['tabindex']}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self.label_depth:
            self.label_depth -= 1
        elif tag == "button" and self.button is not None:
            a = self.button["attrs"]
            if not (self.button["text"].strip() or a.get("aria-label") or
                    a.get("aria-labelledby") or a.get("title")):
                self.problems.append(f"<button id={a.get('id')!r}> has no accessible name")
            self.button = None

    def handle_data(self, data: str) -> None:
        if self.button is not None:
            self.button["text"] += data

    def report(self) -> list[str]:
        problems = list(self.problems)
        if not self.lang:
            problems.append("<html> has no lang attribute")
        if self.headings.count(1) != 1:
            problems.append(f"{self.headings.count(1)} <h1> elements, not exactly one")
        if self.headings and self.headings[0] != 1:
            problems.append(f"the first heading is <h{self.headings[0]}>, not <h1>")
        for before, after in zip(self.headings, self.headings[1:], strict=False):
            if after > before + 1:
                problems.append(f"heading levels skip from <h{before}> to <h{after}>")
        for tag, a, wrapped in self.controls:
            if tag == "input" and (a.get("type") or "text").lower() in UNLABELLED_TYPES:
                continue
            labelled = (wrapped or (a.get("id") and a["id"] in self.label_for)
                        or a.get("aria-label") or a.get("aria-labelledby"))
            if not labelled:
                problems.append(f"<{tag} name={a.get('name')!r} id={a.get('id')!r}> has no label")
        duplicates = sorted({i for i in self.control_ids if self.control_ids.count(i) > 1})
        if duplicates:
            problems.append(f"form controls share ids {duplicates}")
        return problems


def page_problems(html: str) -> list[str]:
    checker = A11yChecker()
    checker.feed(html)
    checker.close()
    return checker.report()


def check(response: Any, where: str) -> list[str]:
    return [f"{where}: {problem}" for problem in page_problems(response.get_data(as_text=True))]


# -- the checker itself ------------------------------------------------------------------


@pytest.mark.parametrize(("html", "problem"), [
    ('<html><body><h1>A</h1></body></html>', "no lang attribute"),
    ('<html lang="en"><h1>A</h1><h1>B</h1></html>', "2 <h1> elements"),
    ('<html lang="en"><h2>A</h2><h1>B</h1></html>', "the first heading is <h2>"),
    ('<html lang="en"><h1>A</h1><h3>B</h3></html>', "skip from <h1> to <h3>"),
    ('<html lang="en"><h1>A</h1><input name="q"></html>', "has no label"),
    ('<html lang="en"><h1>A</h1><label for="x">X</label><select id="y"></select></html>',
     "has no label"),
    ('<html lang="en"><h1>A</h1><img src="a.png"></html>', "no alt attribute"),
    ('<html lang="en"><h1>A</h1><button type="submit"> </button></html>', "no accessible name"),
    ('<html lang="en"><h1>A</h1><label for="a">A</label><input id="a">'
     '<label for="a">B</label><input id="a"></html>', "share ids"),
    ('<html lang="en"><h1>A</h1><label for="a">A</label><input id="a" tabindex="-1"></html>',
     "tabindex"),
])
def test_checker_finds_each_problem(html, problem):
    assert any(problem in found for found in page_problems(html)), page_problems(html)


def test_checker_accepts_the_ways_to_label_a_control():
    html = ('<html lang="en"><h1>A</h1><h2>B</h2><h3>C</h3><h2>D</h2>'
            '<label for="a">A</label><input id="a">'
            '<label>B <input name="b"></label>'
            '<textarea aria-label="C"></textarea>'
            '<span id="l">D</span><select aria-labelledby="l"></select>'
            '<input type="hidden" name="csrf_token"><input type="submit" value="Go">'
            '<img src="x.png" alt=""><button>Save<span class="visually-hidden"> it</span></button>'
            '</html>')

    assert page_problems(html) == []


# -- every portal page ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "viewer"])
def test_every_portal_page_meets_the_basics(app, session, org, org_objects, role):
    portal = Portal(app.test_client())
    portal.sign_in(make_user(session, org=org, role=role).email)
    problems = []
    walked = 0
    for url, response in org_objects.pages(app, portal, problems):
        if response.mimetype != "text/html" or response.status_code == HTTPStatus.NOT_FOUND:
            continue  # CSV, JSON; sign-up when it is off
        # A 403 (a viewer on a form page) is checked too: it is a page like any other.
        walked += 1
        if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
            problems.append(f"GET {url}: status {response.status_code}")
        problems += check(response, f"GET {url} as {role}")
    assert walked >= 2
    assert not problems, "\n".join(problems)


def test_sign_in_page_meets_the_basics(client):
    assert not check(client.get("/signin"), "/signin")


def test_error_pages_meet_the_basics(owner, viewer, org_objects):
    responses = {
        "404": owner.get("/no/such/page"),
        "403": viewer.post(f"/members/{org_objects.params['member_id']}/remove"),
        "400 (CSRF)": owner.post("/signout", csrf=False),
    }

    assert [r.status_code for r in responses.values()] == [404, 403, 400]
    assert not [p for name, r in responses.items() for p in check(r, name)]


def test_form_errors_keep_the_basics(owner):
    response = owner.form_post("/members", {"email": "not an email", "role": "viewer"},
                               action="/members/add")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not check(response, "members with errors")


def test_invitation_link_page_meets_the_basics_and_the_field_is_focusable(owner):
    response = owner.form_post("/members", {"email": "new@example.com", "role": "viewer"},
                               action="/members/add")

    assert response.status_code == HTTPStatus.OK
    assert not check(response, "invitation created")
    html = response.get_data(as_text=True)
    field = re.search(r'<input id="invitation-link"[^>]*>', html).group(0)
    assert "readonly" in field and "disabled" not in field and "tabindex" not in field


def test_temporary_password_page_meets_the_basics_and_the_field_is_focusable(
        owner, org_objects):
    member_id = org_objects.params["member_id"]
    response = owner.form_post(f"/members/{member_id}/reset-password", {})

    assert response.status_code == HTTPStatus.OK
    assert not check(response, "password reset")
    html = response.get_data(as_text=True)
    field = re.search(r'<input id="temporary-password"[^>]*>', html).group(0)
    assert "readonly" in field and "disabled" not in field and "tabindex" not in field


class TestSignUpPage:
    @pytest.fixture
    def app_config(self):
        return {"SIGNUP": True}

    def test_sign_up_page_meets_the_basics(self, client):
        assert not check(client.get("/signup"), "/signup")

    def test_sign_up_errors_keep_the_basics(self, app, session):
        make_org(session)
        portal = Portal(app.test_client())
        response = portal.form_post("/signup", {"org_name": "", "email": "x",
                                                "password": "short", "confirm": "other"})

        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert not check(response, "/signup with errors")
