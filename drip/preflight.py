"""What ``drip worker`` (and ``drip dev``) warn about once, at start: a production deployment
that runs, but whose mail will be trusted less than it should be.

Neither is an error: the mail goes out either way, and a deployment may have reasons (a relay
that signs for us). But both are easy to miss and costly to find out about from a spam folder,
so the warning comes at every start, once, until it is fixed, never once per send:

- ``DRIP_PUBLIC_BASE_URL`` is not ``https://``: every email's unsubscribe, open and click links
  go over plain http. Gmail and Yahoo require a working one-click unsubscribe from bulk
  senders, and mail clients flag or block plain-http links.
- DKIM is not configured (``DRIP_DKIM_*``) and ``DRIP_DKIM_SIGNED_BY_RELAY`` does not say that
  the relay signs: Gmail, Yahoo and Microsoft reject or junk bulk mail without a DKIM
  signature aligned with the From domain.

Only with ``DRIP_ENV=production``, which is how drip knows it is production (it also requires a
secret key there, and writes JSON logs). In development neither is a problem: links point at
``http://localhost``, and the mail stays in the local mailbox, where nobody checks a signature.
That is why ``drip dev``, which refuses ``DRIP_ENV=production`` and a relay that is not on this
machine, says nothing on its defaults: it runs the same check, so it would warn if it were
ever allowed to send for real.

Each problem is one log WARNING (logger ``drip.preflight``; a JSON line with
``DRIP_LOG_FORMAT=json``), after one bold line on the console that says how many there are.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape

from drip.settings import Settings

__all__ = ["deployment_warnings", "warn_at_start"]

log = logging.getLogger("drip.preflight")


def deployment_warnings(settings: Settings) -> list[str]:
    """The problems of this configuration worth a warning at start (none outside production)."""
    if settings.env != "production":
        return []
    problems = []
    url = settings.public_base_url
    if urlsplit(url).scheme.lower() != "https":
        problems.append(
            f"DRIP_PUBLIC_BASE_URL is {url}, not https: the unsubscribe, open and click links "
            "in every email go over plain http, which mail clients flag and Gmail's and "
            "Yahoo's one-click unsubscribe rules do not accept; serve the API over https "
            "(see Behind a reverse proxy) and set DRIP_PUBLIC_BASE_URL=https://..."
        )
    dkim = (settings.dkim_domain, settings.dkim_selector, settings.dkim_private_key)
    if not all(dkim) and not settings.dkim_signed_by_relay:
        problems.append(
            "DKIM is not configured: drip signs nothing (DRIP_DKIM_DOMAIN, DRIP_DKIM_SELECTOR "
            "and DRIP_DKIM_PRIVATE_KEY are unset), and Gmail, Yahoo and Microsoft reject or "
            "junk bulk mail without a DKIM signature for the From domain; run `drip dkim "
            "generate --domain DOMAIN --selector SELECTOR` and publish the record it prints, "
            "or set DRIP_DKIM_SIGNED_BY_RELAY=true if your relay signs the mail"
        )
    return problems


def warn_at_start(settings: Settings, console: Console, command: str) -> list[str]:
    """Print and log :func:`deployment_warnings`, once; call it once, when ``command`` starts."""
    problems = deployment_warnings(settings)
    if problems:
        console.print(
            f"[bold yellow]⚠ {escape(command)}: {len(problems)} warning"
            f"{'s' if len(problems) > 1 else ''} about this production deployment "
            "(below); mail is sent, but trusted less until fixed[/bold yellow]",
            highlight=False,
            soft_wrap=True,
        )
    for problem in problems:
        log.warning("%s", problem)
    return problems
