"""Which ports ``drip dev`` needs, and whether each is free, checked before anything starts.

Finding out after Temporal has started that the API port is taken means tearing half a stack
down and a log line nobody connects to the setting; checking first lets the message name the
port and the environment variable that moves it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from drip.settings import Settings

__all__ = ["LOOPBACK_HOSTS", "PortUse", "dev_ports", "port_is_free", "port_problems"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

#: Temporal and the mailbox are ours in dev and only ever listen on loopback.
_LOCAL = "127.0.0.1"


@dataclass(frozen=True)
class PortUse:
    """One listening socket of the dev stack and the setting that chooses its port."""

    part: str
    host: str
    port: int
    setting: str


def dev_ports(settings: Settings) -> list[PortUse]:
    """Every port the embedded stack listens on (Temporal's HTTP and metrics ports are random;
    the worker's metrics ports only when set)."""
    uses = [
        PortUse("the API", settings.api_host, settings.api_port, "DRIP_API_PORT"),
        PortUse("Temporal", _LOCAL, settings.temporal_port, "DRIP_TEMPORAL_ADDRESS"),
        PortUse("the Temporal UI", _LOCAL, settings.temporal_ui_port, "DRIP_TEMPORAL_UI_PORT"),
        PortUse("the SMTP mailbox", _LOCAL, settings.smtp_port, "DRIP_SMTP_PORT"),
    ]
    host = settings.worker_metrics_host
    if settings.worker_metrics_port:
        uses.append(
            PortUse(
                "the worker's metrics",
                host,
                settings.worker_metrics_port,
                "DRIP_WORKER_METRICS_PORT",
            )
        )
    if settings.worker_temporal_metrics_port:
        uses.append(
            PortUse(
                "the Temporal SDK's metrics",
                host,
                settings.worker_temporal_metrics_port,
                "DRIP_WORKER_TEMPORAL_METRICS_PORT",
            )
        )
    return uses


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now.

    SO_REUSEADDR as servers set it, so a port whose last connection lingers in TIME_WAIT (as
    after stopping ``drip dev``) counts as free, while one with a listener still counts as taken.
    """
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError:
            return False
    return True


def port_problems(uses: list[PortUse]) -> list[str]:
    """One sentence per port that cannot be used, each naming the setting to change."""
    problems: list[str] = []
    seen: dict[int, PortUse] = {}
    for use in uses:
        if not 0 < use.port < 65536:
            problems.append(f"port {use.port} is not a valid port ({use.setting})")
        elif use.port in seen:
            first = seen[use.port]
            problems.append(
                f"port {use.port} is set for both {first.part} ({first.setting}) and "
                f"{use.part} ({use.setting}); give each its own port"
            )
        elif not port_is_free(use.host, use.port):
            seen[use.port] = use
            problems.append(
                f"port {use.port} is taken ({use.setting}): {use.part} cannot listen on "
                f"{use.host}:{use.port}; stop what uses it or set {use.setting} to a free port"
            )
        else:
            seen[use.port] = use
    return problems
