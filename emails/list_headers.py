"""``List-Id`` (RFC 2919) and ``Feedback-ID`` (Gmail's feedback loop) for the mail a campaign or
a broadcast sends.

Why these two:

- ``List-Id`` names the stream a message belongs to, so receivers (and people's filters) can
  tell our campaigns apart and judge each on its own record, rather than lumping every mail
  from the domain together. Each campaign and each broadcast is its own list:
  ``"Acme Outdoor" <welcome.campaigns.acme.example>``, ``<black-friday.broadcasts.acme.example>``.
  A transactional campaign's mail (a receipt, a password reset) is not list mail, so it gets
  none: a list header invites clients to treat the message as a newsletter.
- ``Feedback-ID: a:b:c:SenderId`` lets Gmail's Postmaster Tools report spam complaints per
  identifier: here the campaign, the step (or the broadcast's A/B variant), the kind of mail,
  and a sender id that stays the same across all our mail. Transactional mail gets one too,
  with its own kind: a receipt stream that draws complaints hurts the domain as much as a
  newsletter, and the feedback loop is the only place that says which stream it is. Gmail
  counts each identifier on its own wherever it appears, so the four fields are built never to
  be equal to each other: campaign ids cannot contain ``.`` or ``/`` (the campaign language
  allows ``[a-z][a-z0-9_-]``), a step is ``campaign/step``, a broadcast ``broadcast.<id>``,
  the kinds ``marketing.journey``, ``marketing.broadcast`` and ``transactional.journey``.

Everything that goes into them comes from the workspace and campaign files, which are checked
when they load; the values are cleaned again here all the same (a header is the one place
where a stray line break becomes a new header): ids keep only ``[a-z0-9_-]``, long ids are
shortened with a hash so two long ids stay different, the display name loses control
characters and is quoted or RFC 2047-encoded. ``emails.message.build_message`` writes the
values and refuses any that could still break the header. Both headers are DKIM-signed
(``emails.dkim.SIGNED_HEADERS``): Gmail ignores a ``Feedback-ID`` that is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

# the Subject's encoder: its words use only what RFC 2047 allows in a phrase (section 5, rule 3)
from emails.message import _encoded_words

__all__ = ["Mailing", "broadcast_mailing", "campaign_mailing", "sender_id"]

#: RFC 2919 section 3: the list-id (what is between ``<>``) is at most 255 octets
_LIST_ID_MAX = 255
#: a list-id's label: one DNS-like label
_LABEL_MAX = 63
#: one field of a Feedback-ID; Gmail gives no limit, this keeps the header on one short line
_FIELD_MAX = 64
#: the display name of a List-Id, in characters before encoding
_NAME_MAX = 80
#: Gmail: "SenderId: mandatory unique identifier (5-15 characters)"
_SENDER_MIN, _SENDER_MAX = 5, 15
_NOT_LABEL = re.compile(r"[^a-z0-9_-]+")
_NOT_FIELD = re.compile(r"[^a-z0-9._/-]+")
_NOT_DOMAIN = re.compile(r"[^a-z0-9.-]+")
_SPACES = re.compile(r"\s+")
#: C0 and C1 controls and DEL: never part of a display name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Mailing:
    """The stream one email belongs to, as receivers are told it: a campaign's or a
    broadcast's. Small and picklable (broadcast render processes get it with their jobs)."""

    #: the ``List-Id`` value, or None (transactional mail)
    list_id: str | None
    #: the Feedback-ID's first field (the campaign or broadcast)
    what: str
    #: its third field (the kind of mail) and fourth (the sender)
    kind: str
    sender: str

    def feedback_id(self, step: str) -> str:
        """``Feedback-ID`` for an email of ``step`` (a journey's step, a broadcast's variant)."""
        return _feedback_id(self.what, step, self.kind, self.sender)


@lru_cache(maxsize=4096)
def _feedback_id(what: str, step: str, kind: str, sender: str) -> str:
    """Cached: a broadcast writes the same few values on every one of its emails."""
    part = _field(f"{what}/{_label(step) or 'step'}")
    return f"{what}:{part}:{kind}:{sender}"


def _shorten(value: str, limit: int) -> str:
    """``value``, or its start and a hash of all of it when it is longer than ``limit``, so
    two long ids that start alike still differ."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return value[: limit - 9].rstrip("-._/") + "-" + digest


def _label(value: str, limit: int = _LABEL_MAX) -> str:
    return _shorten(_NOT_LABEL.sub("-", value.lower()).strip("-"), limit)


def _field(value: str) -> str:
    return _shorten(_NOT_FIELD.sub("-", value.lower()).strip("-./"), _FIELD_MAX)


def _domain(value: str) -> str:
    value = value.strip().rstrip(".")
    with contextlib.suppress(UnicodeError):  # else: what is ASCII of it, below
        value = value.encode("idna").decode("ascii")
    labels = [_NOT_DOMAIN.sub("-", label).strip("-") for label in value.lower().split(".")]
    return ".".join(label for label in labels if label) or "invalid"


def sender_id(domain: str) -> str:
    """The Feedback-ID's SenderId: the sending domain, which stays the same across every
    campaign and broadcast, fitted into Gmail's 5 to 15 characters."""
    name = _domain(domain)
    if len(name) < _SENDER_MIN:
        return (name + "-mail")[:_SENDER_MAX]
    return _shorten(name, _SENDER_MAX)


def _quoted_name(name: str) -> str:
    """A List-Id's display name (RFC 5322 phrase): a quoted string when it is ASCII, else
    RFC 2047 encoded words; control characters dropped, whitespace collapsed."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", name)).strip()[:_NAME_MAX].strip()
    if not text:
        return ""
    if text.isascii():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join(_encoded_words(text))


def _list_id(name: str, label: str, namespace: str) -> str | None:
    room = _LIST_ID_MAX - len(namespace) - 1
    if room < 8:  # a sending domain over 240 characters: no List-Id rather than a wrong one
        return None
    ident = f"{_label(label, min(_LABEL_MAX, room)) or 'list'}.{namespace}"
    phrase = _quoted_name(name)
    return f"{phrase} <{ident}>" if phrase else f"<{ident}>"


@lru_cache(maxsize=1024)
def campaign_mailing(
    workspace_name: str, domain: str, campaign_id: str, *, marketing: bool = True
) -> Mailing:
    """A campaign's journey emails: a List-Id only when they are marketing."""
    sending = _domain(domain)
    what = _field(_label(campaign_id) or "campaign")
    return Mailing(
        list_id=(
            _list_id(workspace_name, campaign_id, f"campaigns.{sending}") if marketing else None
        ),
        what=what,
        kind="marketing.journey" if marketing else "transactional.journey",
        sender=sender_id(domain),
    )


@lru_cache(maxsize=256)
def broadcast_mailing(workspace_name: str, domain: str, broadcast_id: str) -> Mailing:
    """A broadcast's emails: always marketing."""
    sending = _domain(domain)
    return Mailing(
        list_id=_list_id(workspace_name, broadcast_id, f"broadcasts.{sending}"),
        what=_field("broadcast." + (_label(broadcast_id) or "broadcast")),
        kind="marketing.broadcast",
        sender=sender_id(domain),
    )
