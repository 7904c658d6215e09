"""The dashboard templates' own filters: an address's break points never unescape it, and a
campaign version is shown with exactly one "v"."""

from __future__ import annotations

from markupsafe import Markup

from webhooks.dashboard._render import address, short_version


def test_address_breaks_after_at_and_dots_and_stays_escaped() -> None:
    assert address("ada.lovelace@example.co.uk") == Markup(
        "ada.<wbr>lovelace@<wbr>example.<wbr>co.<wbr>uk"
    )
    shown = address('"<script>"@x.io')
    assert "<script>" not in shown and shown == Markup("&#34;&lt;script&gt;&#34;@<wbr>x.<wbr>io")


def test_short_version_has_one_v() -> None:
    assert short_version("v77cfd3a9b1c2d4e5") == "v77cfd3a…"
    assert short_version("v1") == "v1"  # short versions stay whole
    assert short_version("77cfd3a9b1c2d4e5") == "v77cfd3a…"  # an older row without the v
