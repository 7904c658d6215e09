"""Contacts by the ids other systems know them by, not only by email.

An analytics library (Segment, RudderStack) names a person by ``userId`` (the shop's own id)
or, before they log in, by ``anonymousId`` (a device cookie). drip's contact is keyed by email,
so the first ``identify`` that carries an email stores those ids as the contact's fields
``user_id`` and ``anonymous_id``; later calls that carry only an id find the contact here.

The lookup reads a JSON field, so it has no index: fine for thousands of contacts; a large
audience wants an expression index on ``fields->>'user_id'`` (a migration, not done yet).
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from contacts.models import Contact

__all__ = ["ANONYMOUS_ID_FIELD", "USER_ID_FIELD", "find_by_identity"]

#: The contact fields that hold the external ids (also usable in conditions and templates).
USER_ID_FIELD = "user_id"
ANONYMOUS_ID_FIELD = "anonymous_id"


def find_by_identity(
    session: Session, *, user_id: str | None = None, anonymous_id: str | None = None
) -> Contact | None:
    """The contact with this ``user_id`` or, failing that, this ``anonymous_id``.

    If several contacts carry the id (the person changed their email address), the most
    recently updated one wins: it is the one the latest ``identify`` named.
    """
    for field, value in ((USER_ID_FIELD, user_id), (ANONYMOUS_ID_FIELD, anonymous_id)):
        if not value:
            continue
        found = session.exec(
            select(Contact)
            .where(Contact.fields[field].as_string() == value)
            .order_by(col(Contact.updated_at).desc(), col(Contact.id).desc())
            .limit(1)
        ).first()
        if found is not None:
            return found
    return None
