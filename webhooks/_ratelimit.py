"""A per-key sliding-window rate limit, in process memory.

Good for one API process (``drip api``): each process counts on its own, so N processes behind a
load balancer allow up to N times the limit. That is enough to stop a script filling a form from
one address; a shared limit would need a shared store (Redis, the database), not worth it yet.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds."""

    #: keys kept at most; past it the idlest are forgotten (a flood of addresses cannot grow
    #: memory without bound, and forgetting only ever lets someone through early)
    MAX_KEYS = 100_000

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        """Count a hit; 0 if allowed, else the seconds until the next one would be."""
        now = self._clock()
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            self._hits[key] = hits  # re-inserted last: dicts keep insertion order, oldest first
            return max(hits[0] + self.window - now, 0.001)
        hits.append(now)
        self._hits[key] = hits
        if len(self._hits) > self.MAX_KEYS:
            del self._hits[next(iter(self._hits))]
        return 0.0

    @staticmethod
    def retry_after(seconds: float) -> str:
        """The ``Retry-After`` header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(seconds)))
