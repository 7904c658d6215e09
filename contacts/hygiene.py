"""Contact hygiene: normalised keys, duplicate detection, and merging two contacts into one.

Normalisation here is for *detection* only: stored addresses keep the form
``repository.normalise_email`` gives them (trimmed, lower-cased), and the keys below live in
memory while duplicates are looked for. Gmail ignores dots in the local part and anything after
a ``+``, so with ``gmail_rules`` ``A.nn+news@googlemail.com`` and ``ann@gmail.com`` are one
mailbox; the rule is optional because a few teams want such aliases kept apart. Phone numbers
(the ``phone`` field) are compared in E.164, parsed with ``phonenumbers`` (Google's
libphonenumber) in the workspace's default region.

Exact duplicates (same normalised email or phone) are groups that may be merged; a similar
first name + last name + company (``difflib``) is only a *suggestion*, shown to a person and
never merged automatically. The merge itself is ``contacts._merge.merge_contacts``, re-exported
here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal

import phonenumbers
from sqlmodel import Session, col, select

from contacts._merge import MergeRefused, MergeResult, is_tombstone, merge_contacts
from contacts.models import Contact

__all__ = [
    "GMAIL_DOMAINS",
    "SUGGESTION_THRESHOLD",
    "DuplicateGroup",
    "MergeRefused",
    "MergeResult",
    "find_duplicates",
    "merge_contacts",
    "normalise_email",
    "normalise_phone",
]

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
#: difflib ratio of "first last | company" from which two contacts are suggested as one person
SUGGESTION_THRESHOLD = 0.88


def normalise_email(email: str, *, gmail_rules: bool) -> str:
    """The detection key of an address: trimmed and lower-cased; with ``gmail_rules``, a Gmail
    address also loses the dots of its local part and anything after ``+``, and
    ``googlemail.com`` becomes ``gmail.com`` (the same mailboxes)."""
    text = (email or "").strip().lower()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    if gmail_rules and domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def normalise_phone(text: str | None, default_region: str | None = "GB") -> str | None:
    """The number in E.164 (``+441632960961``), or None when it is not a possible number.
    A number without a country code is read in ``default_region`` (ISO 3166 alpha-2)."""
    if text is None or not str(text).strip():
        return None
    try:
        number = phonenumbers.parse(str(text), (default_region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class DuplicateGroup:
    """Contacts that look like one person, oldest first (the one a merge keeps).

    ``kind`` is ``exact`` (same normalised email or phone: ``dedupe`` merges these) or
    ``suggestion`` (similar name and company: for a person to decide, never merged
    automatically). ``reasons`` says why, e.g. ``email:ann@gmail.com`` or
    ``phone:+441632960961`` or ``name:0.93``."""

    kind: Literal["exact", "suggestion"]
    contact_ids: list[int]
    emails: list[str]
    reasons: list[str] = field(default_factory=list)
    #: the name similarity of a suggestion (1.0 for exact groups)
    similarity: float = 1.0

    @property
    def keep_id(self) -> int:
        return self.contact_ids[0]


def _name_key(fields: dict[str, Any]) -> str:
    parts = [str(fields.get(k) or "") for k in ("first_name", "last_name")]
    name = re.sub(r"\s+", " ", " ".join(parts)).strip().lower()
    company = re.sub(r"\s+", " ", str(fields.get("company") or "")).strip().lower()
    return f"{name} | {company}" if name else ""


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, ids: Iterable[int]) -> None:
        first, *rest = ids
        for other in rest:
            self.parent[self.find(other)] = self.find(first)


def find_duplicates(
    session: Session,
    *,
    gmail_rules: bool = True,
    default_region: str | None = "GB",
    suggestions: bool = True,
    threshold: float = SUGGESTION_THRESHOLD,
) -> list[DuplicateGroup]:
    """Exact duplicate groups (contacts sharing a normalised email or phone, joined
    transitively: A~B by email and B~C by phone make one group of three), then name+company
    suggestions between contacts not already in one exact group.

    Suggestions compare pairs within blocks of the same first letters of first and last name,
    so the work stays near-linear for real lists; erased and merged contacts are left out."""
    rows = [
        c
        for c in session.exec(select(Contact).order_by(col(Contact.created_at), col(Contact.id)))
        if c.id is not None and not is_tombstone(c)
    ]
    order = {c.id: i for i, c in enumerate(rows)}
    by_id = {c.id: c for c in rows}
    keys: dict[str, list[int]] = defaultdict(list)
    for c in rows:
        assert c.id is not None
        keys[f"email:{normalise_email(c.email, gmail_rules=gmail_rules)}"].append(c.id)
        phone = normalise_phone(_text(c.fields.get("phone")), default_region)
        if phone:
            keys[f"phone:{phone}"].append(c.id)
    union = _Union()
    reasons: dict[int, list[str]] = defaultdict(list)
    for ids in keys.values():
        if len(ids) > 1:
            union.join(ids)
    for key, ids in keys.items():
        if len(ids) > 1:
            reasons[union.find(ids[0])].append(key)
    members: dict[int, list[int]] = defaultdict(list)
    for ids in keys.values():
        if len(ids) > 1:
            for i in ids:
                root = union.find(i)
                if i not in members[root]:
                    members[root].append(i)
    groups: list[DuplicateGroup] = []
    for root, ids in members.items():
        ids.sort(key=order.__getitem__)
        groups.append(
            DuplicateGroup("exact", ids, [by_id[i].email for i in ids], sorted(reasons[root]))
        )
    groups.sort(key=lambda g: order[g.contact_ids[0]])
    if suggestions:
        groups += _suggestions(rows, union, threshold)
    return groups


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _suggestions(rows: list[Contact], union: _Union, threshold: float) -> list[DuplicateGroup]:
    blocks: dict[str, list[tuple[Contact, str]]] = defaultdict(list)
    for c in rows:
        key = _name_key(c.fields)
        if key:
            first = str(c.fields.get("first_name") or " ").strip()[:1].lower()
            last = str(c.fields.get("last_name") or " ").strip()[:1].lower()
            blocks[first + last].append((c, key))
    out: list[DuplicateGroup] = []
    for block in blocks.values():
        for i, (a, ka) in enumerate(block):
            for b, kb in block[i + 1 :]:
                assert a.id is not None and b.id is not None
                if a.id in union.parent and union.find(a.id) == union.find(b.id):
                    continue  # already one exact group
                matcher = SequenceMatcher(None, ka, kb)
                if matcher.quick_ratio() < threshold:
                    continue
                ratio = matcher.ratio()
                if ratio >= threshold:
                    out.append(
                        DuplicateGroup(
                            "suggestion",
                            [a.id, b.id],
                            [a.email, b.email],
                            [f"name:{ratio:.2f}"],
                            round(ratio, 3),
                        )
                    )
    out.sort(key=lambda g: -g.similarity)
    return out
