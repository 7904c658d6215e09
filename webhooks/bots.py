"""Which user agents are machines: the verdict the hit consumer stores as a hit's ``bot_reason``.

Built on `crawlerdetect <https://pypi.org/project/crawlerdetect/>`_ (the Python port of the
well-kept PHP CrawlerDetect list: security link scanners such as Barracuda, Mimecast or
Proofpoint, HTTP libraries, crawlers), plus our own rules for email:

- Mail providers' **image proxies** that fetch when the reader opens (Gmail's
  ``GoogleImageProxy``, ``YahooMailProxy``) and desktop Outlook (``Microsoft Office``) are on
  crawlerdetect's list, but for us they are a person opening an email: human.
- **Apple Mail Privacy Protection** prefetches every image of every message through Apple's
  proxy, whether or not anyone reads it, announcing itself only as ``Mozilla/5.0``: flagged
  ``apple_mpp`` (a machine open: it proves delivery, not reading).
- **No user agent** at all: every mail client and browser sends one; ``user_agent:none``.

A verdict is ``None`` (human) or ``user_agent:<what matched>`` / ``apple_mpp``. Results are
cached: a mailing sees a few hundred distinct agents, and the regular expressions cost up to a
millisecond on a long one.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from crawlerdetect import CrawlerDetect  # type: ignore[import-untyped]

__all__ = ["classify_user_agent"]

#: On crawlerdetect's list, but a person reading the email (through their provider's proxy).
_HUMAN_VIA = re.compile(r"GoogleImageProxy|YahooMailProxy|Microsoft Office|Microsoft Outlook")
#: Apple's privacy proxy: exactly this, nothing else.
_APPLE_MPP = "Mozilla/5.0"

_detector = CrawlerDetect()
_lock = threading.Lock()  # CrawlerDetect keeps the last match on the instance


@lru_cache(maxsize=4096)
def classify_user_agent(user_agent: str) -> str | None:
    """``None`` for a person's mail client, else why the agent is a machine."""
    agent = user_agent.strip()
    if not agent:
        return "user_agent:none"
    if agent == _APPLE_MPP:
        return "apple_mpp"
    if _HUMAN_VIA.search(agent):
        return None
    with _lock:
        if not _detector.isCrawler(agent):
            return None
        name = _detector.getMatches() or "crawler"
    return f"user_agent:{str(name)[:80]}"
