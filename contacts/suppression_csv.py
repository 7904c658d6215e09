"""Suppression lists in and out as CSV: ``email_or_domain,reason`` (the CLI, the API and a
spreadsheet all speak it).

An import takes every good row and reports each bad one by its line, rather than refusing the
file: a suppression list is a safety list, and refusing 9,999 good entries because of one typo
would leave all of them mailable until someone fixes the file. A bad row is not an address
drip could send to anyway, so skipping it suppresses nothing less. Only a file that cannot be
read as a list at all (not UTF-8, no column naming the addresses) is refused whole.

The first line is a header when it names a column ``email_or_domain`` (or ``email``, ``email
address``, ``address``, ``domain``), with an optional ``reason``; other columns (an export's
``kind``, ``source``, ``created_at``, another ESP's extras) are ignored. A file whose first
cell is already an address or domain has no header: addresses in the first column, an optional
reason in the second. Listing an entry again replaces its reason.

An export escapes every cell a spreadsheet would run as a formula (``= + - @``, tab, CR: an
address may start with ``-``) with a leading ``'``, and an import takes that ``'`` off again,
so an export imports back to the same entries and reasons.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlmodel import Session

from contacts.suppressions import InvalidSuppression, add, each_entry, parse_entry

__all__ = [
    "COLUMNS",
    "ImportReport",
    "InvalidRow",
    "UnreadableCsv",
    "export_csv",
    "import_csv",
]

COLUMNS = ["email_or_domain", "kind", "reason", "source", "created_at"]
ENTRY_HEADERS = ("email_or_domain", "email", "email address", "email_address", "address", "domain")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class UnreadableCsv(InvalidSuppression):
    """The file is not a list at all: nothing was imported."""


@dataclass
class InvalidRow:
    line: int
    value: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass
class ImportReport:
    added: int = 0
    #: entries already listed: their reason was replaced
    updated: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)


def _cell(text: str) -> str:
    """A cell as typed: our export's formula escape taken off."""
    if text.startswith("'") and text[1:].startswith(FORMULA_PREFIXES):
        return text[1:]
    return text


def _escape(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _columns(first: list[str]) -> tuple[int, int | None, bool]:
    """(entry column, reason column, whether the first row is a header)."""
    names = [c.strip().lower() for c in first]
    for name in ENTRY_HEADERS:
        if name in names:
            reason = names.index("reason") if "reason" in names else None
            return names.index(name), reason, True
    try:
        parse_entry(_cell(first[0]) if first else "")
    except InvalidSuppression:
        raise UnreadableCsv(
            "the first line needs a column named email_or_domain (or email, domain), "
            f"or an address or domain in its first cell; it has: {', '.join(first) or 'nothing'}"
        ) from None
    return 0, 1, False


def import_csv(session: Session, data: bytes | str, *, source: str) -> ImportReport:
    """Add every good row of ``data`` (UTF-8, a byte-order mark allowed) to the list."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnreadableCsv(f"the file is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in data:
        raise UnreadableCsv("the file holds NUL characters: it is not a CSV text file")
    reader = csv.reader(io.StringIO(data.removeprefix("\ufeff")))
    report = ImportReport()
    entry_at: int | None = None
    reason_at: int | None = None
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if entry_at is None:
                entry_at, reason_at, header = _columns(row)
                if header:
                    continue
            value = _cell(row[entry_at]) if entry_at < len(row) else ""
            reason = _cell(row[reason_at]) if reason_at is not None and reason_at < len(row) else ""
            try:
                _, created = add(session, value, reason, source)
            except InvalidSuppression as exc:
                report.invalid.append(InvalidRow(start, value, str(exc)))
                continue
            if created:
                report.added += 1
            else:
                report.updated += 1
    except csv.Error as exc:
        raise UnreadableCsv(f"line {line}: {exc}") from None
    return report


def export_csv(session: Session) -> Iterator[str]:
    """The whole list as CSV text, in pieces (a header, then about a hundred rows a piece)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for n, row in enumerate(each_entry(session), 1):
        writer.writerow(
            [
                _escape(row.value),
                row.kind,
                _escape(row.reason),
                _escape(row.source),
                row.created_at.isoformat(),
            ]
        )
        if n % 100 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
