"""The one-dataclass-in, one-dataclass-out contracts of the broadcast workflow and its
activities. Add fields with defaults only: recorded histories must keep deserialising."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BATCH_ACTIVITY",
    "PICK_WINNER_ACTIVITY",
    "QUERY_BROADCAST",
    "SET_STATE_ACTIVITY",
    "SIGNAL_BROADCAST",
    "SNAPSHOT_ACTIVITY",
    "BatchInput",
    "BatchResult",
    "BroadcastControl",
    "BroadcastInput",
    "BroadcastStatus",
    "PickWinnerInput",
    "PickWinnerResult",
    "SetStateInput",
    "SlotRange",
    "SnapshotInput",
    "SnapshotResult",
]

SIGNAL_BROADCAST = "control"
QUERY_BROADCAST = "status"
SNAPSHOT_ACTIVITY = "broadcast_snapshot"
BATCH_ACTIVITY = "broadcast_batch"
PICK_WINNER_ACTIVITY = "broadcast_pick_winner"
SET_STATE_ACTIVITY = "broadcast_set_state"


@dataclass
class BroadcastControl:
    """``pause``, ``resume`` or ``cancel``, and who asked (kept in the send's note)."""

    action: str
    by: str = ""


@dataclass
class SlotRange:
    """Recipients ``first``..``last`` are due at ``due`` (ISO 8601; empty: with the send)."""

    first: int
    last: int
    due: str = ""


@dataclass
class SnapshotInput:
    send_id: str


@dataclass
class SnapshotResult:
    audience: int
    #: the A/B test's sample: recipients 1..sample (0: no test)
    sample: int = 0
    slots: list[SlotRange] = field(default_factory=list)


@dataclass
class BatchInput:
    send_id: str
    first: int
    last: int
    #: the variant everyone in the batch without their own gets (the A/B winner); empty: the
    #: broadcast's email
    variant: str = ""
    #: this batch's share of the broadcast's rate (emails/s); 0: no limit
    rate: float = 0.0


@dataclass
class BatchResult:
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    interrupted: int = 0
    #: recipients an earlier attempt had already finished
    already: int = 0
    #: recipients left pending because their domain held them back (backoff, pace, warm-up):
    #: the broadcast sends them in a later round, from ``retry_at`` (ISO 8601)
    deferred: int = 0
    retry_at: str = ""


@dataclass
class PickWinnerInput:
    send_id: str


@dataclass
class PickWinnerResult:
    winner: str


@dataclass
class SetStateInput:
    send_id: str
    state: str
    note: str | None = None


@dataclass
class BroadcastInput:
    """The send, and where it is (carried over continue-as-new)."""

    send_id: str
    #: ``BroadcastPlan`` fields the workflow needs: send_at, local_time, rate, variants,
    #: ab_wait_seconds (the whole plan is in the send's row)
    send_at: str = ""
    rate: float = 0.0
    ab_wait_seconds: float = 0.0
    has_test: bool = False
    #: recipients per batch activity, and batch activities at once (``DRIP_BROADCAST_*``)
    batch_size: int = 1000
    parallel: int = 4
    #: batches per run of the workflow before it continues as new (its history stays bounded)
    batches_per_run: int = 400
    #: a batch whose worker is silent this long is retried elsewhere (a killed worker)
    heartbeat_seconds: float = 30.0
    snapshot: SnapshotResult | None = None
    #: the first recipient (seq) no batch has been given yet
    next_seq: int = 1
    #: ``start``, ``sample``, ``testing``, ``rest``
    phase: str = "start"
    winner: str = ""
    paused: bool = False
    totals: BatchResult = field(default_factory=BatchResult)
    #: when the A/B test's sample went out (ISO 8601), so the wait survives continue-as-new
    tested_at: str = ""
    #: batches (``[first, last]``) that left recipients pending because their domain held
    #: them back, and the earliest time to try again (ISO 8601): the next round's work
    retry: list[list[int]] = field(default_factory=list)
    retry_at: str = ""
    #: the recipients those batches left pending
    held: int = 0
    #: the round under way: the batches it has not started yet
    round: list[list[int]] = field(default_factory=list)


@dataclass
class BroadcastStatus:
    phase: str
    paused: bool
    cancelled: bool
    next_seq: int
    audience: int
    totals: BatchResult
    winner: str = ""
