"""The campaign rollups: what the campaign list counts, kept as it happens instead of recounted
over every event and hit on each page view.

``campaign_reach`` holds one row per (campaign, step, kind, contact) for the first human open
or click of a contact, and one more with ``step_id`` ``""`` for the campaign as a whole:
unique openers and clickers are then a count over a narrow primary-key range, and stay exact
(a distinct count cannot be summed from per-day buckets, a set can be counted). Rows hold no
personal data beyond the contact id, which erasure keeps too (the contact row stays).

``campaign_counters`` holds running totals that are never "unique": machine opens and clicks
(tracking hits the filter flagged), counted once when a hit is consumed. They are aggregates
about no one: erasing or merging a contact leaves them as they are.

Both are written in the transaction that writes what they count (``contacts.rollups``), and
``drip db rollups`` recomputes them from the events and hits if ever in doubt.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel

__all__ = ["CAMPAIGN_WIDE", "CampaignCounter", "CampaignReach"]

#: the ``step_id`` of a campaign's whole-campaign reach rows
CAMPAIGN_WIDE = ""


class CampaignReach(SQLModel, table=True):
    __tablename__ = "campaign_reach"

    campaign_id: str = Field(primary_key=True, max_length=200)
    #: ``open`` or ``click``
    kind: str = Field(primary_key=True, max_length=16)
    step_id: str = Field(primary_key=True, max_length=200)
    contact_id: int = Field(primary_key=True, index=True)


class CampaignCounter(SQLModel, table=True):
    __tablename__ = "campaign_counters"

    campaign_id: str = Field(primary_key=True, max_length=200)
    #: ``bot_open`` or ``bot_click``
    metric: str = Field(primary_key=True, max_length=32)
    n: int = 0
