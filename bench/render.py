"""Benchmark: the per-contact email path, drip's against the same path built with the stdlib.

Run from the repository root::

    .venv/bin/python -m bench.render [--contacts 2000] [--rounds 5] [--dkim rsa|ed25519]

Sending one email per contact makes the per-recipient work the hot path of a bulk send: the
Jinja renders (subject, preheader, HTML, text), the tracked links and open pixel, and the MIME
message as bytes ready for SMTP DATA. That is exactly what ``send_email`` does between reserving
the outbox row and talking to the relay (``Renderer.render`` then ``build_message``), and what is
timed here, on one core (one process, one thread), over in-memory contacts.

Paths, each timed once per round, rounds interleaved so a noisy neighbour hits all of them, the
median of the rounds reported:

* ``drip``: ``Renderer.render`` + ``emails.build_message`` (bytes written directly).
* ``stdlib``: the *same* ``Renderer.render`` + the message built with the stdlib
  ``EmailMessage``/``set_content``/``as_bytes`` (``bench/_stdlib_message.py``, how drip built
  it before). The baseline: the two differ only in the MIME build, and produce the same message
  (the run checks that both parse to the same headers and parts before timing).
* ``render``: ``Renderer.render`` alone, to show where the time goes.

Apart from timing the run is deterministic: fixed contacts, message ids and ``Date`` header.
No database, SMTP server or Temporal is involved. Compilation (MJML, CSS inlining, Jinja, the
text template) happens once per template in the warm-up and is not timed; it costs about 2 ms
per template, once. The last line of output is one JSON object with the figures and ``ratio``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench._cli import positive
from bench._stdlib_message import build_message_stdlib
from campaigns.workspace import Workspace, load_workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer, build_message, domain_of

WORKSPACE = Path(__file__).resolve().parent.parent / "examples" / "acme"
CAMPAIGN = "welcome"
#: The welcome email: personalised subject and body, three tracked links; the most common send.
STEP = "welcome"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
PUBLIC_BASE_URL = "https://mail.example.com"
#: A fixed Date header, so the bytes of a run are reproducible.
DATE = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
MIN_ROUNDS = 3
WARMUP_CONTACTS = 50
GOAL_RATE = 1000.0
GOAL_RATIO = 10.0
# Non-ASCII names on purpose: real lists have them, and they exercise RFC 2047 header encoding.
FIRST_NAMES = (
    "Ada", "Bilal", "Chloé", "Dmitri", "Eilidh", "Fatima", "Gareth", "Hana", "Ignacio", "Jürgen",
    "Kemi", "Lars", "Mei", "Niamh", "Oluwaseun", "Priya", "Quentin", "Rhiannon", "Søren", "Zoë",
)  # fmt: skip

LABELS = {
    "drip": "drip: render + build_message",
    "stdlib": "same render + stdlib EmailMessage",
    "render": "Renderer.render alone",
}

Builder = Callable[..., bytes]


@dataclass(frozen=True, slots=True)
class Send:
    """One send_email step of the demo workspace: what every contact receives."""

    campaign_id: str
    step_id: str
    template: str
    subject: str
    preheader: str
    track: bool


def make_contacts(count: int) -> list[Contact]:
    """``count`` stored-looking contacts (ids set, as the renderer requires), built in memory.

    Ids, addresses and first names are all distinct, so no per-contact value can be cached away.
    """
    return [
        Contact(
            id=n,
            email=f"contact{n:06d}@example.org",
            fields={"first_name": f"{FIRST_NAMES[n % len(FIRST_NAMES)]} {n}"},
        )
        for n in range(1, count + 1)
    ]


def message_id(contact: Contact) -> str:
    """A uuid-shaped id like the journey workflow's, derived from the contact id so the tokens
    and bytes of every run are the same."""
    assert contact.id is not None
    return str(uuid.UUID(int=contact.id))


def find_send(workspace: Workspace) -> Send:
    """The benchmarked step, read from the campaign so the benchmark follows edits to it."""
    for step in workspace.campaigns[CAMPAIGN].steps:
        if step.id == STEP and step.send_email is not None:
            e = step.send_email
            return Send(CAMPAIGN, STEP, e.template, e.subject, e.preheader, e.track)
    raise SystemExit(f"no send_email step {STEP!r} in campaign {CAMPAIGN!r}")


class Paths:
    """The per-contact paths; each takes a contact and returns what a send would use."""

    def __init__(
        self,
        workspace: Workspace,
        settings: Settings,
        send: Send,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.send = send
        self.config = workspace.config
        self.domain = domain_of(workspace.config.from_)
        self.renderer = Renderer(workspace, settings)
        self.sign = sign

    def rendered(self, contact: Contact) -> Any:
        send = self.send
        return self.renderer.render(
            template=send.template,
            subject=send.subject,
            preheader=send.preheader,
            contact=contact,
            message_id=message_id(contact),
            campaign_id=send.campaign_id,
            step_id=send.step_id,
            track=send.track,
        )

    def with_builder(self, build: Builder) -> Callable[[Contact], bytes]:
        config, sign = self.config, self.sign

        def one(contact: Contact) -> bytes:
            data = build(
                self.rendered(contact),
                from_addr=config.from_,
                to_addr=contact.email,
                reply_to=config.reply_to,
                message_id=message_id(contact),
                domain=self.domain,
                unsubscribe_mailto=config.unsubscribe_mailto,
                date=DATE,
            )
            return sign(data) if sign is not None else data

        return one

    def all(self) -> dict[str, Callable[[Contact], object]]:
        return {
            "drip": self.with_builder(build_message),
            "stdlib": self.with_builder(build_message_stdlib),
            "render": self.rendered,
        }

    def check(self, contacts: Sequence[Contact]) -> int:
        """Refuse to time paths that do not build the same message; the message size."""
        ours = theirs = b""
        for contact in contacts:
            ours = self.with_builder(build_message)(contact)
            theirs = self.with_builder(build_message_stdlib)(contact)
            # a DKIM signature carries its time, so only unsigned messages repeat byte for byte
            if self.sign is None and ours != self.with_builder(build_message)(contact):
                raise SystemExit("drip's path is not deterministic for a fixed contact and date")
            a, b = _parse(ours), _parse(theirs)
            for header in ("Date", "Message-ID", "From", "To", "Reply-To", "Subject"):
                if str(a[header]) != str(b[header]):
                    raise SystemExit(f"{header} differs: {a[header]!r} vs {b[header]!r}")
            lists = [" ".join(str(m["List-Unsubscribe"]).split()) for m in (a, b)]
            if lists[0] != lists[1] or a["List-Unsubscribe-Post"] != b["List-Unsubscribe-Post"]:
                raise SystemExit(f"List-Unsubscribe differs: {lists}")
            if _parts(a) != _parts(b):
                raise SystemExit("the text or HTML part differs between drip and the stdlib")
            name = contact.fields["first_name"]
            if name not in str(a["Subject"]) + _parts(a)[1]:
                raise SystemExit(f"the message lacks the contact's first name {name!r}")
        if f"{PUBLIC_BASE_URL}/t/c/".encode() not in ours:
            raise SystemExit("the message lacks tracked links")
        return len(ours)


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    if msg.defects:
        raise SystemExit(f"message has defects: {msg.defects}")
    return msg


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text, html = (str(p.get_content()).replace("\r\n", "\n") for p in msg.iter_parts())
    return text, html.rstrip("\n")


def time_once(one: Callable[[Contact], object], contacts: Sequence[Contact]) -> float:
    """Emails per second of one pass over ``contacts``."""
    gc.collect()  # start each timing with a clean heap, not the previous path's garbage
    start = time.perf_counter()
    for contact in contacts:
        one(contact)
    return len(contacts) / (time.perf_counter() - start)


def dkim_signer(kind: str, folder: Path) -> Callable[[bytes], bytes]:
    """A DKIM signer with a throwaway key, to show what signing adds per message."""
    from emails.dkim import DkimSigner

    key = folder / f"dkim-{kind}.pem"
    algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    if kind == "ed25519":
        algorithm = ["-algorithm", "ED25519"]
    subprocess.run(
        ["openssl", "genpkey", *algorithm, "-out", str(key)], check=True, capture_output=True
    )
    settings = Settings(
        home=folder,
        secret_key=SECRET_KEY,
        dkim_domain="acme.example",
        dkim_selector="bench",
        dkim_private_key=key,
    )
    signer = DkimSigner.from_settings(settings)
    assert signer is not None
    return signer.sign


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.render",
        description="The per-contact email path: drip's vs the same path built with the stdlib.",
    )
    parser.add_argument("--contacts", type=positive, default=2000, help="per round (2000)")
    parser.add_argument(
        "--rounds", type=positive, default=5, help=f"rounds, at least {MIN_ROUNDS} (5)"
    )
    parser.add_argument(
        "--dkim",
        choices=("rsa", "ed25519"),
        help="also DKIM-sign every message (both paths) with a throwaway key of this kind",
    )
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}: one round on a shared box is noise")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workspace = load_workspace(WORKSPACE)
    send = find_send(workspace)
    contacts = make_contacts(args.contacts)

    with tempfile.TemporaryDirectory(prefix="drip-bench-") as home:
        folder = Path(home)
        settings = Settings(home=folder, secret_key=SECRET_KEY, public_base_url=PUBLIC_BASE_URL)
        sign = dkim_signer(args.dkim, folder) if args.dkim else None
        paths = Paths(workspace, settings, send, sign)
        size = paths.check(contacts[:WARMUP_CONTACTS])
        measured = paths.all()
        # Warm-up: compiles the template, imports lazily loaded codecs, and lets the CPU
        # frequency settle before anything is recorded.
        for one in measured.values():
            for contact in contacts[:WARMUP_CONTACTS]:
                one(contact)

        print(
            f"bench.render: template {send.template!r} of campaign {send.campaign_id!r} "
            f"({size:,} bytes a message{', DKIM ' + args.dkim if args.dkim else ''}), "
            f"{len(contacts)} contacts, {args.rounds} rounds, one core, "
            f"Python {sys.version.split()[0]}"
        )
        rates: dict[str, list[float]] = {name: [] for name in measured}
        for number in range(1, args.rounds + 1):
            for name, one in measured.items():
                rates[name].append(time_once(one, contacts))
            line = "  ".join(f"{name} {r[-1]:,.0f}/s" for name, r in rates.items())
            print(f"  round {number}: {line}", flush=True)

    report(rates, contacts=len(contacts), rounds=args.rounds, dkim=args.dkim)


def report(rates: dict[str, list[float]], *, contacts: int, rounds: int, dkim: str | None) -> None:
    """Medians, per-email cost, the ratio with its spread over rounds, then the JSON line."""
    median = {name: statistics.median(r) for name, r in rates.items()}
    us = {name: 1e6 / rate for name, rate in median.items()}
    print()
    print(f"{'path':<38}{'emails/s':>10}{'us/email':>10}   rounds min-max emails/s")
    for name, rate in median.items():
        low, high = min(rates[name]), max(rates[name])
        print(f"{LABELS[name]:<38}{rate:>10,.0f}{us[name]:>10.0f}   {low:,.0f}-{high:,.0f}")
    per_round = [d / s for d, s in zip(rates["drip"], rates["stdlib"], strict=True)]
    ratio = median["drip"] / median["stdlib"]
    print()
    print(f"median of {rounds} rounds of {contacts} contacts")
    print(
        f"drip's path: {ratio:.1f}x the stdlib-built path "
        f"(rounds {min(per_round):.1f}x-{max(per_round):.1f}x); goal {GOAL_RATIO:.0f}x and "
        f"{GOAL_RATE:,.0f} emails/s: "
        + ("met" if ratio >= GOAL_RATIO and median["drip"] >= GOAL_RATE else "NOT met")
    )
    print(
        f"MIME build: {us['drip'] - us['render']:.0f} us (drip) vs "
        f"{us['stdlib'] - us['render']:.0f} us (stdlib) on top of {us['render']:.0f} us of render"
    )
    summary = {
        "bench": "render",
        "contacts": contacts,
        "rounds": rounds,
        "dkim": dkim,
        "drip_per_s": round(median["drip"]),
        "stdlib_per_s": round(median["stdlib"]),
        "render_per_s": round(median["render"]),
        "ratio": round(ratio, 2),
        "ratio_min": round(min(per_round), 2),
        "ratio_max": round(max(per_round), 2),
        "goal_per_s": GOAL_RATE,
        "goal_ratio": GOAL_RATIO,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
