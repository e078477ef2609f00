"""A token's ``jti`` (``exchange.new_jti``): unique, base64url, and in issue order as text."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

from portal.core.tokens.exchange import new_jti

BASE64URL_24 = re.compile(r"[A-Za-z0-9_-]{24}")
START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_jti_is_24_base64url_characters_with_96_random_bits():
    jtis = [new_jti(START) for _ in range(2000)]  # all in one millisecond
    assert all(BASE64URL_24.fullmatch(jti) for jti in jtis)
    assert len(set(jtis)) == len(jtis)
    # The last 16 characters (96 bits) differ; the first 8 are the millisecond.
    assert {jti[:8] for jti in jtis} == {jtis[0][:8]}
    assert len({jti[8:] for jti in jtis}) == len(jtis)


def test_text_order_is_issue_order_whatever_the_milliseconds():
    # Steps that carry through every one of the eight time characters, and each of the
    # 64 values of the last one (where base64url's own alphabet is out of ASCII order).
    moments = [START + timedelta(milliseconds=ms)
               for ms in [*range(0, 200), *range(1000, 300_000_000, 999_983)]]
    jtis = [new_jti(moment) for moment in moments]
    assert jtis == sorted(jtis)
    assert len(set(jtis)) == len(jtis)


def test_the_time_in_a_jti_is_its_issue_millisecond():
    jti = new_jti(START)
    ordered = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    standard = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    raw = base64.urlsafe_b64decode(jti.translate(str.maketrans(ordered, standard)))
    assert int.from_bytes(raw[:6], "big") == int(START.timestamp() * 1000)
