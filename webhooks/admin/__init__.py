"""The admin API under ``/api``: contacts, their events, campaigns and journeys, for API keys.

Every route takes ``Authorization: Bearer drip_...`` (``auth``) and needs one scope; every
error is problem JSON (RFC 9457), every body is capped (1 MB JSON, 20 MB CSV: 413), and every
route declares its response model and problem responses so the OpenAPI document is complete.
Keys are made with ``drip apikeys create`` (``contacts.apikeys``).
"""

from __future__ import annotations

from fastapi import APIRouter

from webhooks.admin import (
    alerts,
    broadcasts,
    campaigns,
    contacts,
    contacts_csv,
    events,
    journeys,
    lead,
    merge,
    messages,
    messages_tx,
    sales,
    suppressions,
    webhooks_out,
)
from webhooks.admin._common import AdminProblem, Problem

__all__ = ["AdminProblem", "Problem", "router"]

router = APIRouter(prefix="/api")
# the CSV routes first: /contacts/import and /contacts/export are not /contacts/{contact_id}
router.include_router(contacts_csv.router)
router.include_router(contacts.router)
router.include_router(merge.router)
router.include_router(events.router)
router.include_router(lead.router)
router.include_router(campaigns.router)
router.include_router(journeys.router)
router.include_router(sales.router)
router.include_router(alerts.router)
router.include_router(messages.router)
# after messages: GET /messages/interrupted is not GET /messages/{message_id}
router.include_router(messages_tx.router)
router.include_router(broadcasts.router)
router.include_router(suppressions.router)
router.include_router(webhooks_out.router)
