"""DKIM signing (RFC 6376) of outgoing messages with an RSA or Ed25519 (RFC 8463) key.

Optional: most relays and ESPs sign for you. When ``DRIP_DKIM_DOMAIN``, ``DRIP_DKIM_SELECTOR``
and ``DRIP_DKIM_PRIVATE_KEY`` are all set, :meth:`DkimSigner.from_settings` builds a signer once
(at worker start-up) and every message goes through :meth:`DkimSigner.sign` before SMTP.

Why it is built the way it is:

- The key is read, checked (type, size) and used for a test signature that dkimpy verifies
  against the key's own DNS record, all in the constructor, so a bad key stops the worker with a
  message naming the setting instead of failing every send.
- Relaxed/relaxed canonicalisation survives the whitespace changes relays make. ``h=`` always
  lists the same headers, including ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058
  section 4 requires them signed), ``List-Id`` and ``Feedback-ID`` (Gmail ignores an unsigned
  Feedback-ID), whether or not the message has them: a listed header that is absent is signed
  as empty, so nobody can add a ``Reply-To``, an unsubscribe link or a list to a replayed copy
  (RFC 6376 section 5.4.2). ``From`` is listed twice, so adding a second ``From``
  breaks the signature.
- dkimpy does all of DKIM, but computes RSA signatures in pure Python: about 6 ms per message
  with a 2048-bit key, six times the whole per-message budget of the send path. For RSA keys
  only the private-key operation is handed to OpenSSL (through ``cryptography``), which is some
  25 times faster and brings a whole ``sign`` under a millisecond. RSASSA-PKCS1-v1_5 is
  deterministic, so the signature is byte for byte the one dkimpy computes itself (a test
  checks that); if a future dkimpy breaks the hand-over, the start-up test signature fails to
  verify and the signer falls back to dkimpy's own RSA, with a warning.
"""

from __future__ import annotations

import base64
import logging
import re
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, NamedTuple

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from drip.settings import SettingsError

if TYPE_CHECKING:
    from drip.settings import Settings

__all__ = ["SIGNED_HEADERS", "DkimSigner"]

log = logging.getLogger(__name__)

#: The ``h=`` list, in order; ``from`` twice so that a second From cannot be added.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"feedback-id",
    b"from",
)

_RSA_MIN_BITS = 1024  # RFC 8301 section 3.2: signers MUST use at least 1024 bits ...
_RSA_GOOD_BITS = 2048  # ... and SHOULD use at least 2048
_RSA_MAX_BITS = 4096  # verifiers need only handle keys up to 4096 bits (RFC 8301 section 3.2)
_FROM_CACHE_SIZE = 1024
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SETTING = {
    "domain": "DRIP_DKIM_DOMAIN",
    "selector": "DRIP_DKIM_SELECTOR",
    "key": "DRIP_DKIM_PRIVATE_KEY",
}

#: Signed and verified once when a signer is built, so a key that cannot sign fails at start-up.
_PROBE = (
    b"From: DKIM self-test <dkim-test@{domain}>\r\n"
    b"To: nobody@example.invalid\r\n"
    b"Subject: DKIM self-test\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    b"Message-ID: <dkim-self-test@{domain}>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://{domain}/u/test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"\r\n"
    b"A message signed and verified once when the DKIM signer starts.\r\n"
)


