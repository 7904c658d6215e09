"""Lint a workspace's email templates before a campaign sends them (``drip emails lint``).

Everything here finds what would hurt at send time or in the inbox, in the author's files and
lines: images without alt text, a missing postal address, names that are not in the render
context, ``contact.X`` that fails for contacts without X, ``http://`` links and images, and HTML
big enough for Gmail to clip (which hides the footer with the unsubscribe link). Checks of the
source walk Jinja's AST and an HTML parse of the fragment, so they point at lines; checks of the
result render every template through the real :class:`~emails.render.Renderer` for a sample
contact with every known field filled in, tracked as a send would be.

Functions return :class:`Finding` rows and print nothing; the CLI formats them.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import SecretStr

from campaigns.broadcasts import Broadcast, BroadcastPlan
from campaigns.errors import CampaignError
from campaigns.loader import Loc, Located, load_yaml
from campaigns.workspace import Workspace
from contacts.models import Contact
from drip.settings import Settings
from emails._lint_jinja import Refs, check_jinja, data_reads
from emails.errors import TemplateBudgetError, TemplateError
from emails.render import RenderedEmail, Renderer
from emails.templates import _HTML as SANDBOX  # the emails' own sandbox, not a copy
from emails.templates import Record, RenderBudget, render_bounded

__all__ = [
    "CLIP_BYTES",
    "SEND_BLOCKERS",
    "WARN_BYTES",
    "Finding",
    "Severity",
    "lint_rendered",
    "lint_workspace",
    "send_errors",
]

Severity = Literal["error", "warning"]

#: Gmail clips an email whose HTML is over 102 KB (counted as 102,000 bytes to stay on the safe
#: side): the rest, with the footer's unsubscribe link and postal address, is behind a link.
CLIP_BYTES = 102_000
#: Above this, a small edit or a long field value could cross the limit.
WARN_BYTES = 90_000

#: What the renderer puts in the context of subjects and preheaders; bodies also get both.
TEXT_NAMES = frozenset(
    {
        "contact",
        "workspace",
        "campaign_id",
        "step_id",
        "unsubscribe_url",
        "preferences_url",
        "view_in_browser_url",
    }
)
BODY_NAMES = TEXT_NAMES | {"subject", "preheader"}
#: What the transactional API (``POST /api/messages``) gives a template besides those: the
#: call's data. Lint cannot know the keys (each call brings its own, and the API answers 422
#: when one the template needs is missing), so any ``data.X`` is fine here.
DATA_NAME = "data"
_SAMPLE = {"first_name": "Alex", "last_name": "Sample", "company": "Sample Ltd"}
_SAMPLE_EMAIL = "alex.sample@example.com"

_IMAGE_TAGS = frozenset({"img", "mj-image", "mj-carousel-image"})
_SOURCE_ATTRS = frozenset({"src", "background-url", "background"})
_INCLUDE = re.compile(r"""{%-?\s*include\s+(["'])(?P<name>[^"'{}%]*)\1\s*-?%}""")
_LAYOUT_LINE = re.compile(r"\A\s*{#\s*layout:\s*(?P<name>[^\s#/]*)\s*#}")
_PLAIN_HTTP = re.compile(r"(?i)\bhttp://[^\s<>\"')\]]+")
_JINJA_STATEMENT = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_SPACES = re.compile(r"\s+")
#: Static findings that also make the sample render fail, saying why with a line.
_EXPLAINS = frozenset({"syntax", "unresolved-variable"})


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One problem: ``path:line: severity rule: message``; line 0 is about the file as a whole."""

    path: str
    line: int
    severity: Severity
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        return f"{where}: {self.severity} {self.rule}: {self.message}"


@dataclass(frozen=True, slots=True, eq=False)
class _Use:
    """One email that sends a template: a campaign's send_email step, or a broadcast's email
    or one of its A/B variants."""

    #: the campaign's id, or ``broadcast:<id>`` (as the outbox records a broadcast)
    sender: str
    file: Path
    doc: Located | None
    #: where the subject and the preheader are written in ``file``
    at: dict[str, Loc]
    subject: str
    preheader: str
    #: fields every contact it goes to has (a campaign's trigger form's required ones)
    known: frozenset[str]
    #: the UTM parameters its links get
    utm: dict[str, Any] | None

    def line(self, key: str) -> int:
        if self.doc is None:
            return 0
        return self.doc.position(self.at[key])[0]


def lint_workspace(
    workspace: Workspace, settings: Settings, templates: Sequence[str] | None = None
) -> list[Finding]:
    """Every finding for the named templates (all of them by default), sorted by file and line."""
    found: list[Finding] = []
    if not workspace.config.postal_address.strip():
        config = workspace.root / "workspace.yaml"
        try:
            line = load_yaml(config).position(("postal_address",))[0]
        except CampaignError:
            line = 0
        message = "postal_address is blank; every marketing email must carry it (CAN-SPAM)"
        found.append(Finding(str(config), line, "error", "postal-address", message))
    base = settings.public_base_url
    if settings.env == "production" and not base.lower().startswith("https://"):
        found.append(
            Finding(
                "DRIP_PUBLIC_BASE_URL",
                0,
                "error",
                "insecure-base-url",
                f"{base} is not https: every tracked link, the open pixel and the unsubscribe "
                "link go through it, and one-click unsubscribe (RFC 8058) needs https",
            )
        )
    uses = _uses(workspace)
    sample = _sample_fields(workspace)
    # Lint renders must not write the dev secret file; tokens are as long with any key.
    renderer = Renderer(
        workspace, settings.model_copy(update={"secret_key": SecretStr("drip-lint")})
    )
    per_template: list[Finding] = []
    for name in templates if templates is not None else sorted(workspace.templates):
        per_template += _lint_template(workspace, renderer, name, uses.get(name, []), sample)
    return found + sorted(set(per_template))


#: The findings that mean every send of a template fails: ``drip campaigns validate`` reports
#: these too, so a deploy does not wait for the worker to find them.
SEND_BLOCKERS = frozenset({"unreadable", "syntax", "render-error", "over-budget"})


def send_errors(workspace: Workspace, settings: Settings) -> list[Finding]:
    """The findings that fail every send, for the templates the campaigns send."""
    used = sorted(_uses(workspace))
    names = [name for name in used if name in workspace.templates]
    return [
        f
        for f in lint_workspace(workspace, settings, names)
        if f.severity == "error" and f.rule in SEND_BLOCKERS
    ]


def _lint_template(
    workspace: Workspace,
    renderer: Renderer,
    name: str,
    uses: list[_Use],
    sample: dict[str, Any],
) -> list[Finding]:
    path = workspace.templates[name]
    where = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(where, 0, "error", "unreadable", str(exc))]
    found: list[Finding] = []
    # A field is sure only if every campaign sending the template brings it.
    known = frozenset.intersection(*(u.known for u in uses)) if uses else frozenset({"email"})
    refs = Refs()
    data = Refs()
    files: set[str] = set()
    for file, text, markup in _sources(workspace, path, source):
        files.add(file)
        found += _markup(text, file) if markup else _plain_links(text, file)
        found += _jinja(text, file, 0, BODY_NAMES | {DATA_NAME}, known, refs, fields=sample)
        with contextlib.suppress(jinja2.TemplateSyntaxError):  # _jinja reported it
            data_reads(text, DATA_NAME, data)
    # A template reading ``data`` is the transactional API's: the app calling the API sends
    # it, so no campaign sending it is what its author expects, not something to warn about.
    transactional = _reads_name(workspace, path, source, DATA_NAME)
    if not uses and not transactional:
        found.append(Finding(where, 0, "warning", "unused-template", "no campaign sends it"))
    if uses and transactional:
        senders = ", ".join(sorted({u.sender for u in uses}))
        message = (
            f"reads {DATA_NAME}, which only the transactional API gives a template, "
            f"but {senders} sends it"
        )
        found.append(Finding(where, 0, "error", "data-in-campaign", message))
    for each in uses:
        for key, text in (("subject", each.subject), ("preheader", each.preheader)):
            line = each.line(key)
            found += _jinja(text, str(each.file), line, TEXT_NAMES, each.known, refs, fields=sample)
    if any(f.rule == "syntax" for f in found):
        return found  # the render would only repeat it
    guessed = {f: 1 if f in refs.numeric else f"sample {f}" for f in refs.fields}
    contact = Contact(id=1, email=_SAMPLE_EMAIL, fields={**guessed, **sample})
    sample_data = (
        {k: 1 if k in data.numeric else _SampleValue(f"sample {k}") for k in data.fields}
        if transactional
        else None
    )
    lines: dict[tuple[str, str], _Use | None] = {}
    for each in uses:
        lines.setdefault((each.subject, each.preheader), each)
    checked = False
    for (subject, preheader), use in (lines or {("Subject", ""): None}).items():
        try:
            rendered = renderer.render(
                template=name,
                subject=subject,
                preheader=preheader,
                contact=contact,
                message_id="lint",
                campaign_id=use.sender if use else "lint",
                step_id=name,
                track=True,
                utm=use.utm if use else None,
                data=sample_data,
            )
        except TemplateBudgetError as exc:
            found.append(
                _over_budget(exc, workspace, renderer, where, use, contact, (subject, preheader))
            )
            continue
        except TemplateError as exc:
            found += _render_error(exc, workspace.root / "emails", where, use, found, files)
            continue
        if not checked:
            found += lint_rendered(rendered, where, workspace.config.postal_address)
            checked = True
    return found


class _SampleValue(str):
    """A sample value of the transactional API's ``data``: printable, and also usable as a list
    of one (``{% for line in data.lines %}``) whose items have any attribute
    (``{{ line.name }}``), since lint cannot know the shape a call gives."""

    __slots__ = ()

    def __getattr__(self, name: str) -> _SampleValue:
        if name.startswith("_"):
            raise AttributeError(name)
        return _SampleValue(f"{self} {name}")

    def __iter__(self) -> Iterator[str]:
        yield self


def _reads_name(workspace: Workspace, path: Path, source: str, name: str) -> bool:
    """Whether the template's sources (its partials, ``.txt`` part, layout) read ``name``."""
    for _, text, _ in _sources(workspace, path, source):
        try:
            if name in jinja2.meta.find_undeclared_variables(SANDBOX.parse(text)):
                return True
        except jinja2.TemplateSyntaxError:
            continue
    return False


def _over_budget(
    exc: TemplateBudgetError,
    workspace: Workspace,
    renderer: Renderer,
    where: str,
    use: _Use | None,
    contact: Contact,
    lines: tuple[str, str],
) -> Finding:
    """A template over its render budget, at the file and line that went over: a subject's
    line in its campaign file, else the line Jinja gives in the file rendered on its own (the
    whole email's lines are MJML's output, not the author's)."""
    path, line = where, exc.lineno or 0
    for key in ("subject", "preheader"):
        if use is not None and exc.template.endswith(f": {key}"):
            path, line = str(use.file), use.line(key)
    if path == where and not line:
        budget = renderer.budget
        path, line = _budget_line(workspace, Path(where), contact, lines, budget) or (path, 0)
    return Finding(path, line, "error", "over-budget", exc.reason.removeprefix("over budget: "))


def _budget_line(
    workspace: Workspace,
    path: Path,
    contact: Contact,
    lines: tuple[str, str],
    budget: RenderBudget,
) -> tuple[str, int] | None:
    """Render each file the email is built from on its own (its includes left out), in the same
    sandbox and budget, to find the file and line that goes over it."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    context = {
        "contact": Record({**contact.fields, "email": contact.email}),
        "workspace": Record(
            {"name": workspace.config.name, "postal_address": workspace.config.postal_address}
        ),
        "subject": lines[0],
        "preheader": lines[1],
        **dict.fromkeys(("unsubscribe_url", "preferences_url", "view_in_browser_url"), ""),
        **dict.fromkeys(("campaign_id", "step_id"), "lint"),
    }
    for file, text, _ in _sources(workspace, path, source):
        try:
            template = SANDBOX.from_string(_INCLUDE.sub("", text))
            render_bounded(template, context, file, budget)
        except TemplateBudgetError as found:
            if found.lineno:
                return file, found.lineno
        except (TemplateError, jinja2.TemplateError):
            continue
    return None


def _render_error(
    exc: TemplateError,
    folder: Path,
    where: str,
    use: _Use | None,
    found: list[Finding],
    files: set[str],
) -> list[Finding]:
    """The render's error at the file it names (a partial, a layout, the ``.txt`` part, a
    subject), unless a static finding there already says why, with its line."""
    path, line = where, exc.lineno or 0
    if exc.template and (folder / exc.template).is_file():
        path = str(folder / exc.template)
    for key in ("subject", "preheader"):
        if use is not None and exc.template.endswith(f": {key}"):
            path, line = str(use.file), use.line(key)
    # Without a line, an error of the compiled whole may come from any file it is built from.
    suspects = files if line == 0 and path in files else {path}
    if any(f.path in suspects and f.rule in _EXPLAINS and line in (0, f.line) for f in found):
        return []
    return [
        Finding(path, line, "error", "render-error", f"fails for a sample contact: {exc.reason}")
    ]


def lint_rendered(email: RenderedEmail, where: str, postal_address: str) -> list[Finding]:
    """Findings of an email as it will be sent: its size and its postal address."""
    return list(_rendered(email, where, postal_address))


def _rendered(email: RenderedEmail, where: str, address: str) -> Iterator[Finding]:
    size = len(email.html.encode())
    kb = f"{size / 1000:.1f} KB"
    if size > CLIP_BYTES:
        yield Finding(
            where,
            0,
            "error",
            "gmail-clipping",
            f"the HTML part is {kb} with tracked links: Gmail clips emails over "
            f"{CLIP_BYTES // 1000} KB, hiding the footer with the unsubscribe link",
        )
    elif size > WARN_BYTES:
        yield Finding(
            where,
            0,
            "warning",
            "gmail-clipping",
            f"the HTML part is {kb} with tracked links, close to Gmail's "
            f"{CLIP_BYTES // 1000} KB clipping limit",
        )
    wanted = _squash(address)
    if wanted:
        for part, text in (("HTML", html.unescape(email.html)), ("text", email.text)):
            if wanted not in _squash(text):
                yield Finding(
                    where,
                    0,
                    "error",
                    "postal-address",
                    f"the {part} part lacks the workspace's postal address (required in "
                    "marketing email, CAN-SPAM)",
                )


def _squash(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


# --- the markup: alt text, http links and images ---------------------------------------------


class _Markup(HTMLParser):
    def __init__(self, where: str) -> None:
        super().__init__(convert_charrefs=True)
        self.where = where
        self.found: list[Finding] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {k: v or "" for k, v in attrs}
        if tag in _IMAGE_TAGS and "alt" not in values:
            self._add(
                line,
                "error",
                "missing-alt",
                f"<{tag}> has no alt text, so clients that block images and screen readers "
                'show nothing useful: describe the image, or write alt="" if it is decorative',
            )
        for key, value in values.items():
            url = value.strip()
            if not url.lower().startswith("http://"):
                continue
            if key == "href":
                self._add(line, "warning", "insecure-link", f"link is not https: {url}")
            elif key in _SOURCE_ATTRS:
                self._add(
                    line,
                    "warning",
                    "insecure-image",
                    f"image is not https (clients block or flag it): {url}",
                )

    def _add(self, line: int, severity: Severity, rule: str, message: str) -> None:
        self.found.append(Finding(self.where, line, severity, rule, message))


def _markup(source: str, where: str) -> list[Finding]:
    """Findings of the fragment's tags; Jinja statements and comments are blanked (keeping their
    newlines) so a ``<`` in a condition is not read as a tag."""
    parser = _Markup(where)
    parser.feed(_JINJA_STATEMENT.sub(lambda m: "\n" * m.group().count("\n"), source))
    parser.close()
    return parser.found


def _sources(workspace: Workspace, path: Path, source: str) -> Iterator[tuple[str, str, bool]]:
    """``(path, text, is_mjml)`` of every file an email is built from: the template, its custom
    layout (``{# layout: NAME #}`` or the workspace's ``layout``), the partials they include and
    the ``.txt`` text part. A file that cannot be read is left to the render, which reports it."""
    folder = workspace.root / "emails"
    yield str(path), source, True
    chosen = _LAYOUT_LINE.match(source)
    layout = chosen.group("name") if chosen else workspace.config.layout
    pending = [source]
    if layout and (text := _read(folder / "layouts" / f"{layout}.mjml")) is not None:
        yield str(folder / "layouts" / f"{layout}.mjml"), text, True
        pending.append(text)
    seen: set[str] = set()
    while pending:
        for match in _INCLUDE.finditer(pending.pop()):
            key = match.group("name").removeprefix("partials/").removesuffix(".mjml")
            partial = folder / "partials" / f"{key}.mjml"
            if key in seen or "/" in key or (text := _read(partial)) is None:
                continue
            seen.add(key)
            pending.append(text)
            yield str(partial), text, True
    if (text := _read(path.with_suffix(".txt"))) is not None:
        yield str(path.with_suffix(".txt")), text, False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def _plain_links(text: str, where: str) -> list[Finding]:
    """``http://`` links of a hand-written text part."""
    return [
        Finding(
            where,
            text.count("\n", 0, m.start()) + 1,
            "warning",
            "insecure-link",
            f"link is not https: {m.group()}",
        )
        for m in _PLAIN_HTTP.finditer(text)
    ]


def _jinja(
    source: str,
    where: str,
    first_line: int,
    names: frozenset[str],
    known: frozenset[str],
    refs: Refs,
    *,
    fields: Collection[str],
) -> list[Finding]:
    """Findings of one template text; ``first_line`` is where a subject or preheader is in its
    campaign file (0: the text is the whole file, so Jinja's own lines hold)."""
    issues = check_jinja(source, names=names, known=known, refs=refs, fields=fields)
    return [
        Finding(where, first_line or line, severity, rule, message)
        for line, severity, rule, message in issues
    ]


# --- the workspace: which steps send which template, what a sample contact holds --------------


def _docs(folder: Path) -> dict[str, tuple[Path, Located | None]]:
    """Each YAML file of ``folder`` by the id written in it (else its name), read again for
    the lines of subjects and preheaders."""
    docs: dict[str, tuple[Path, Located | None]] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            doc: Located | None = load_yaml(path)
        except CampaignError:
            doc = None
        data = doc.data if doc is not None else None
        found = data.get("id") if isinstance(data, dict) else None
        docs[found if isinstance(found, str) else path.stem] = (path, doc)
    return docs


def _uses(workspace: Workspace) -> dict[str, list[_Use]]:
    uses: dict[str, list[_Use]] = {}
    docs = _docs(workspace.root / "campaigns")
    for campaign in workspace.campaigns.values():
        file, doc = docs.get(campaign.id, (workspace.root / "campaigns", None))
        form = workspace.forms.get(campaign.trigger.form or "")
        known = frozenset(f.name for f in form.fields if f.required) if form else frozenset()
        for index, step in enumerate(campaign.steps):
            send = step.send_email
            if send is None:
                continue
            at: Loc = ("steps", index, "send_email")
            uses.setdefault(send.template, []).append(
                _Use(
                    campaign.id,
                    file,
                    doc,
                    {"subject": (*at, "subject"), "preheader": (*at, "preheader")},
                    send.subject,
                    send.preheader,
                    known | {"email"},
                    _utm(workspace, campaign.id, send.template),
                )
            )
    docs = _docs(workspace.root / "broadcasts")
    for bid, broadcast in workspace.broadcasts.items():
        plan = workspace.broadcast_plans[bid]
        file, doc = docs.get(bid, (workspace.root / "broadcasts", None))
        for variant_id, template, subject, preheader, lines in _broadcast_sends(broadcast, plan):
            uses.setdefault(template, []).append(
                _Use(
                    f"broadcast:{bid}",
                    file,
                    doc,
                    lines,
                    subject,
                    preheader,
                    frozenset({"email"}),  # an audience may hold any contact
                    plan.utm_for(variant_id),
                )
            )
    return uses


def _broadcast_sends(
    broadcast: Broadcast, plan: BroadcastPlan
) -> list[tuple[str, str, str, str, dict[str, Loc]]]:
    """(variant id, template, subject, preheader, where subject and preheader are written) of
    each email a broadcast may send: its email, or with an A/B test each variant (the winner
    goes to the rest, so the email's own lines only fill in what a variant leaves out)."""
    email: dict[str, Loc] = {"subject": ("email", "subject"), "preheader": ("email", "preheader")}
    if broadcast.ab_test is None:
        return [("", plan.template, plan.subject, plan.preheader, email)]
    sends = []
    pairs = zip(broadcast.ab_test.variants, plan.variants, strict=True)
    for n, (written, variant) in enumerate(pairs):
        at = {
            key: ("ab_test", "variants", n, key) if getattr(written, key) is not None else loc
            for key, loc in email.items()
        }
        sends.append(
            (variant["id"], variant["template"], variant["subject"], variant["preheader"], at)
        )
    return sends


def _sample_fields(workspace: Workspace) -> dict[str, Any]:
    """A contact with every field the workspace knows: forms' fields and values campaigns set."""
    fields: dict[str, Any] = dict(_SAMPLE)
    for form in workspace.forms.values():
        for form_field in form.fields:
            if form_field.name != "email":
                fields.setdefault(form_field.name, f"sample {form_field.name}")
    for campaign in workspace.campaigns.values():
        for step in campaign.steps:
            if step.update_contact is not None:
                for key, value in step.update_contact.set_fields.items():
                    fields.setdefault(key, value)
    return fields


def _utm(workspace: Workspace, campaign_id: str, step_id: str) -> dict[str, Any] | None:
    """The campaign's UTM parameters, as a send would append them (they add to the size)."""
    plan = workspace.plans.get(campaign_id)
    return plan.utm_for(step_id) if plan is not None else None
