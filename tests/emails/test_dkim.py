"""DKIM signing: dkimpy verifies what DkimSigner signs, with RSA and Ed25519 keys made here and
a DNS lookup that answers with their TXT records; a changed body or signed header fails; a key or
setting that cannot work fails when the signer is built, naming the setting."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value

from contacts.models import Contact
from drip.settings import Settings, SettingsError
from emails import RenderedEmail, build_message
from emails.dkim import SIGNED_HEADERS, DkimSigner
from tests.emails.conftest import RenderFn

DOMAIN = "acme.example"
SELECTOR = "drip2026"
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    name = "rsa_key" if request.param == "rsa" else "ed_key"
    found: PrivateKey = request.getfixturevalue(name)
    return found


def _pem(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    pem: bytes = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return pem


def _txt_record(key: PrivateKey) -> str:
    """The DNS TXT record for the key, made here rather than by the code under test."""
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def _verify(data: bytes, key: PrivateKey, *, domain: str = DOMAIN) -> bool:
    record = _txt_record(key).encode()
    wanted = f"{SELECTOR}._domainkey.{domain}.".encode()

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == wanted else None

    return bool(dkim.verify(data, dnsfunc=dns))


def _signer(key: Any, *, domain: str = DOMAIN) -> DkimSigner:
    return DkimSigner(domain=domain, selector=SELECTOR, private_key_pem=_pem(key))


def _message(**overrides: Any) -> bytes:
    rendered = RenderedEmail(
        subject="Trail tips for Ann",
        html="<html><body><p>Hello <b>Ann</b>, here are   three tips.</p></body></html>",
        text="Hello Ann, here are three tips.\n",
        unsubscribe_url="https://drip.acme.example/u/AAAAAAAAAAEEipQ4fDLXV2ZgtyHBaT9H",
    )
    kwargs: dict[str, Any] = {
        "from_addr": "Acme Outdoor <hello@acme.example>",
        "to_addr": "ann@example.com",
        "reply_to": None,
        "message_id": "0b0e5a53-3f1f-4c55-9d8f-0d2b8f4a1c11",
        "domain": DOMAIN,
        "unsubscribe_mailto": "unsubscribe@acme.example",
    }
    kwargs.update(overrides)
    return build_message(rendered, **kwargs)


def _tags(signed: bytes) -> dict[bytes, bytes]:
    """The DKIM-Signature's tags, unfolded."""
    head = signed.split(b"\r\n\r\n", 1)[0]
    unfolded = re.sub(rb"\r\n[ \t]", b" ", head).split(b"\r\n")
    [value] = [line[len(b"DKIM-Signature:") :] for line in unfolded
               if line.startswith(b"DKIM-Signature:")]  # fmt: skip
    tags: dict[bytes, bytes] = parse_tag_value(value.strip())
    return tags


def _signed_headers(signed: bytes) -> list[bytes]:
    return [name.strip() for name in _tags(signed)[b"h"].split(b":")]


# -- signing and verifying ---------------------------------------------------------------------


def test_rendered_email_signed_and_verified(
    key: PrivateKey, render: RenderFn, ann: Contact, caplog: pytest.LogCaptureFixture
) -> None:
    data = build_message(
        render("welcome", ann),
        from_addr="Acme Outdoor <hello@acme.example>",
        to_addr=ann.email,
        reply_to="Acme Support <support@acme.example>",
        message_id="5d0c4a8e-34f2-4f0e-a0a4-0a3c7e1f9b21",
        domain=DOMAIN,
        unsubscribe_mailto="unsubscribe@acme.example",
    )
    with caplog.at_level(logging.WARNING, logger="emails.dkim"):
        signer = _signer(key)
        signed = signer.sign(data)
    assert caplog.records == []  # no fallback from OpenSSL to dkimpy's RSA, no alignment warning
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(data)  # the message itself is untouched
    assert b"\n" not in signed.replace(b"\r\n", b"")  # CRLF throughout
    assert _verify(signed, key)

    tags = _tags(signed)
    expected = b"rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else b"ed25519-sha256"
    assert tags[b"a"] == expected
    assert signer.algorithm == expected.decode()
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode()
    assert tags[b"s"] == SELECTOR.encode()
    assert b"l" not in tags  # no body length limit: nothing can be appended to a signed body


