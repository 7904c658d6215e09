"""The one settings object for every part of drip.

Everything defaults to the embedded dev stack (SQLite under ``.drip/``, the Temporal dev server,
the local SMTP mailbox) and points at the real thing by configuration, so the same code runs on a
laptop and against a Temporal cluster, PostgreSQL and an SMTP relay.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "__version__", "get_settings"]

#: drip's version. It lives here, not in ``drip/__init__.py`` (which re-exports it), because
#: ``drip.settings`` is the one module of ``drip/`` the lower layers may import: the API's
#: ``/healthz`` and metrics, the worker's metrics and its outbound User-Agent all report it.
__version__ = "0.1.0"


class SettingsError(RuntimeError):
    """A configuration that cannot work, e.g. production without a secret key."""


class Settings(BaseSettings):
    """drip's configuration, read from ``DRIP_*`` environment variables (and ``.env``)."""

    model_config = SettingsConfigDict(env_prefix="DRIP_", env_file=".env", extra="ignore")

    env: Literal["dev", "production"] = "dev"
    home: Path = Path(".drip")
    workspace: Path = Path("examples/acme")

    database_url: str = ""

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "drip-journeys"
    temporal_ui_port: int = 8233

    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 30.0
    #: idle connections kept open for reuse (0: a new connection per message)
    smtp_pool_size: int = 10
    #: a pooled connection is closed after this many messages (relays cap it) ...
    smtp_messages_per_connection: int = 100
    #: ... or after this long idle (relays drop idle sessions)
    smtp_idle_seconds: float = 30.0
    #: messages per second handed to the relay by one worker process (0: as fast as it takes
    #: them); relays and ESPs throttle or defer senders that exceed their plan's rate
    smtp_rate_per_second: float = Field(default=0.0, ge=0.0)
    #: SMTP transactions in flight at once from one worker process (relays cap connections)
    smtp_max_connections: int = Field(default=10, ge=1)
    #: How long a stopping worker (SIGTERM, SIGINT) lets the activities it runs finish: sends
    #: already talking to the relay complete, sends still waiting for a connection are handed
    #: back unsent at once. A transaction still running after this is cut off (its email is
    #: marked interrupted, never resent). The process exits a few seconds after it at most, so
    #: the orchestrator's kill timeout (Kubernetes ``terminationGracePeriodSeconds``, systemd
    #: ``TimeoutStopSec``, ``docker stop --time``) must be longer: this plus 15 s or more.
    worker_shutdown_seconds: float = Field(default=30.0, ge=0.0)

    #: Broadcasts (``workflows.broadcast``): recipients per batch activity (claimed, rendered,
    #: sent and recorded together; a retried batch resumes after its last sent recipient), and
    #: how many batches one send runs at once, over all workers (each worker runs those it
    #: picks up: more batches than workers lets every worker's SMTP pool stay busy)
    broadcast_batch_size: int = Field(default=1000, ge=1, le=10_000)
    broadcast_parallel_batches: int = Field(default=4, ge=1, le=64)
    #: batches one run of a send's workflow starts before it continues as new, which keeps
    #: its history bounded however large the audience
    broadcast_batches_per_run: int = Field(default=400, ge=1, le=2000)
    #: a batch whose worker stops heartbeating (killed, lost) for this long is retried by
    #: another worker; the batches heartbeat every 5 s
    broadcast_heartbeat_seconds: float = Field(default=30.0, ge=10.0, le=600.0)
    #: processes a worker renders broadcast emails in, beside its event loop (which keeps the
    #: SMTP connections and the database busy meanwhile); 0 renders in the event loop. Worth it
    #: only with idle cores: on a busy 2-core machine it measured no gain (bench/README.md)
    broadcast_render_processes: int = Field(default=0, ge=0, le=32)

    #: DKIM signing (RFC 6376) of every email, on when a domain, selector and key are set; the
    #: public key goes in DNS at ``{selector}._domainkey.{domain}``. Most relays sign for you.
    dkim_domain: str = ""
    dkim_selector: str = ""
    #: a PEM file: RSA (2048 bits or more) or Ed25519 private key
    dkim_private_key: Path | None = None
    #: the relay signs every message with DKIM for the From domain (Amazon SES, Postmark,
    #: SendGrid, a Postfix with OpenDKIM): drip then does not warn at start that it does not
    #: sign (``drip worker`` warns in production when nobody is said to sign)
    dkim_signed_by_relay: bool = False

    #: soft bounces (mailbox full, message refused) before an address is suppressed; hard
    #: bounces and spam complaints suppress at the first one
    soft_bounce_limit: int = Field(default=3, ge=1)

    #: The attachments of one transactional email (``POST /api/messages``) may add up to this
    #: many bytes, decoded (``contacts.attachments``): they are stored in the database and sent
    #: in every copy, and many relays refuse messages over 10-25 MB. The API's request body
    #: carries them base64-encoded, so ``DRIP_MAX_BODY_BYTES`` (or the route's own limit) must
    #: leave room for about 4/3 of this.
    tx_attachments_max_bytes: int = Field(default=10_000_000, ge=0)
    #: Requests one API key may make to ``POST /api/messages`` and ``/api/messages/batch`` per
    #: minute (a batch is one request), counted in the database so every API process shares
    #: the limit; past it the API answers 429 with ``Retry-After``.
    tx_rate_per_minute: int = Field(default=600, ge=1)

    #: Budget of one template render (subject, preheader, HTML or text part), so one careless
    #: template cannot wedge a worker: a render running longer is stopped, and one producing
    #: more characters (or building a string, number or list that large on the way) is refused;
    #: the send fails with the reason and the author fixes the template.
    template_render_seconds: float = Field(default=2.0, gt=0)
    template_output_chars: int = Field(default=2_000_000, ge=10_000)

    #: ESP webhooks (``/esp/<provider>``): each answers 404 until its credentials are set.
    #: Postmark: the HTTP basic auth user and password put in the webhook URL.
    esp_postmark_user: str = ""
    esp_postmark_password: SecretStr | None = None
    #: Mailgun: the HTTP webhook signing key (HMAC-SHA256 of timestamp and token).
    esp_mailgun_signing_key: SecretStr | None = None
    #: SendGrid: the signed Event Webhook's verification key, base64 DER as SendGrid shows it.
    esp_sendgrid_public_key: str = ""
    #: Amazon SES through SNS: the ARNs of the SNS topics SES publishes to (a JSON list).
    esp_ses_topic_arns: list[str] = []
    #: Hosts trusted for SNS signing certificates besides ``sns.<region>.amazonaws.com``
    #: (tests, or a proxy); fetched with ``DRIP_OUTBOUND_CA_BUNDLE`` trusted too.
    esp_ses_cert_hosts: list[str] = []
    #: Signed webhooks whose signature timestamp is further than this from now are refused.
    esp_max_age_seconds: float = Field(default=300.0, gt=0)

    #: Write keys of the Segment-compatible events API (``/v1/track`` ...), a JSON list; the
    #: API answers 404 while none is set. Several keys let a shop rotate one.
    write_keys: list[SecretStr] = []

    #: An open or click this soon after its email was sent is a scanner or a prefetch (flagged
    #: ``too_soon_after_send``): no person reads and clicks that fast.
    tracking_min_seconds_after_send: float = Field(default=2.0, ge=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://localhost:8000"
    #: posts one IP address may make to one form per minute (counted in the database, so
    #: every API process shares the limit)
    form_rate_per_minute: int = Field(default=10, ge=1)
    #: Reverse proxies (IPs or CIDRs, a JSON list) whose forwarding headers are believed: only
    #: when the peer of a request is one of them are its ``DRIP_PROXY_HEADER`` and
    #: ``X-Forwarded-Proto`` read for the client's address and scheme (walking the hops from
    #: the right, past every trusted proxy). Empty: the peer is the client, whatever it sends.
    trusted_proxies: list[IPvAnyNetwork] = []
    #: The header those proxies write: ``x-forwarded-for`` (nginx, HAProxy, most load
    #: balancers) or ``forwarded`` (RFC 7239). The other one is ignored, since a proxy passes
    #: a header it does not write through unchanged: whatever the client put there.
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"

    #: Operations (``webhooks/routes/operations.py``). Log lines of ``drip api``/``drip worker``:
    #: ``text`` or ``json`` (one object a line); unset: ``json`` in production, ``text`` in dev.
    log_format: Literal["text", "json"] | None = None
    #: Request bodies larger than this are refused with 413 (routes may set lower limits).
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    #: When set, ``GET /metrics`` requires ``Authorization: Bearer <token>``.
    metrics_token: SecretStr | None = None
    #: The worker's metrics (``workflows/metrics.py``), each port off at 0. drip's own series
    #: (sends by outcome, send time, retries, sweeps) at ``/metrics`` and a liveness answer at
    #: ``/healthz`` on ``DRIP_WORKER_METRICS_PORT``; the Temporal SDK's ``temporal_*`` series
    #: from its own exporter on ``DRIP_WORKER_TEMPORAL_METRICS_PORT``. Off by default: two
    #: workers on one host would fight over a default port and the second would not start.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_temporal_metrics_port: int = Field(default=0, ge=0, le=65535)

    secret_key: SecretStr | None = None

    #: How often the worker's Temporal Schedule re-evaluates ``segment_entered`` conditions: a
    #: contact enters a segment at most this long after starting to match it.
    segment_sweep_seconds: float = Field(default=300.0, ge=1.0)

    #: Outgoing webhook events, their deliveries and attempts are deleted this many days after
    #: their last attempt (``contacts/webhook_retention.py``, an hourly Temporal Schedule).
    #: A week: a failing delivery is retried for a day, then its endpoint's owner is emailed;
    #: seven more days cover a weekend and a fix before the failed deliveries can no longer be
    #: resent. Events no endpoint wanted are deleted once dispatched, whatever this says.
    webhook_retention_days: int = Field(default=7, ge=1)

    #: Webhook steps and sales chat alerts POST only to hosts the workspace allowlists, and never
    #: into loopback, private or link-local networks unless one is listed here (CIDRs, e.g. an
    #: internal CRM at ``10.1.2.0/24``).
    outbound_allow_networks: list[str] = []
    #: A CA bundle to trust for outbound HTTPS besides the system's (an internal CA).
    outbound_ca_bundle: Path | None = None

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'drip.db'}"
        self.public_base_url = self.public_base_url.rstrip("/")
        if self.secret_key is None and self.env == "production":
            raise SettingsError("DRIP_SECRET_KEY is required when DRIP_ENV=production")
        return self

    @property
    def mailbox_dir(self) -> Path:
        """Where the dev SMTP mailbox stores every message it receives."""
        return self.home / "mailbox"

    @property
    def temporal_db(self) -> Path:
        return self.home / "temporal.db"

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])

    def secret(self) -> bytes:
        """The signing key for tracking and unsubscribe tokens.

        In dev a key is generated once and kept in ``.drip/secret_key`` so links in emails already
        sent keep working after a restart; production must configure one explicitly.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.home / "secret_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
