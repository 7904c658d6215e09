"""The suppression list on SQLite and PostgreSQL: entries in their canonical form, the check of
one address and of a whole batch (addresses, domains and subdomains, role addresses), and CSV
import (bad rows reported by line, the rest imported) and export round-tripping."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from contacts import suppression_csv, suppressions
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.suppressions import InvalidSuppression, SuppressionKind


def test_entries_are_stored_canonical_and_listed_again_with_the_latest_reason(
    any_engine: Engine,
) -> None:
    with session_scope(any_engine) as s:
        row, created = suppressions.add(s, "  Ann@Example.COM ", "asked by phone", "cli")
        assert created and (row.value, row.kind) == ("ann@example.com", "address")
        row, created = suppressions.add(s, "@Competitor.com", "competitor", "api")
        assert created and (row.value, row.kind) == ("competitor.com", "domain")
        row, created = suppressions.add(s, "bücher.de", "", "csv import")
        assert created and row.value == "xn--bcher-kva.de"
        assert row.reason == suppressions.DEFAULT_REASON
        again, created = suppressions.add(s, "ANN@example.com", "legal hold", "dashboard")
        assert not created and (again.reason, again.source) == ("legal hold", "dashboard")
    with session_scope(any_engine) as s:
        listed = suppressions.list_entries(s)
        assert [(r.value, r.reason) for r in listed] == [
            ("ann@example.com", "legal hold"),
            ("competitor.com", "competitor"),
            ("xn--bcher-kva.de", suppressions.DEFAULT_REASON),
        ]
        domains = suppressions.list_entries(s, kind=SuppressionKind.domain, search="COMP")
        assert [r.value for r in domains] == ["competitor.com"]
        assert suppressions.remove(s, "competitor.com").value == "competitor.com"
        with pytest.raises(NotFound, match="not on the suppression list"):
            suppressions.remove(s, "competitor.com")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "an address or a domain is required"),
        ("localhost", "localhost is neither an address nor a domain"),
        ("bad domain.com", "neither an address nor a domain"),
        ("ann@", "ann@: There must be something after the @-sign"),
    ],
)
def test_what_is_neither_an_address_nor_a_domain_is_refused(entry: str, message: str) -> None:
    with pytest.raises(InvalidSuppression, match=message):
        suppressions.parse_entry(entry)


def test_a_reason_with_a_control_character_is_refused(any_engine: Engine) -> None:
    with session_scope(any_engine) as s, pytest.raises(InvalidSuppression, match="control"):
        suppressions.add(s, "ann@example.com", "bad\x1breason", "cli")


def test_a_batch_is_checked_in_one_query_addresses_domains_subdomains_and_roles(
    any_engine: Engine,
) -> None:
    with session_scope(any_engine) as s:
        suppressions.add(s, "ann@example.com", "asked by phone", "cli")
        suppressions.add(s, "competitor.com", "competitor", "cli")
        suppressions.add(s, "boss@competitor.com", "their boss", "cli")
    emails = [
        "ann@example.com",
        "bob@example.com",
        "x@competitor.com",
        "y@uk.competitor.com",
        "boss@competitor.com",
        "z@notcompetitor.com",
        "abuse@example.org",
        "No-Reply@Example.org",
        "info@example.org",
    ]
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(any_engine, "before_cursor_execute", count)
    try:
        with session_scope(any_engine) as s:
            marketing = suppressions.reasons_for(s, emails, roles=True)
    finally:
        event.remove(any_engine, "before_cursor_execute", count)
    assert len([q for q in statements if "suppressions" in q]) == 1
    assert marketing == {
        "ann@example.com": "suppressed: asked by phone",
        "x@competitor.com": "suppressed: competitor",
        "y@uk.competitor.com": "suppressed: competitor",
        "boss@competitor.com": "suppressed: their boss",  # the address's own entry first
        "abuse@example.org": "suppressed: role address",
        "No-Reply@Example.org": "suppressed: role address",
    }
    with session_scope(any_engine) as s:
        transactional = suppressions.reasons_for(s, emails, roles=False)
        assert set(transactional) == {
            "ann@example.com",
            "x@competitor.com",
            "y@uk.competitor.com",
            "boss@competitor.com",
        }
        assert suppressions.reason_for(s, "bob@example.com", roles=True) is None
        assert suppressions.reason_for(s, "postmaster@b.com", roles=False) is None


CSV = (
    "\ufeffemail_or_domain,reason,notes\r\n"
    "ann@example.com,asked by phone,x\r\n"
    "not an address,typo,\r\n"
    "\r\n"
    '@Competitor.com,"competitor, all of it",\r\n'
    '-dash@example.com,"=HYPERLINK(""x"")",\r\n'
    "cy@example.com\r\n"
    ",no address,\r\n"
)


def test_import_reports_bad_rows_by_line_and_export_imports_back_the_same(
    any_engine: Engine,
) -> None:
    with session_scope(any_engine) as s:
        report = suppression_csv.import_csv(s, CSV.encode(), source="csv import")
    assert (report.added, report.updated) == (4, 0)
    assert [str(p) for p in report.invalid] == [
        "line 3: not an address is neither an address nor a domain: "
        "The domain contains invalid characters: SPACE.",
        "line 8: an address or a domain is required",
    ]
    with session_scope(any_engine) as s:
        exported = "".join(suppression_csv.export_csv(s))
        first = [(r.value, r.kind, r.reason) for r in suppressions.list_entries(s)]
    lines = exported.splitlines()
    assert lines[0] == "email_or_domain,kind,reason,source,created_at"
    assert lines[3].startswith('\'-dash@example.com,address,"\'=HYPERLINK(""x"")",csv import,')
    assert first == [
        ("ann@example.com", "address", "asked by phone"),
        ("competitor.com", "domain", "competitor, all of it"),
        ("-dash@example.com", "address", '=HYPERLINK("x")'),
        ("cy@example.com", "address", suppressions.DEFAULT_REASON),
    ]
    with session_scope(any_engine) as s:
        for row in suppressions.list_entries(s):
            suppressions.remove(s, row.value)
    with session_scope(any_engine) as s:
        again = suppression_csv.import_csv(s, exported, source="csv import")
    assert (again.added, again.updated, again.invalid) == (4, 0, [])
    with session_scope(any_engine) as s:
        assert [(r.value, r.kind, r.reason) for r in suppressions.list_entries(s)] == first


def test_a_list_without_header_is_read_and_a_file_that_is_no_list_is_refused_whole(
    any_engine: Engine,
) -> None:
    with session_scope(any_engine) as s:
        report = suppression_csv.import_csv(
            s, "ann@example.com\nbob@example.com,moved\n", source="x"
        )
        assert report.added == 2
        assert suppressions.reason_for(s, "bob@example.com", roles=False) == "suppressed: moved"
    for data, message in [
        (b"name,comment\nann,hi\n", "needs a column named email_or_domain"),
        (b"email\n\xff\xfe\n", "not UTF-8"),
    ]:
        with (
            session_scope(any_engine) as s,
            pytest.raises(suppression_csv.UnreadableCsv, match=message),
        ):
            suppression_csv.import_csv(s, data, source="x")
    with session_scope(any_engine) as s:
        assert len(suppressions.list_entries(s)) == 2