def test_signed_headers_cover_unsubscribe_and_oversign_from(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = _signer(rsa_key).sign(_message())
    names = _signed_headers(signed)
    assert names == list(SIGNED_HEADERS)
    assert b"list-unsubscribe" in names
    assert b"list-unsubscribe-post" in names  # RFC 8058 section 4
    assert names.count(b"from") == 2
    for name in (b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version"):
        assert name in names


def _replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    head, body = data.split(b"\r\n\r\n", 1)
    pattern = rb"(?im)^" + re.escape(name) + rb":[^\r\n]*(?:\r\n[ \t][^\r\n]*)*"
    new, count = re.subn(pattern, name + b": " + value, head)
    assert count == 1, name
    return new + b"\r\n\r\n" + body


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "body": lambda d: d.replace(b"three tips", b"four tips!"),
    "body appended": lambda d: d + b"Click https://evil.example/ now\r\n",
    "subject": lambda d: _replace_header(d, b"Subject", b"Your account is locked"),
    "to": lambda d: _replace_header(d, b"To", b"bob@example.com"),
    "list-unsubscribe": lambda d: _replace_header(
        d, b"List-Unsubscribe", b"<https://evil.example/u/x>"
    ),
    "list-unsubscribe-post removed": lambda d: re.sub(
        rb"List-Unsubscribe-Post: [^\r]*\r\n", b"", d
    ),
    "second From added": lambda d: b"From: Acme <ceo@evil.example>\r\n" + d,
    "Reply-To added": lambda d: d.replace(
        b"\r\nTo: ", b"\r\nReply-To: <phish@evil.example>\r\nTo: ", 1
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_tampered_message_fails(key: PrivateKey, tamper: Callable[[bytes], bytes]) -> None:
    signed = _signer(key).sign(_message())
    assert _verify(signed, key)
    tampered = tamper(signed)
    assert tampered != signed
    assert not _verify(tampered, key)


RELAYED: dict[str, Callable[[bytes], bytes]] = {
    "header whitespace": lambda d: d.replace(b"Subject: Trail", b"Subject:   Trail", 1),
    "header refolded": lambda d: d.replace(b"Subject: Trail tips", b"Subject: Trail\r\n tips", 1),
    "trailing blank lines": lambda d: d + b"\r\n\r\n",
    "trace header added": lambda d: b"Received: from relay.example by mx.example\r\n" + d,
}


@pytest.mark.parametrize("relay", RELAYED.values(), ids=RELAYED.keys())
def test_relaxed_canonicalisation_survives_relays(
    key: PrivateKey, relay: Callable[[bytes], bytes]
) -> None:
    signed = _signer(key).sign(_message())
    relayed = relay(signed)
    assert relayed != signed
    assert _verify(relayed, key)


def test_openssl_rsa_signature_is_dkimpys_own(rsa_key: rsa.RSAPrivateKey) -> None:
    """RSA signing goes through OpenSSL; PKCS#1 v1.5 is deterministic, so the header must be
    the one dkimpy computes with its own pure-Python RSA for the same message and second."""
    data = _message()
    signer = _signer(rsa_key)
    for _ in range(3):  # the t= tag is the current second: retry if it ticked in between
        ours = signer.sign(data)[: -len(data)]
        theirs = dkim.sign(
            data,
            SELECTOR.encode(),
            DOMAIN.encode(),
            _pem(rsa_key),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        if _tags(ours + data)[b"t"] == _tags(theirs + data)[b"t"]:
            break
    assert ours == theirs


def test_lf_message_keeps_lf(ed_key: ed25519.Ed25519PrivateKey) -> None:
    data = _message().replace(b"\r\n", b"\n")
    signed = _signer(ed_key).sign(data)
    assert signed.endswith(data)
    assert b"\r" not in signed
    assert _verify(signed, ed_key)


def test_message_without_from_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    data = re.sub(rb"From: [^\r]*\r\n", b"", _message())
    with pytest.raises(ValueError, match="without a From"):
        _signer(ed_key).sign(data)


def test_misaligned_from_signs_and_warns_once(
    ed_key: ed25519.Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    signer = _signer(ed_key)
    with caplog.at_level(logging.WARNING, logger="emails.dkim"):
        aligned = signer.sign(_message(from_addr="News <news@mail.acme.example>"))
        assert caplog.records == []  # a subdomain of d= aligns
        for to in ("ann@example.com", "bob@example.com"):
            other = signer.sign(_message(from_addr="Other <hi@other.example>", to_addr=to))
            assert _verify(other, ed_key)
    assert _verify(aligned, ed_key)
    [warning] = caplog.records
    assert "other.example" in warning.getMessage()
    assert "DRIP_DKIM_DOMAIN" in warning.getMessage()


def test_dns_record_and_name(key: PrivateKey) -> None:
    signer = DkimSigner(domain="Acme.Example.", selector=SELECTOR, private_key_pem=_pem(key))
    assert signer.domain == DOMAIN
    assert signer.dns_name == f"{SELECTOR}._domainkey.{DOMAIN}"
    assert signer.dns_record() == _txt_record(key)


def test_pkcs1_key_with_crlf_line_endings(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL).replace(b"\n", b"\r\n")
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\r\n")
    signer = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    assert _verify(signer.sign(_message()), rsa_key)


# -- settings ----------------------------------------------------------------------------------


def _settings(tmp_path: Path, **dkim_settings: Any) -> Settings:
    """Settings with the DKIM values given and the others unset, whatever the environment says."""
    values: dict[str, Any] = {"dkim_domain": "", "dkim_selector": "", "dkim_private_key": None}
    values.update(dkim_settings)
    return Settings(home=tmp_path / ".drip", secret_key="test-secret", **values)


def _key_file(tmp_path: Path, pem: bytes) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    return path


def test_not_configured_is_none(tmp_path: Path) -> None:
    assert DkimSigner.from_settings(_settings(tmp_path)) is None


def test_configured_from_settings(tmp_path: Path, key: PrivateKey) -> None:
    settings = _settings(
        tmp_path,
        dkim_domain=DOMAIN,
        dkim_selector=SELECTOR,
        dkim_private_key=_key_file(tmp_path, _pem(key)),
    )
    signer = DkimSigner.from_settings(settings)
    assert signer is not None
    assert _verify(signer.sign(_message()), key)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"dkim_domain": DOMAIN}, ["DRIP_DKIM_SELECTOR", "DRIP_DKIM_PRIVATE_KEY"]),
        ({"dkim_domain": DOMAIN, "dkim_selector": SELECTOR}, ["DRIP_DKIM_PRIVATE_KEY"]),
        ({"dkim_selector": SELECTOR}, ["DRIP_DKIM_DOMAIN", "DRIP_DKIM_PRIVATE_KEY"]),
        ({"dkim_private_key": "KEY"}, ["DRIP_DKIM_DOMAIN", "DRIP_DKIM_SELECTOR"]),
        ({"dkim_domain": DOMAIN, "dkim_private_key": "KEY"}, ["DRIP_DKIM_SELECTOR"]),
    ],
)
def test_half_configured_names_the_missing_setting(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey, given: dict[str, Any], missing: list[str]
) -> None:
    if given.get("dkim_private_key") == "KEY":
        given = given | {"dkim_private_key": _key_file(tmp_path, _pem(ed_key))}
    with pytest.raises(SettingsError) as caught:
        DkimSigner.from_settings(_settings(tmp_path, **given))
    verb = "is" if len(missing) == 1 else "are"
    assert f": {' and '.join(missing)} {verb} not set" in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("dkim_domain", "acme example"),
        ("dkim_domain", "-acme.example"),
        ("dkim_domain", "bücher.example"),
        ("dkim_selector", "sel/2026"),
        ("dkim_selector", "_bad"),
    ],
)
def test_bad_domain_or_selector_names_the_setting(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey, setting: str, value: str
) -> None:
    values: dict[str, Any] = {
        "dkim_domain": DOMAIN,
        "dkim_selector": SELECTOR,
        "dkim_private_key": _key_file(tmp_path, _pem(ed_key)),
    }
    values[setting] = value
    with pytest.raises(SettingsError, match=f"^DRIP_{setting.upper()}: "):
        DkimSigner.from_settings(_settings(tmp_path, **values))


