"""The dev mailbox moved to ``emails.mailbox`` (the web pages import it, and the web layer may
not import ``drip``); this name stays so existing imports keep working."""

from emails.mailbox import *  # noqa: F403  (the same names, listed once, in emails.mailbox)
from emails.mailbox import __all__ as __all__
