"""Benchmark: per-contact email rendering, drip's path against compiling per contact.

Run from the repository root::

    .venv/bin/python -m bench.render [--contacts 2000] [--rounds 5]

Sending one email per contact makes rendering the per-recipient hot path, so ``emails`` compiles
everything that does not depend on the contact (MJML, then Jinja) once and per contact only
renders. This benchmark puts a number on that design and on what the rest of the per-contact
work costs. Absolute rates mean little on this shared, noisy machine, so each figure is paired
with a baseline measured in the same run, rounds are interleaved (each round times every path
once, so a noisy neighbour hits all of them) and the median of the rounds is reported.

Five paths, all over the same in-memory contacts and the context ``Renderer.render`` builds:

* ``render``: subject, preheader and body rendered from the already-compiled templates, and
  nothing else: the Jinja floor of any per-contact renderer.
* ``render-naive``: the same, but compiling the template for every contact (``mjml2html`` on
  layout + fragment, then Jinja compilation of its output), on a sample because it is slow.
* ``mjml``: ``mjml2html`` alone on that sample, to split the per-contact compile cost.
* ``drip``: ``Renderer.render`` (the floor plus link rewriting, plain-text part and open pixel)
  then ``build_message`` to MIME bytes, as the ``send_email`` activity calls them.
* ``drip-naive``: exactly the ``drip`` path with the compile cache taken away, on the sample.
  This is the like-for-like baseline: same bytes out, only the compile-once design removed.

The naive paths are generous to the baseline: the source is read once, and drip's compile-time
checks (size, syntax, forbidden tags) are skipped. Before timing, the run checks that every path
produces the same email. No database, SMTP server or Temporal is involved, and apart from timing
the run is deterministic (even the MIME boundary derives from the message id): fixed
contacts, message ids and ``Date`` header.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import mjml

from campaigns.workspace import Workspace, load_workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer, build_message, domain_of

# The naive paths must compile exactly what drip compiles (same layout, same sandboxed Jinja
# environment) or the ratios would compare different work. These names are private to
# emails.templates, so a rename there breaks this benchmark loudly rather than silently.
from emails.templates import _HTML, _LAYOUT, _PLACEHOLDER, Record, TemplateEngine

WORKSPACE = Path(__file__).resolve().parent.parent / "examples" / "acme"
CAMPAIGN = "welcome"
#: The welcome email: personalised subject and body, three tracked links; the most common send.
STEP = "welcome"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
PUBLIC_BASE_URL = "https://mail.example.com"
#: A fixed Date header, so the MIME bytes of a run are reproducible.
DATE = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
MIN_ROUNDS = 3
WARMUP_CONTACTS = 20
#: The naive paths run on N/SAMPLE_DIVISOR contacts, but never fewer than SAMPLE_MIN.
SAMPLE_DIVISOR = 20
SAMPLE_MIN = 50
# Non-ASCII names on purpose: real lists have them, and they exercise RFC 2047 header encoding.
FIRST_NAMES = (
    "Ada", "Bilal", "Chloé", "Dmitri", "Eilidh", "Fatima", "Gareth", "Hana", "Ignacio", "Jürgen",
    "Kemi", "Lars", "Mei", "Niamh", "Oluwaseun", "Priya", "Quentin", "Rhiannon", "Søren", "Zoë",
)  # fmt: skip

LABELS = {
    "render": "Jinja render, compiled once (floor)",
    "render-naive": "Jinja render, compiled per contact",
    "mjml": "  of which mjml2html alone",
    "drip": "drip: Renderer.render + build_message",
    "drip-naive": "drip path, compiled per contact",
}


@dataclass(frozen=True, slots=True)
class Send:
    """One send_email step of the demo workspace: what every contact receives."""

    campaign_id: str
    step_id: str
    template: str
    subject: str
    preheader: str
    track: bool


@dataclass(frozen=True, slots=True)
class Timed:
    """A way to render one contact, and the contacts it is timed on."""

    name: str
    one: Callable[[Contact], object]
    contacts: Sequence[Contact]

    def run(self, contacts: Sequence[Contact]) -> None:
        one = self.one
        for contact in contacts:
            one(contact)


class CompilePerContact(TemplateEngine):
    """A TemplateEngine without a compile cache: every ``body()`` runs MJML and compiles its
    output with Jinja again, which is what a renderer that compiled per send would pay."""

    def __init__(self, templates: Mapping[str, Path]) -> None:
        super().__init__(templates)
        self._sources = {name: path.read_text(encoding="utf-8") for name, path in templates.items()}

    def body(self, name: str) -> jinja2.Template:
        html = mjml.mjml2html(_LAYOUT.replace(_PLACEHOLDER, self._sources[name]))
        return _HTML.from_string(html)


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
    """A uuid-shaped id like the journey workflow's, but derived from the contact id so the
    tokens and bytes of every run are the same."""
    assert contact.id is not None
    return str(uuid.UUID(int=contact.id))


def find_send(workspace: Workspace) -> Send:
    """The benchmarked step, read from the campaign rather than copied here, so the benchmark
    follows edits to the demo workspace."""
    for step in workspace.campaigns[CAMPAIGN].steps:
        if step.id == STEP and step.send_email is not None:
            email = step.send_email
            return Send(CAMPAIGN, STEP, email.template, email.subject, email.preheader, email.track)
    raise SystemExit(f"no send_email step {STEP!r} in campaign {CAMPAIGN!r}")


class Paths:
    """The measured paths. Each pair (cached, naive) shares everything but the template engine,
    so the two differ only in the work being compared."""

    def __init__(self, workspace: Workspace, settings: Settings, send: Send) -> None:
        self.send = send
        self.config = workspace.config
        self.domain = domain_of(workspace.config.from_)
        self.engine = TemplateEngine(workspace.templates)
        self.naive_engine = CompilePerContact(workspace.templates)
        self.renderer = Renderer(workspace, settings)
        self.naive_renderer = Renderer(workspace, settings)
        # Renderer has no hook for its engine; swapping the private attribute is the only way
        # to time its exact code with the cache removed.
        self.naive_renderer._templates = self.naive_engine
        self.workspace_record = Record(
            {"name": workspace.config.name, "postal_address": workspace.config.postal_address}
        )

    def context(self, contact: Contact) -> dict[str, Any]:
        """The same template context ``Renderer.render`` builds (unsubscribe link included)."""
        assert contact.id is not None
        return {
            "contact": Record({**contact.fields, "email": contact.email}),
            "workspace": self.workspace_record,
            "campaign_id": self.send.campaign_id,
            "step_id": self.send.step_id,
            "unsubscribe_url": self.renderer.unsubscribe_url(contact.id),
            "view_in_browser_url": "",
        }

    def render_with(self, engine: TemplateEngine) -> Callable[[Contact], str]:
        """Jinja only, as ``Renderer.render`` calls it: subject, preheader, then the body."""
        send = self.send

        def one(contact: Contact) -> str:
            context = self.context(contact)
            subject = engine.render_text(send.subject, context, what="subject")
            preheader = engine.render_text(send.preheader, context, what="preheader")
            body_context = {**context, "subject": subject, "preheader": preheader}
            return engine.render_body(send.template, body_context)

        return one

    def mjml_only(self, contact: Contact) -> str:
        """Only the MJML half of the per-contact compile."""
        source = self.naive_engine._sources[self.send.template]
        return str(mjml.mjml2html(_LAYOUT.replace(_PLACEHOLDER, source)))

    def send_with(self, renderer: Renderer) -> Callable[[Contact], bytes]:
        """What the send_email activity does between reserving the outbox row and SMTP."""
        send, config = self.send, self.config

        def one(contact: Contact) -> bytes:
            mid = message_id(contact)
            rendered = renderer.render(
                template=send.template,
                subject=send.subject,
                preheader=send.preheader,
                contact=contact,
                message_id=mid,
                campaign_id=send.campaign_id,
                step_id=send.step_id,
                track=send.track,
            )
            return build_message(
                rendered,
                from_addr=config.from_,
                to_addr=contact.email,
                reply_to=config.reply_to,
                message_id=mid,
                domain=self.domain,
                unsubscribe_mailto=config.unsubscribe_mailto,
                date=DATE,
            )

        return one

    def timed(self, contacts: Sequence[Contact], sample: Sequence[Contact]) -> list[Timed]:
        """The paths in the order each round times them, cached before naive."""
        return [
            Timed("render", self.render_with(self.engine), contacts),
            Timed("render-naive", self.render_with(self.naive_engine), sample),
            Timed("mjml", self.mjml_only, sample),
            Timed("drip", self.send_with(self.renderer), contacts),
            Timed("drip-naive", self.send_with(self.naive_renderer), sample),
        ]

    def check(self, contact: Contact) -> None:
        """Refuse to time paths that do not produce the same email, or a wrong one."""
        body = self.render_with(self.engine)(contact)
        if self.render_with(self.naive_engine)(contact) != body:
            raise SystemExit("the per-contact compile renders a different body than drip's")
        name = contact.fields["first_name"]
        if name not in body:
            raise SystemExit(f"rendered body lacks the contact's first name {name!r}")
        data = self.send_with(self.renderer)(contact)
        if data != self.send_with(self.renderer)(contact):
            raise SystemExit("drip's path is not deterministic for a fixed contact and date")
        if data != self.send_with(self.naive_renderer)(contact):
            raise SystemExit("the per-contact compile builds a different message than drip's")
        if f"{PUBLIC_BASE_URL}/".encode() not in data or b"List-Unsubscribe-Post" not in data:
            raise SystemExit("drip's message lacks tracked links or one-click unsubscribe")


def time_once(path: Timed) -> float:
    """Emails per second of one pass over the path's contacts."""
    gc.collect()  # start each timing with a clean heap, not with the previous path's garbage
    start = time.perf_counter()
    path.run(path.contacts)
    elapsed = time.perf_counter() - start
    return len(path.contacts) / elapsed


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.render",
        description="Per-contact email rendering: drip's path vs compiling per contact.",
    )
    parser.add_argument(
        "--contacts", type=positive, default=2000, help="contacts per round (default 2000)"
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=5,
        help=f"rounds; medians are reported (default 5, at least {MIN_ROUNDS})",
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
    sample = contacts[: min(len(contacts), max(SAMPLE_MIN, len(contacts) // SAMPLE_DIVISOR))]

    with tempfile.TemporaryDirectory(prefix="drip-bench-") as home:
        settings = Settings(home=Path(home), secret_key=SECRET_KEY, public_base_url=PUBLIC_BASE_URL)
        paths = Paths(workspace, settings, send)
        measured = paths.timed(contacts, sample)
        paths.check(contacts[0])
        # Warm-up: fills the compile caches, imports lazily loaded codecs, and lets the CPU
        # frequency settle before anything is recorded.
        for path in measured:
            path.run(path.contacts[:WARMUP_CONTACTS])

        print(
            f"bench.render: template {send.template!r} of campaign {send.campaign_id!r}, "
            f"{len(contacts)} contacts ({len(sample)} for the per-contact compile), "
            f"{args.rounds} rounds, Python {sys.version.split()[0]}"
        )
        rates: dict[str, list[float]] = {path.name: [] for path in measured}
        for number in range(1, args.rounds + 1):
            for path in measured:
                rates[path.name].append(time_once(path))
            line = "  ".join(f"{name} {r[-1]:,.0f}/s" for name, r in rates.items())
            print(f"  round {number}: {line}", flush=True)

    report(rates, contacts=len(contacts), sample=len(sample), rounds=args.rounds)


def report(rates: dict[str, list[float]], *, contacts: int, sample: int, rounds: int) -> None:
    """The figures, last: medians, per-email cost, and the ratios that survive a noisy box."""
    median = {name: statistics.median(r) for name, r in rates.items()}
    ms = {name: 1000 / rate for name, rate in median.items()}
    print()
    print(f"{'path':<40}{'emails/s':>10}{'ms/email':>10}   rounds min-max emails/s")
    for name, rate in median.items():
        low, high = min(rates[name]), max(rates[name])
        print(f"{LABELS[name]:<40}{rate:>10,.0f}{ms[name]:>10.3f}   {low:,.0f}-{high:,.0f}")

    def ratio(fast: str, slow: str) -> str:
        per_round = [f / s for f, s in zip(rates[fast], rates[slow], strict=True)]
        return (
            f"{median[fast] / median[slow]:.1f}x (rounds {min(per_round):.1f}x-"
            f"{max(per_round):.1f}x)"
        )

    compile_ms = ms["render-naive"] - ms["render"]
    extra_ms = ms["drip"] - ms["render"]
    print()
    print(f"median of {rounds} rounds; {contacts} contacts, per-contact compile on {sample}")
    print(f"drip's path: {ratio('drip', 'drip-naive')} the per-contact-MJML baseline")
    print(f"Jinja render alone: {ratio('render', 'render-naive')} the per-contact-MJML baseline")
    print(
        f"compiling per contact costs {compile_ms:.3f} ms/email "
        f"(mjml2html {ms['mjml']:.3f}, Jinja compilation the rest)"
    )
    print(
        f"links + text part + pixel + MIME cost {extra_ms:.3f} ms/email over the floor "
        f"({100 * extra_ms / ms['drip']:.0f}% of drip's path)"
    )


if __name__ == "__main__":
    main()
