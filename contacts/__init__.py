"""The contact database: tables, engine and sessions, repository functions and migrations."""

from contacts.db import create_db_engine, migrate, session_scope
from contacts.errors import ContactError, InvalidEmail, NotFound
from contacts.models import (
    Contact,
    ContactStatus,
    Enrolment,
    EnrolmentState,
    Event,
    Link,
    Message,
    MessageState,
)

__all__ = [
    "Contact",
    "ContactError",
    "ContactStatus",
    "Enrolment",
    "EnrolmentState",
    "Event",
    "InvalidEmail",
    "Link",
    "Message",
    "MessageState",
    "NotFound",
    "create_db_engine",
    "migrate",
    "session_scope",
]
