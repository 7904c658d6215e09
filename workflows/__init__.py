"""Temporal: the journey workflow, its activities, the worker, and start/signal helpers."""

from workflows.client import connect, enrol, journey_state, journey_workflow_id, signal_journey
from workflows.journey import JourneyWorkflow
from workflows.types import JourneyInput, JourneySignal, JourneyState

__all__ = [
    "JourneyInput",
    "JourneySignal",
    "JourneyState",
    "JourneyWorkflow",
    "connect",
    "enrol",
    "journey_state",
    "journey_workflow_id",
    "signal_journey",
]
