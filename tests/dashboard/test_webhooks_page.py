"""The Webhooks page (``/dashboard/admin/webhooks``): admins only, endpoints and deliveries
listed, and a failed delivery resent from its button through real Temporal to a real HTTPS
receiver (same ``webhook-id``, a signature the ``standardwebhooks`` library accepts)."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import trustme
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaigns.workspace import load_workspace
from contacts.db import session_scope
from contacts.webhook_endpoints import WebhookDelivery, WebhookEndpoint, new_secret
from contacts.webhook_events import CONTACT_CREATED, emit
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.support import api_client, copy_workspace
from tests.workflows.test_webhooks_out import LOOPBACK, Receiver, Rig, _delivered
from workflows.outbound import OutboundPolicy
from workflows.webhook_lane import WebhookLane
from workflows.webhooks_out import WebhookDispatcher, WebhookOutActivities

PAGE = "/dashboard/admin/webhooks"


async def test_a_failed_delivery_is_listed_and_resent_from_the_dashboard(
    settings: Settings, engine: Engine, tmp_path: Path, time_env: WorkflowEnvironment
) -> None:
    ca = trustme.CA()
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(serving)
    receiver = await Receiver(serving).start()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    policy = OutboundPolicy(allowed_hosts=frozenset(), allowed_networks=LOOPBACK, verify=trust)
    queue = f"webhooks-{uuid.uuid4()}"
    local = settings.model_copy(
        update={
            "temporal_address": time_env.client.service_client.config.target_host,
            "temporal_task_queue": queue,
        }
    )
    secret = new_secret()
    with session_scope(engine) as s:
        s.add(
            WebhookEndpoint(
                name="crm",
                url=receiver.url("/hook"),
                event_types=["*"],
                secret=secret,
                owner_email="ops@example.com",
            )
        )
        emit(s, CONTACT_CREATED, contact_id=1, data={"email": "ann@example.com"})
    make_user(engine, "ops@example.com", "admin")
    make_user(engine, "mia@example.com", "marketer")
    rig = Rig(
        time_env,
        engine,
        WebhookDispatcher(client=time_env.client, engine=engine, task_queue=queue),
        queue,
    )
    acts = WebhookOutActivities(engine=engine, policy=policy)
    try:
        async with Worker(
            time_env.client, task_queue=queue, workflows=[WebhookLane], activities=acts.all()
        ):
            await rig.dispatcher.dispatch_once()
            await rig.until(_delivered(rig, 1))
            with session_scope(engine) as s:  # as a day of failures would have left it
                delivery = s.get(WebhookDelivery, 1)
                assert delivery is not None
                delivery.state = "failed"
                delivery.last_error = "localhost answered 503"

            async with api_client(local, load_workspace(copy_workspace(tmp_path)), engine) as http:
                await sign_in(http, "mia@example.com")
                assert (await http.get(PAGE)).status_code == 403
                http.cookies.clear()
                await sign_in(http, "ops@example.com")
                page = await http.get(PAGE)
                assert page.status_code == 200
                assert f'href="{PAGE}"' in page.text
                assert "crm" in page.text and "failed" in page.text
                assert "localhost answered 503" in page.text
                csrf = form_csrf(page.text)
                no_csrf = await http.post(f"{PAGE}/resend", data={"delivery_id": "1"})
                assert no_csrf.status_code == 403
                unknown = await http.post(
                    f"{PAGE}/resend", data={"csrf_token": csrf, "delivery_id": "99"}
                )
                assert unknown.status_code == 404
                resent = await http.post(
                    f"{PAGE}/resend", data={"csrf_token": csrf, "delivery_id": "1"}
                )
                assert resent.status_code == 200, resent.text
                assert "Delivery 1 is queued again" in resent.text
                await rig.until(lambda: len(receiver.received) == 2 and _delivered(rig, 1)())
    finally:
        await receiver.stop()
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert Webhook(secret).verify(second.body, second.headers)["data"] == {
        "email": "ann@example.com"
    }
