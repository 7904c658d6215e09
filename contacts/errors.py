"""Errors of the contact database.

ContactError
├── InvalidEmail      the address cannot be an email address (shown to the person who typed it)
├── InvalidValue      a text or JSON value drip does not store (``contacts.cleaning``): names
│                     the field, so a door can answer 422 with it
└── NotFound          a contact, message or link that does not exist
"""

from __future__ import annotations

__all__ = ["ContactError", "InvalidEmail", "InvalidValue", "NotFound"]


class ContactError(Exception):
    """Base class for errors of the ``contacts`` package."""


class InvalidEmail(ContactError, ValueError):
    """The given text is not a deliverable-looking email address."""


class InvalidValue(ContactError, ValueError):
    """A value breaks one of ``contacts.cleaning``'s rules; ``field`` is where (``traits.x``,
    ``fields.first_name``), ``reason`` what is wrong with it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field, self.reason = field, reason


class NotFound(ContactError, LookupError):
    """The requested row does not exist."""
