"""``drip dkim generate``: a new DKIM key, and the DNS records that make the mail trusted.

Setting up DKIM, SPF and DMARC is a one-time job that most people do from three different
guides; this does it from one command. The key is written once (mode 0600, never over an
existing file unless ``--force``), and then checked by building the very ``DkimSigner`` that
``drip worker`` builds from the ``DRIP_DKIM_*`` settings it prints, so a key this writes is one
the worker accepts. The public key is printed as the TXT record to publish, as one value for a
DNS provider's web form and split into strings of at most 255 characters for a zone file (a
TXT record's strings cannot be longer; DNS joins them). SPF and DMARC are advice with the
records to start from: drip cannot know the relay's SPF domain, and DMARC starts at
``p=none`` because a stricter policy before the reports show every sender passing loses mail.
"""

from __future__ import annotations

import os
import re
import secrets
import textwrap
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from rich.console import Console
from rich.markup import escape

from emails.dkim import DkimSigner

__all__ = ["app", "txt_strings"]

app = typer.Typer(help="DKIM keys and the DNS records for them.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

#: the longest character-string a TXT record may hold (RFC 1035 section 3.3)
TXT_STRING_MAX = 255
_DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def txt_strings(value: str, size: int = TXT_STRING_MAX) -> list[str]:
    """``value`` as the quoted strings of a zone file's TXT record, each at most ``size``
    characters; DNS resolvers hand them back joined."""
    return [
        '"' + value[i : i + size].replace("\\", "\\\\").replace('"', '\\"') + '"'
        for i in range(0, len(value), size)
    ]


def _new_key(bits: int, use_ed25519: bool) -> bytes:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if use_ed25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, pem: bytes, *, force: bool) -> None:
    """Write ``pem`` readable by its owner only. Without ``force`` the file is created
    exclusively (an existing key, or one made meanwhile, is never replaced); with it, a new
    file replaces the old one whole, so a reader never sees half a key."""
    if path.is_dir():
        _fail(f"{path} is a directory; give --out a file name")
    if not path.parent.is_dir():
        _fail(f"the folder {path.parent} does not exist")
    target = path
    if force:
        target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _fail(
            f"{path} exists; it may be the key your DNS publishes now. Choose another --out, "
            "or --force to replace it"
        )
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}")
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    if force:
        os.replace(target, path)


@app.command()
def generate(
    domain: Annotated[
        str, typer.Option(help="the signing domain: your From address's domain (d=)")
    ],
    selector: Annotated[
        str,
        typer.Option(help="names this key in DNS (s=), e.g. drip2026; a new one per rotation"),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="where to write the private key [default: dkim-DOMAIN-SELECTOR.pem]"),
    ] = None,
    bits: Annotated[
        int, typer.Option(min=2048, max=4096, help="RSA key size (RFC 8301: 2048 or more)")
    ] = 2048,
    use_ed25519: Annotated[
        bool,
        typer.Option(
            "--ed25519", help="an Ed25519 key instead of RSA (many receivers cannot verify it)"
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="replace the key file if it exists")] = False,
    spf_include: Annotated[
        str | None,
        typer.Option(help="your relay's SPF domain for the SPF advice, e.g. amazonses.com"),
    ] = None,
    dmarc_rua: Annotated[
        str | None,
        typer.Option(help="where DMARC reports go [default: dmarc-reports@DOMAIN]"),
    ] = None,
) -> None:
    """Write a new DKIM private key and print the DNS records to publish (DKIM, SPF, DMARC)
    and the DRIP_DKIM_* settings that make drip worker sign with it."""
    if spf_include is not None and not _DNS_NAME.fullmatch(spf_include):
        _fail(f"--spf-include {spf_include!r} is not a domain name")
    if dmarc_rua is not None and not _ADDRESS.fullmatch(dmarc_rua):
        _fail(f"--dmarc-rua {dmarc_rua!r} is not an email address")
    pem = _new_key(bits, use_ed25519)
    try:  # the worker's own signer: checks the names, signs and verifies a test message
        signer = DkimSigner(domain=domain, selector=selector, private_key_pem=pem)
    except ValueError as exc:
        _fail(str(exc))
    path = (out or Path(f"dkim-{signer.domain}-{signer.selector}.pem")).expanduser().absolute()
    _write_private(path, pem, force=force)
    kind = "Ed25519" if use_ed25519 else f"RSA, {bits} bits"
    name, record = signer.dns_name, signer.dns_record()
    d = signer.domain
    rua = dmarc_rua or f"dmarc-reports@{d}"
    include = f"include:{spf_include}" if spf_include else "include:RELAY-SPF-DOMAIN"

    def say(text: str = "", style: str = "") -> None:
        console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

    def explain(text: str) -> None:
        say(textwrap.fill(text, width=94, initial_indent="   ", subsequent_indent="   "))

    say(f"Wrote a new DKIM private key ({kind}) to {path} (mode 0600): keep it secret.", "green")
    if use_ed25519:
        note = (
            "Note: Gmail and many other receivers do not verify Ed25519 signatures yet "
            "(RFC 8463); there a message signed only with this key counts as unsigned. "
            "Use an RSA key unless you know your receivers."
        )
        say(textwrap.fill(note, width=97), "yellow")
    say()
    say(f"1. DKIM: publish the public key as a TXT record at {name}", "bold")
    say(f"   name:  {name}")
    say(f"   value: {record}")
    say("   In a zone file (strings of at most 255 characters; DNS joins them):")
    strings = txt_strings(record)
    say(f"{name}. IN TXT ( {strings[0]}")
    for part in strings[1:]:
        say(f"    {part}")
    say("    )")
    say()
    say("2. Make drip sign with it (drip worker reads these at start):", "bold")
    say(f"DRIP_DKIM_DOMAIN={d}")
    say(f"DRIP_DKIM_SELECTOR={signer.selector}")
    say(f"DRIP_DKIM_PRIVATE_KEY={path}")
    say()
    say(f"3. SPF: name the servers that may send mail from {d}, a TXT record at {d}", "bold")
    say(f'{d}. IN TXT "v=spf1 {include} ~all"')
    explain(
        f"{include} lets your relay's servers send for {d} (the relay's documentation "
        "names its SPF domain); add mx or ip4:ADDRESS for servers of your own. ~all: mail "
        "from any other server soft-fails (accepted but suspect); -all once you are sure of "
        "the list. A name has one SPF record: if there is one already, add the include to it."
    )
    say()
    say(f"4. DMARC: a TXT record at _dmarc.{d}", "bold")
    say(f'_dmarc.{d}. IN TXT "v=DMARC1; p=none; rua=mailto:{rua}"')
    explain(
        "p=none asks receivers only to report (daily, to rua) which mail passed SPF or DKIM "
        f"aligned with {d}; Gmail and Yahoo require a DMARC record from bulk senders. Once the "
        "reports show all your mail passing, raise it to p=quarantine, then p=reject."
    )
