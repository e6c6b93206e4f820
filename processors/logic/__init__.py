"""Pure processor logic (functional core): dedupe, pending/final join, account table.

No Kafka, no disk, no asyncio: the runtime in ``processors/runtime`` feeds ``Event`` values to an
``AccountProcessor`` and publishes what it returns. Semantics: docs/processing.md.
"""

from processors.logic.account_table import AccountState, Recommendation, SyncProgress
from processors.logic.codec import (
    ACCOUNT_JOBS_SERDE,
    ACCOUNT_STATE_SERDE,
    INT_SERDE,
    Serde,
    StateCodecError,
)
from processors.logic.config import LogicConfig
from processors.logic.events import (
    Event,
    EventEnvelope,
    InvalidEvent,
    event_from_payload,
    event_from_webhook,
)
from processors.logic.join import AccountJobs, JobOutcome, JobState
from processors.logic.outputs import (
    AccountStateSnapshot,
    AccountUpdate,
    Change,
    Output,
    ReadinessUpdate,
    RejectedEvent,
)
from processors.logic.processor import AccountProcessor
from processors.logic.readiness import ReadinessRule, Verdict, parse_rule
from processors.logic.stores import (
    InMemoryStore,
    KeyValueStore,
    OrderedKeyValueStore,
    Stores,
    in_memory_stores,
)

__all__ = [
    "ACCOUNT_JOBS_SERDE",
    "ACCOUNT_STATE_SERDE",
    "INT_SERDE",
    "AccountJobs",
    "AccountProcessor",
    "AccountState",
    "AccountStateSnapshot",
    "AccountUpdate",
    "Change",
    "Event",
    "EventEnvelope",
    "InMemoryStore",
    "InvalidEvent",
    "JobOutcome",
    "JobState",
    "KeyValueStore",
    "LogicConfig",
    "OrderedKeyValueStore",
    "Output",
    "ReadinessRule",
    "ReadinessUpdate",
    "Recommendation",
    "RejectedEvent",
    "Serde",
    "StateCodecError",
    "Stores",
    "SyncProgress",
    "Verdict",
    "event_from_payload",
    "event_from_webhook",
    "in_memory_stores",
    "parse_rule",
]
