"""Custom claims that are not plain JSON (NaN, Infinity, 1e999, absurd nesting) are a form
error on the client edit form and the mint form, on SQLite and PostgreSQL: never a 500,
never stored, never signed."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from portal.core.clients.models import Client
from portal.core.tokens.models import IssuedToken
from tests.factories import make_client
from tests.portal.test_client_detail import EDIT, grants, url
from tests.portal.test_mint import mint

BAD_CLAIMS = {
    "NaN": '{"x": NaN}',
    "Infinity": '{"x": Infinity}',
    "-Infinity": '{"x": -Infinity}',
    "1e999": '{"x": 1e999}',
    "3000 deep": '{"x": ' + "[" * 2999 + "]" * 2999 + "}",
    "11 deep": '{"x": ' + "[" * 10 + "]" * 10 + "}",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """These portal tests run on both backends (PostgreSQL's JSON refused NaN with a 500)."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


def claims_error(response) -> str:
    page = html.unescape(response.get_data(as_text=True))
    error = re.search(r'<p class="error" id="custom_claims-error">([^<]*)</p>', page)
    assert error, page[:2000]
    return error.group(1)


@pytest.mark.parametrize("text", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_client_edit_refuses_claims_that_are_not_plain_json(owner, session, org, text):
    _, c = make_client(session, org, name="billing-sync", custom_claims={"tier": "gold"})

    response = owner.form_post(url(c, "/edit"), {**EDIT, **grants(main=["read", "write"]),
                                                  "custom_claims": text})

    assert response.status_code == 400
    assert re.search(r"NaN, Infinity|at most 10 levels deep", claims_error(response))
    session.expire_all()
    assert session.get(Client, c.id).custom_claims == {"tier": "gold"}


@pytest.mark.parametrize("text", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_mint_refuses_claims_that_are_not_plain_json(owner, session, org, text):
    _, c = make_client(session, org, name="billing-sync")

    response = mint(owner, c, custom_claims=text)

    assert response.status_code == 400
    assert re.search(r"NaN, Infinity|at most 10 levels deep", claims_error(response))
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(IssuedToken)) == 0


def test_client_edit_keeps_plain_json_claims_with_nesting_and_numbers(owner, session, org):
    _, c = make_client(session, org, name="billing-sync")
    claims = '{"plan": {"tier": "gold", "limits": [1, 2.5, 1e300]}}'

    response = owner.form_post(url(c, "/edit"), {**EDIT, **grants(main=["read", "write"]),
                                                  "custom_claims": claims})

    assert response.status_code == 302
    session.expire_all()
    assert session.get(Client, c.id).custom_claims == {
        "plan": {"tier": "gold", "limits": [1, 2.5, 1e300]}}
