"""Host allowlists as the workspace writes them (``webhook_hosts``): one matching rule for the
validator, which refuses a campaign at load time, and for the outbound HTTP guard, which refuses
the request at run time, so the two can never disagree."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["host_allowed", "normalise_host"]


def normalise_host(host: str) -> str:
    """Lower case, no trailing dot or IPv6 brackets, IP addresses in their compressed form."""
    host = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` matches an exact entry or a ``*.example.com`` wildcard (any subdomain
    at any depth, not example.com itself)."""
    host = normalise_host(host)
    for entry in patterns:
        pattern = normalise_host(entry)
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False
