"""Errors of the contact database.

ContactError
├── InvalidEmail      the address cannot be an email address (shown to the person who typed it)
└── NotFound          a contact, message or link that does not exist
"""

from __future__ import annotations

__all__ = ["ContactError", "InvalidEmail", "NotFound"]


class ContactError(Exception):
    """Base class for errors of the ``contacts`` package."""


class InvalidEmail(ContactError, ValueError):
    """The given text is not a deliverable-looking email address."""


class NotFound(ContactError, LookupError):
    """The requested row does not exist."""
