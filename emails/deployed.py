"""The email templates of deployed campaign versions, as the deploy recorded them.

A deploy stores the exact text of every file a campaign's emails are built from and the plan
names them by hash (``campaigns.templates``, ``contacts.deploys``). The worker renders a
journey's email from the files of the journey's own version: a journey started on version A
keeps A's wording after B is deployed, and a template that is new in B sends at once from a
worker started before the file existed (it read the workspace folder only at start).

The texts never travel through workflow history (the plan carries hashes only): they are read
from the database once per worker and kept, since a hash always names the same text, and the
compiled template is cached by content in ``emails.templates``. A deployment recorded before
templates were (no ``templates`` in its plan), or a plan that was never deployed (tests,
benchmarks), answers None here: those emails render from the workspace files, as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from contacts import deploys
from contacts.db import session_scope
from emails._html import Utm
from emails.errors import TemplateError
from emails.templates import CompiledEmail, compile_email

__all__ = ["DeployedTemplate", "DeployedTemplates"]

#: Template texts kept per worker; a text is a few KB, and every campaign version shares its
#: layout and partials.
_TEXTS_MAX = 2_000
#: Templates of campaign versions kept with their compiled forms (the oldest go first).
_TEMPLATES_MAX = 500


@dataclass(frozen=True)
class DeployedTemplate:
    """One template as deployed: ``files`` maps paths under ``emails/`` to their texts; a file
    the workspace named but lacked at deploy (a layout) maps to None."""

    name: str
    files: Mapping[str, str | None]
    #: compiled once per UTM setting: the files never change, so no hashing on each send
    _compiled: dict[Utm | None, CompiledEmail] = field(
        default_factory=dict, compare=False, repr=False
    )

    def compile(self, utm: Utm | None = None) -> CompiledEmail:
        """Compiled exactly as the workspace folder would have compiled these files."""
        known = self._compiled.get(utm)
        if known is not None:
            return known
        compiled = self._compile(utm)
        self._compiled[utm] = compiled
        return compiled

    def _compile(self, utm: Utm | None) -> CompiledEmail:
        source = self.files.get(f"{self.name}.mjml")
        if source is None:
            raise TemplateError("not in the deployed version", template=self.name)
        layout: str | None = None
        layout_name = "layout.mjml"
        for path, text in self.files.items():
            if path.startswith("layouts/"):
                if text is None:
                    stem = path.removeprefix("layouts/").removesuffix(".mjml")
                    raise TemplateError(
                        f"unknown layout {stem!r} (not in emails/layouts/ when deployed)",
                        template=self.name,
                    )
                layout, layout_name = text, path
        partials = {
            path.removeprefix("partials/").removesuffix(".mjml"): text
            for path, text in self.files.items()
            if path.startswith("partials/") and text is not None
        }
        return compile_email(
            source,
            self.name,
            layout=layout,
            layout_name=layout_name,
            partials=partials,
            text_source=self.files.get(f"{self.name}.txt"),
            utm=utm,
        )


class DeployedTemplates:
    """Finds the deployed files of a campaign version's template; one per worker (or API)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        #: (campaign, version) -> its plan's ``templates`` (None: recorded before templates were)
        self._plans: dict[tuple[str, str], dict[str, dict[str, str]] | None] = {}
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._found: OrderedDict[tuple[str, str, str], DeployedTemplate] = OrderedDict()

    def get(self, campaign_id: str, version: str, template: str) -> DeployedTemplate | None:
        """The deployed files of ``template`` in that version, or None to use the workspace's
        (a version deployed before templates were recorded, or never deployed)."""
        with self._lock:
            found = self._found.get((campaign_id, version, template))
        if found is not None:
            return found
        with self._lock:
            known = (campaign_id, version) in self._plans
            files = self._plans.get((campaign_id, version))
        if not known:
            deployed, files = self._load_plan(campaign_id, version)
            if not deployed:
                return None  # not deployed (yet): not cached, a deploy may still record it
        if files is None or template not in files:
            return None
        wanted = files[template]
        texts = self._texts_of(h for h in wanted.values() if h)
        missing = sorted(p for p, h in wanted.items() if h and h not in texts)
        if missing:
            raise TemplateError(
                f"deployed file(s) {', '.join(missing)} not in the database", template=template
            )
        found = DeployedTemplate(
            name=template, files={path: texts[h] if h else None for path, h in wanted.items()}
        )
        with self._lock:
            self._found[(campaign_id, version, template)] = found
            while len(self._found) > _TEMPLATES_MAX:
                self._found.popitem(last=False)
        return found

    def _load_plan(
        self, campaign_id: str, version: str
    ) -> tuple[bool, dict[str, dict[str, str]] | None]:
        """Whether that version is deployed, and its recorded templates (rows never change, so
        the answer is kept)."""
        with session_scope(self._engine) as session:
            row = deploys.find_version(session, campaign_id, version)
            if row is None:
                return False, None
            recorded: Any = row.plan.get("templates")
        files = dict(recorded) if isinstance(recorded, dict) and recorded else None
        with self._lock:
            self._plans[(campaign_id, version)] = files
        return True, files

    def _texts_of(self, hashes: Iterable[str]) -> dict[str, str]:
        wanted = set(hashes)
        with self._lock:
            out = {h: self._texts[h] for h in wanted if h in self._texts}
            for h in out:
                self._texts.move_to_end(h)
        unknown = wanted - out.keys()
        if unknown:
            with session_scope(self._engine) as session:
                loaded = deploys.template_sources(session, unknown)
            out.update(loaded)
            with self._lock:
                self._texts.update(loaded)
                while len(self._texts) > _TEXTS_MAX:
                    self._texts.popitem(last=False)
        return out
