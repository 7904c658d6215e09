"""Loading a workspace's ``broadcasts/*.yaml``, and what a broadcast file cannot check alone.

The model (``campaigns.broadcasts``) refuses what one file can see is wrong, each at its field's
position; here come the checks that need the rest of the workspace (templates, topics) and the
audience, which must compile to SQL since a send selects its audience in the database. Every
problem is a ``Problem`` at its file, line and field, reported by ``load_workspace`` with every
other problem of the workspace.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import registry

from campaigns.broadcasts import Broadcast, compile_broadcast
from campaigns.conditions import ConditionError, parse_condition, to_sql
from campaigns.errors import CampaignError, Problem, hint
from campaigns.loader import Loc, Located, load_model, load_yaml, problem_at

__all__ = ["audience_problem", "check_broadcast", "load_broadcasts"]

#: The columns of ``contacts`` an audience may test, as ``to_sql`` reads them. This package
#: imports nothing of ``contacts``; tests check these match the real table.
_CONTACTS = sa.Table(
    "contacts",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("fields", sa.JSON),
    sa.Column("tags", sa.JSON),
    sa.Column("score", sa.Integer),
    sa.Column("status", sa.String(16)),
)
#: Where a send selects its audience: it must compile for both.
_DIALECTS = tuple(registry.load(name)() for name in ("sqlite", "postgresql"))


def audience_problem(text: str) -> ConditionError | None:
    """Why an audience cannot select contacts in the database (the column it is at), or None.

    The send selects its audience with ``to_sql`` on SQLite or PostgreSQL, so an audience that
    parses but tests events, opens or ``properties.`` is refused here, not when the send starts."""
    try:
        where = to_sql(parse_condition(text), _CONTACTS)
        for dialect in _DIALECTS:
            where.compile(dialect=dialect)
    except ConditionError as exc:
        return exc
    except sa.exc.SQLAlchemyError as exc:
        return ConditionError(f"cannot be compiled to SQL: {exc}", 1)
    return None


def check_broadcast(
    doc: Located,
    broadcast: Broadcast,
    *,
    templates: Collection[str],
    topics: Collection[str] | None,
) -> list[Problem]:
    """Every problem with what the broadcast names (templates, a topic) and with its audience,
    in file order; ``topics`` None: the workspace's topics are unknown (workspace.yaml is broken,
    and reported on its own)."""
    problems: list[Problem] = []

    def template(loc: Loc, name: str | None) -> None:
        if name is not None and name not in templates:
            problems.append(
                problem_at(doc, loc, f"template '{name}' does not exist{hint(name, templates)}")
            )

    template(("email", "template"), broadcast.email.template)
    if broadcast.ab_test is not None:
        for n, variant in enumerate(broadcast.ab_test.variants):
            template(("ab_test", "variants", n, "template"), variant.template)
        problems += _same_emails(doc, broadcast)
    topic = broadcast.topic
    if topic is not None and topics is not None and topic not in topics:
        known = hint(topic, topics) if topics else " (it has none)"
        problems.append(
            problem_at(doc, ("topic",), f"topic '{topic}' is not in workspace.yaml topics{known}")
        )
    if broadcast.audience is not None and (found := audience_problem(broadcast.audience)):
        line, col = doc.inside(("audience",), found.column)
        problems.append(Problem(doc.file, line, col, "audience", found.message))
    return sorted(problems, key=lambda p: (p.line, p.column))


def _same_emails(doc: Located, broadcast: Broadcast) -> list[Problem]:
    """Two variants that send the very same email test nothing."""
    plan = compile_broadcast(broadcast)
    problems = []
    seen: dict[tuple[str, str, str], str] = {}
    for n, variant in enumerate(plan.variants):
        email = (variant["subject"], variant["template"], variant["preheader"])
        if (first := seen.get(email)) is not None:
            problems.append(
                problem_at(
                    doc,
                    ("ab_test", "variants", n, "id"),
                    f"variant '{variant['id']}' sends the same email as '{first}'",
                )
            )
        seen.setdefault(email, variant["id"])
    return problems


def load_broadcasts(
    root: Path,
    *,
    templates: Collection[str],
    topics: Collection[str] | None,
    display: Callable[[Path], str] = str,
) -> tuple[dict[str, Broadcast], list[Problem]]:
    """The valid broadcasts of ``root/broadcasts/*.yaml`` by id, and every problem of the
    others. A file is named after its broadcast's id: the CLI and the dashboard find a
    broadcast by that name, and its sends are recorded under it."""
    broadcasts: dict[str, Broadcast] = {}
    problems: list[Problem] = []
    for path in sorted((root / "broadcasts").glob("*.yaml")):
        try:
            doc = load_yaml(path, display=display(path))
            broadcast = load_model(doc, Broadcast)
        except CampaignError as exc:
            problems += exc.problems
            continue
        found = check_broadcast(doc, broadcast, templates=templates, topics=topics)
        if broadcast.id != path.stem:
            found.insert(
                0,
                problem_at(
                    doc,
                    ("id",),
                    f"broadcast id '{broadcast.id}' must match the file name '{path.stem}'",
                ),
            )
        if found:
            problems += found
            continue
        broadcasts[broadcast.id] = broadcast
    return broadcasts, problems
