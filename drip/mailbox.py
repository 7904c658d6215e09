"""The dev mailbox moved to ``emails.mailbox`` (the web pages import it, and the web layer may
not import ``drip``); this name stays so existing imports keep working."""

from emails.mailbox import (
    InvalidMessageName,
    MailboxEntry,
    MailboxError,
    MailboxHandler,
    MessageNotFound,
    list_messages,
    message_path,
    read_message,
    read_raw,
    start_mailbox,
    stop_mailbox,
    store_message,
)

__all__ = [
    "InvalidMessageName",
    "MailboxEntry",
    "MailboxError",
    "MailboxHandler",
    "MessageNotFound",
    "list_messages",
    "message_path",
    "read_message",
    "read_raw",
    "start_mailbox",
    "stop_mailbox",
    "store_message",
]