def _configured(tmp_path: Path, key_path: Path) -> Settings:
    return _settings(
        tmp_path, dkim_domain=DOMAIN, dkim_selector=SELECTOR, dkim_private_key=key_path
    )


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^DRIP_DKIM_PRIVATE_KEY: cannot read .*missing\.pem"):
        DkimSigner.from_settings(_configured(tmp_path, tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match=r"^DRIP_DKIM_PRIVATE_KEY: cannot read"):
        DkimSigner.from_settings(_configured(tmp_path, tmp_path))  # a directory


def _openssl_rsa(bits: int) -> bytes:
    """An RSA key smaller than ``cryptography`` agrees to generate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a key under 1024 bits")
    done = subprocess.run(
        [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        capture_output=True,
        check=True,
    )
    return done.stdout


def _bad_keys() -> dict[str, tuple[Callable[[], bytes], str]]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    public = ed_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encrypted = ed_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return {
        "not pem": (lambda: b"v=DKIM1; k=rsa; p=MIIB\n", "not a PEM private key"),
        "empty": (lambda: b"", "not a PEM private key"),
        "public key": (lambda: public, "not a PEM private key"),
        "encrypted": (lambda: encrypted, "encrypted"),
        "ec key": (lambda: _pem(ec_key), "unsupported key type EC"),
        "rsa 512": (lambda: _openssl_rsa(512), "512-bit RSA key; DKIM needs at least 1024"),
    }


BAD_KEYS = _bad_keys()


@pytest.mark.parametrize("case", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_unusable_key_fails_at_start_up(
    tmp_path: Path, case: tuple[Callable[[], bytes], str]
) -> None:
    make, reason = case
    path = _key_file(tmp_path, make())
    with pytest.raises(SettingsError) as caught:
        DkimSigner.from_settings(_configured(tmp_path, path))
    message = str(caught.value)
    assert message.startswith(f"DRIP_DKIM_PRIVATE_KEY: {path}: ")
    assert reason in message


def test_rsa_1024_works_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with caplog.at_level(logging.WARNING, logger="emails.dkim"):
        signer = DkimSigner.from_settings(_configured(tmp_path, _key_file(tmp_path, _pem(small))))
    assert signer is not None
    assert signer.key_bits == 1024
    assert _verify(signer.sign(_message()), small)
    [warning] = caplog.records
    assert "1024 bits" in warning.getMessage()
