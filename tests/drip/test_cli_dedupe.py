"""``drip contacts dedupe`` as an operator runs it: the real ``drip`` executable, against
Temporal's time-skipping server with a journey worker in this process."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from contacts.db import session_scope
from contacts.models import Contact, EnrolmentState
from drip.settings import Settings
from tests.drip.test_cli_journeys import _drip
from tests.engine_support import journeys, workspace_with
from tests.support import SmtpServer
from tests.workflows.test_merge_journeys import SLOW


async def test_dedupe_lists_on_a_dry_run_then_merges_and_ends_the_duplicate_journey(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = workspace_with(tmp_path, SLOW)
    async with journeys(time_env, settings, engine, ws, smtp.mailbox) as j:
        keep = j.contact("ann.lee@gmail.com", first_name="Ann", last_name="Lee")
        gone = j.contact("annlee+shop@googlemail.com")
        j.contact("bob@acme.example", first_name="Robert", last_name="Smith", company="Acme")
        j.contact("rs@acme.example", first_name="Robert", last_name="Smyth", company="Acme")
        await j.enrol("slow-hello", keep)
        await j.enrol("slow-hello", gone)
        theirs = j.enrolment(gone, "slow-hello").workflow_id

        run = await _drip(time_env, settings, ws, "contacts", "dedupe", "--dry-run")
        assert run.returncode == 0, run.stderr
        assert "annlee+shop@googlemail.com" in run.stdout and "suggestion" in run.stdout
        assert "1 exact group, 1 suggestion" in run.stdout and "nothing changed" in run.stdout
        with session_scope(engine) as s:
            assert len(s.exec(select(Contact)).all()) == 4
        assert len(j.enrolments(campaign_id="slow-hello")) == 2

        run = await _drip(time_env, settings, ws, "contacts", "dedupe", "--no-gmail-rules")
        assert run.returncode == 0, run.stderr
        assert "0 exact groups, 1 suggestion" in run.stdout

        run = await _drip(time_env, settings, ws, "contacts", "dedupe")
        assert run.returncode == 0, run.stderr
        assert f"merged {gone} annlee+shop@googlemail.com into {keep}" in run.stdout
        assert "1 journey of merged contacts ended" in run.stdout
        await j.result(theirs)
        rows = j.enrolments(campaign_id="slow-hello")
        assert {e.contact_id for e in rows} == {keep}
        assert sorted(e.state for e in rows) == [EnrolmentState.cancelled, EnrolmentState.running]
        with session_scope(engine) as s:
            bob = s.exec(select(Contact).where(Contact.email == "rs@acme.example")).one()
        assert bob.email == "rs@acme.example"  # a suggestion is never merged