class DkimSigner:
    """Signs messages for ``domain`` with the key published at ``{selector}._domainkey.{domain}``.

    ``private_key_pem`` is an unencrypted PEM private key (PKCS#1 or PKCS#8): RSA of 1024 to 4096
    bits (2048 or more recommended; below 2048 logs a warning) or Ed25519. The algorithm follows
    from the key. Raises ``ValueError`` for a bad domain, selector or key. Thread-safe.
    """

    def __init__(self, *, domain: str, selector: str, private_key_pem: bytes) -> None:
        self.domain = _dns_name(domain, "domain")
        self.selector = _dns_name(selector, "selector")
        key = _load_private_key(private_key_pem)
        self._rsa_key: rsa.RSAPrivateKey | None = None
        self._fast_rsa = False
        if isinstance(key, rsa.RSAPrivateKey):
            self.algorithm = "rsa-sha256"
            self.key_bits = key.key_size
            self._rsa_key = key
            self._fast_rsa = True
            # dkimpy parses the key on every call: give it the form its parser reads directly.
            self._dkimpy_key = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self._record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
        else:
            self.algorithm = "ed25519-sha256"
            self.key_bits = 256
            # dkimpy wants the 32-byte seed, base64-encoded (RFC 8463's private key form).
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            self._dkimpy_key = base64.b64encode(seed)
            public = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            self._record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
        self._algorithm = self.algorithm.encode()
        self._domain = self.domain.encode()
        self._selector = self.selector.encode()
        self._aligned_from: set[bytes] = set()  # raw From values already found aligned
        self._warned_from: set[str] = set()  # misaligned From domains already warned about
        self._self_test()

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The signer the settings describe; None when DKIM is not configured.

        Raises :class:`drip.settings.SettingsError`, naming the setting, when only some of the
        three settings are set or one of them cannot work (bad name, unreadable or unusable key).
        """
        values = {
            "domain": settings.dkim_domain.strip(),
            "selector": settings.dkim_selector.strip(),
            "key": str(settings.dkim_private_key or "").strip(),
        }
        if not any(values.values()):
            return None
        missing = [_SETTING[name] for name, value in values.items() if not value]
        if missing:
            given = [_SETTING[name] for name, value in values.items() if value]
            raise SettingsError(
                f"DKIM signing needs {', '.join(_SETTING.values())} together: "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
                f"(but {' and '.join(given)} {'is' if len(given) == 1 else 'are'})"
            )
        for name in ("domain", "selector"):
            try:
                _dns_name(values[name], name)
            except ValueError as exc:
                raise SettingsError(f"{_SETTING[name]}: {exc}") from None
        path = settings.dkim_private_key
        assert path is not None
        try:
            pem = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SettingsError(f"{_SETTING['key']}: cannot read {path}: {reason}") from None
        try:
            return cls(domain=values["domain"], selector=values["selector"], private_key_pem=pem)
        except ValueError as exc:
            raise SettingsError(f"{_SETTING['key']}: {path}: {exc}") from None

    @property
    def dns_name(self) -> str:
        """Where the public key is published: ``{selector}._domainkey.{domain}``."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name` (``v=DKIM1; k=...; p=...``)."""
        return self._record

    def sign(self, message: bytes) -> bytes:
        """The message with a ``DKIM-Signature`` header prepended, line endings kept.

        Raises ``ValueError`` for a message that cannot be signed (no From, malformed headers).
        """
        linesep = b"\r\n" if b"\r\n" in message else b"\n"
        signer = self._dkim(message, linesep, fast=self._fast_rsa)
        self._check_from(signer.headers)
        try:
            header: bytes = signer.sign(
                self._selector,
                self._domain,
                self._dkimpy_key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot DKIM-sign the message: {exc}") from None
        return header + message

    # -- internals ----------------------------------------------------------------------------

    def _dkim(self, message: bytes, linesep: bytes, *, fast: bool) -> Any:
        """A dkimpy signer for one message; raises ``ValueError`` if it cannot parse it."""
        try:
            if fast:
                assert self._rsa_key is not None
                return _OpenSslRsaDkim(message, key=self._rsa_key, linesep=linesep)
            return dkim.DKIM(message, signature_algorithm=self._algorithm, linesep=linesep)
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot DKIM-sign the message: {exc}") from None

    def _check_from(self, headers: list[list[bytes]]) -> None:
        """Require a From, and warn once per From domain that does not align with ``d=``.

        DMARC passes on DKIM only when the From domain is the signing domain or (relaxed
        alignment) shares its organisational domain; the common case, and the one checked
        here, is the signing domain itself or a subdomain of it.
        """
        values = [value for name, value in headers if name.lower() == b"from"]
        if not values:
            raise ValueError("cannot DKIM-sign a message without a From header")
        for value in values:
            if value in self._aligned_from:  # a campaign has few senders: parse each once
                continue
            _, address = parseaddr(value.replace(b"\r\n", b"").decode("utf-8", "replace"))
            from_domain = address.rpartition("@")[2].lower().rstrip(".")
            if from_domain == self.domain or from_domain.endswith("." + self.domain):
                if len(self._aligned_from) < _FROM_CACHE_SIZE:
                    self._aligned_from.add(value)
                continue
            if from_domain in self._warned_from:
                continue
            self._warned_from.add(from_domain)
            log.warning(
                "DKIM: signing mail From %r with d=%s, which does not align with it for DMARC; "
                "set DRIP_DKIM_DOMAIN to the From domain (or a parent of it)",
                from_domain,
                self.domain,
            )

    def _verifies(self, signed: bytes) -> bool:
        def lookup(name: bytes, timeout: float = 5) -> bytes | None:
            return self._record.encode() if name.rstrip(b".") == self.dns_name.encode() else None

        return bool(dkim.verify(signed, dnsfunc=lookup, minkey=_RSA_MIN_BITS))

    def _self_test(self) -> None:
        """Sign and verify a probe message; fall back to dkimpy's own RSA if OpenSSL's fails."""
        probe = _PROBE.replace(b"{domain}", self._domain)
        if self._fast_rsa:
            try:
                if self._verifies(self.sign(probe)):
                    return
                problem = "its signature did not verify"
            except Exception as exc:  # any failure here means: use dkimpy's own RSA
                problem = f"{type(exc).__name__}: {exc}"
            self._fast_rsa = False
            log.warning(
                "DKIM: signing RSA with OpenSSL does not work with this dkimpy (%s); "
                "falling back to dkimpy's pure-Python RSA (some 6 ms a message, not under 1)",
                problem,
            )
        if not self._verifies(self.sign(probe)):
            raise ValueError("a test signature made with this key did not verify")


class _Signature(NamedTuple):
    signature: bytes


class _Pkcs1Signer:
    """An RSA key dressed as a PyNaCl ``SigningKey``: ``sign(digest).signature``."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def sign(self, digest: bytes) -> _Signature:
        return _Signature(
            self._key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        )


class _OpenSslRsaDkim(dkim.DKIM):  # type: ignore[misc]  # dkimpy has no type hints
    """dkimpy's signer, with the RSA private-key operation done by OpenSSL.

    ``DKIM.sign`` writes every tag (``a=rsa-sha256`` included), then ``gen_header`` hashes the
    signed headers and signs the digest: with dkimpy's pure-Python RSA on its RSA branch, with
    ``pk.sign(digest).signature`` on its Ed25519 branch. Taking the Ed25519 branch with a
    PKCS#1 v1.5 signer over the same SHA-256 digest yields exactly dkimpy's RSA signature.
    """

    def __init__(self, message: bytes, *, key: rsa.RSAPrivateKey, linesep: bytes) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256", linesep=linesep)
        self._openssl = _Pkcs1Signer(key)

    def gen_header(
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: tuple[bytes, ...],
        canon_policy: Any,
        header_name: bytes,
        pk: object,
        standardize: bool = False,
    ) -> bytes:
        self.signature_algorithm = b"ed25519-sha256"
        try:
            value: bytes = super().gen_header(
                fields, include_headers, canon_policy, header_name, self._openssl, standardize
            )
        finally:
            self.signature_algorithm = b"rsa-sha256"
        return value


def _dns_name(value: str, what: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name:
        raise ValueError(f"the DKIM {what} is empty")
    if not name.isascii():
        raise ValueError(f"{value!r} is not ASCII; use its IDNA form (xn--...)")
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a valid DNS name for the DKIM {what}")
    return name


def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise ValueError(
            "the private key is encrypted; DKIM needs it unencrypted "
            "(openssl pkey -in encrypted.pem -out plain.pem)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or "
            "-----BEGIN RSA PRIVATE KEY-----)"
        ) from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"
        raise ValueError(
            f"unsupported key type {kind}; DKIM signs with RSA (rsa-sha256) or Ed25519 "
            "(ed25519-sha256) keys"
        )
    bits = key.key_size
    if bits < _RSA_MIN_BITS:
        raise ValueError(f"a {bits}-bit RSA key; DKIM needs at least {_RSA_MIN_BITS} (RFC 8301)")
    if bits > _RSA_MAX_BITS:
        raise ValueError(
            f"a {bits}-bit RSA key; receivers are only required to verify up to "
            f"{_RSA_MAX_BITS} bits (RFC 8301), use 2048"
        )
    if bits < _RSA_GOOD_BITS:
        log.warning(
            "DKIM: the RSA key has %d bits; RFC 8301 recommends %d or more, and some receivers "
            "treat shorter keys as weak",
            bits,
            _RSA_GOOD_BITS,
        )
    return key
