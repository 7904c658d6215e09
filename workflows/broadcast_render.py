"""Rendering a broadcast's emails, in the worker or in render processes beside it.

Per email, a broadcast does what the journeys' send does (Jinja, tracked links, MIME: about a
third of its CPU) and then SMTP and the outbox (the rest). One Python process does all of it on
one core under one GIL, so on a machine with cores to spare the worker can hand the rendering
to ``DRIP_BROADCAST_RENDER_PROCESSES`` processes of its own (``spawn``ed once, each loading the
workspace and compiling each template once) while its event loop keeps the SMTP connections
and the database busy. Off by default: on a 2-core machine whose other core already runs the
relay, Temporal and the database it measured no gain (1,145-1,401 emails/s without, 1,087-1,413
with, 20,000 emails, in turns). Rendering is pure: nothing in it writes anywhere, so a render
process that dies loses nothing (the batch is retried) and can never send twice. With 0 the
worker renders in its event loop, a few emails between turns.

The jobs and results are small picklable dataclasses: the template texts travel once per chunk
(a few KB, compiled once per process by content), the rendered message back as its bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from emails import Renderer, TemplateError, build_message
from emails.deployed import DeployedTemplate
from emails.list_headers import Mailing

if TYPE_CHECKING:
    from campaigns.workspace import Workspace
    from contacts.models import Contact
    from drip.settings import Settings

__all__ = ["Composer", "RenderJob", "RenderPool", "RenderProcessDied", "RenderSpec", "Rendered"]

#: emails per chunk handed to a render process (or rendered between two event-loop turns)
CHUNK = 50


class RenderProcessDied(Exception):
    """A render process ended mid-chunk; the batch is retried (nothing of it was written)."""


@dataclass(frozen=True)
class RenderSpec:
    """What every email of a send shares."""

    campaign_id: str
    track: bool
    utm: Mapping[str, Any]
    from_addr: str
    reply_to: str | None
    domain: str
    unsubscribe_mailto: str | None
    #: template name -> {path under emails/: text} as the send recorded them (empty: the
    #: workspace's files)
    templates: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    #: the broadcast's List-Id and Feedback-ID (``emails.list_headers``); None: neither
    mailing: Mailing | None = None


@dataclass(frozen=True)
class RenderJob:
    message_id: str
    contact_id: int
    email: str
    fields: dict[str, Any]
    #: the variant id, or "email"
    step: str
    template: str
    subject: str
    preheader: str


@dataclass
class Rendered:
    message_id: str
    subject: str
    data: bytes = b""
    links: list[tuple[str, int, str]] = field(default_factory=list)
    #: the template's error; nothing to send
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Addressee:
    """What the renderer reads of a contact (id, email, fields): building a SQLModel row per
    email costs about a millisecond, more than the render."""

    id: int
    email: str
    fields: dict[str, Any]


class Composer:
    """Renders and builds broadcast emails with one renderer; compiles each template once."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self._deployed: dict[tuple[str, tuple[tuple[str, str | None], ...]], DeployedTemplate] = {}

    def _template(self, spec: RenderSpec, name: str) -> DeployedTemplate | None:
        files = spec.templates.get(name)
        if not files:
            return None
        key = (name, tuple(sorted(files.items())))
        found = self._deployed.get(key)
        if found is None:
            found = self._deployed[key] = DeployedTemplate(name=name, files=dict(files))
        return found

    def compose(self, spec: RenderSpec, job: RenderJob) -> Rendered:
        contact = cast("Contact", _Addressee(job.contact_id, job.email, job.fields))
        utm = dict(spec.utm)
        if utm and not utm.get("content"):
            utm["content"] = job.step
        try:
            rendered = self.renderer.render(
                template=job.template,
                subject=job.subject,
                preheader=job.preheader,
                contact=contact,
                message_id=job.message_id,
                campaign_id=spec.campaign_id,
                step_id=job.step,
                track=spec.track,
                utm=utm or None,
                deployed=self._template(spec, job.template),
            )
        except TemplateError as exc:
            return Rendered(job.message_id, job.subject, error=f"template: {exc}")
        data = build_message(
            rendered,
            from_addr=spec.from_addr,
            to_addr=job.email,
            reply_to=spec.reply_to,
            message_id=job.message_id,
            domain=spec.domain,
            unsubscribe_mailto=spec.unsubscribe_mailto,
            list_id=spec.mailing.list_id if spec.mailing else None,
            feedback_id=spec.mailing.feedback_id(job.step) if spec.mailing else None,
        )
        return Rendered(job.message_id, rendered.subject, data, rendered.links)

    def compose_all(self, spec: RenderSpec, jobs: list[RenderJob]) -> list[Rendered]:
        return [self.compose(spec, job) for job in jobs]


#: the render process's composer (set by ``_start``)
_COMPOSER: Composer | None = None


def _start(settings_values: dict[str, Any], secret: bytes, root: str) -> None:
    """A render process's start: the worker's settings and workspace, the worker's signing key
    (in dev it is a file the worker read already)."""
    global _COMPOSER
    from campaigns.workspace import load_workspace
    from drip.settings import Settings

    settings = Settings(**{**settings_values, "secret_key": secret.decode()})
    _COMPOSER = Composer(Renderer(load_workspace(Path(root)), settings))


def _compose_in_process(spec: RenderSpec, jobs: list[RenderJob]) -> list[Rendered]:
    assert _COMPOSER is not None, "render process not started"
    return _COMPOSER.compose_all(spec, jobs)


class RenderPool:
    """The worker's render processes (or none: its own event loop renders)."""

    def __init__(
        self, settings: Settings, workspace: Workspace, renderer: Renderer, processes: int
    ) -> None:
        self.local = Composer(renderer)
        self.processes = processes
        self._settings = settings
        self._root = workspace.root
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            values = self._settings.model_dump()
            values.pop("secret_key", None)
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.processes,
                # not fork: the worker has threads (Temporal's core, the database's) whose
                # locks a forked child would inherit held
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(values, self._settings.secret(), str(self._root)),
            )
        return self._pool

    async def compose(self, spec: RenderSpec, jobs: list[RenderJob]) -> list[Rendered]:
        """Every job's email, in order."""
        chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
        if not self.processes:
            out: list[Rendered] = []
            for chunk in chunks:
                out.extend(self.local.compose_all(spec, chunk))
                await asyncio.sleep(0)  # the sends in flight move between chunks
            return out
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, _compose_in_process, spec, c) for c in chunks)
            )
        except concurrent.futures.process.BrokenProcessPool as exc:
            # a render process died (killed, out of memory): start afresh next time; the
            # batch fails before anything of it was written, and its retry renders again.
            # Not re-raised as is: the Temporal SDK takes a broken executor for its own and
            # stops the whole worker.
            self.close()
            raise RenderProcessDied(f"a broadcast render process died: {exc}") from None
        return [r for part in parts for r in part]

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
