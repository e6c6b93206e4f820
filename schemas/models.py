"""Pydantic models of webhook bodies and of every modelled payload.

Conventions: every model accepts and keeps unknown fields (`extra="allow"`, read back through
`model_extra`) because Pinwheel adds fields over time; fields documented as optional, deprecated or
"if applicable", and fields real deliveries send as null, are `X | None = None`. Model class names are
the Avro record names (see `schemas/avro/`), which `schemas.datum` relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from schemas.catalog import PAYSTUBS_SYNC_EVENTS, SHIFTS_SYNC_EVENTS
from schemas.enums import MonitoringStatus, Outcome, PlatformAction, PlatformType, SyncStatus


def _as_utc(value: datetime) -> datetime:
    # Avro timestamp-micros stores an instant; fastavro would read a naive datetime as local time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def uuid_or_none(value: Any) -> Any:
    """A string that is not a UUID becomes None; anything else is left for the field's own validation.

    Pinwheel sends "an undefined link token" on events of refresh jobs (DDA monitoring): `""`,
    `"undefined"` or any other non-UUID text. Such an id identifies nothing, so the typed field is null and
    the exact value stays in `raw_body`; a non-string (a number, an object) is still a validation error.
    """
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            return None
    return value


LenientUuid = Annotated[UUID | None, BeforeValidator(uuid_or_none)]
"""A UUID field Pinwheel documents as possibly "undefined": any string accepted, a non-UUID one read as null."""
Long = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""An integer that fits Avro `long`."""


class PinwheelModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# -- nested records ---------------------------------------------------------------------------------


class AdditionalPlatform(PinwheelModel):
    platform_type: PlatformType
    action: PlatformAction
    platform_id: UUID | None = None


class ItemRef(PinwheelModel):
    """An item of `added` / `deleted` (paystubs, shifts)."""

    id: UUID
    document_type: str | None = None
    year: Long | None = None
    pay_date: date | None = None


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


# Documented as always-present arrays; null/absent reads as empty. A plain (non-union) Avro array
# also encodes markedly faster than ["null", array] for the 60-item batches seen in real deliveries.
ItemRefs = Annotated[list[ItemRef], BeforeValidator(_none_as_empty)]


class JobParams(PinwheelModel):
    """Params of jobs that document none: everything sent lands in `model_extra`."""


class DirectDepositSwitchParams(PinwheelModel):
    amount: Long | None = None


class PaystubsParams(PinwheelModel):
    from_pay_date: date | None = None
    to_pay_date: date | None = None
    count: Long | None = None
    sync_status: SyncStatus | None = None


class ShiftsParams(PinwheelModel):
    count: Long | None = None
    sync_status: SyncStatus | None = None


# -- payloads -------------------------------------------------------------------------------------


class Payload(PinwheelModel):
    """Base of every payload: all carry the account, and real deliveries add end_user_id."""

    account_id: UUID
    # Pinwheel's end_user_id is the customer's own user id (any text of 1-255 characters, "returned in all
    # webhook events"), typed `uuid` by the v1/v2 schemas: a value that is not a UUID is null in the typed
    # field (exactly as sent in `raw_body`) rather than costing the event.
    end_user_id: LenientUuid = None


class AccountAdded(Payload):
    link_token_id: LenientUuid = None  # never an identifier of ours: account_id is (see JobPayload)
    platform_id: UUID
    platform_name: str
    created_at: UtcDatetime
    connected: bool
    monitoring_status: MonitoringStatus
    platform_type: PlatformType | None = None
    reported_platform_name: str | None = None
    reserved_platform_id: UUID | None = None


class AccountAdditionalConnectionsRecommended(Payload):
    additional_platforms: list[AdditionalPlatform]


class AccountMonitoringStatusUpdated(Payload):
    updated_at: UtcDatetime
    current_monitoring_status: MonitoringStatus


class JobPayload(Payload):
    """Fields shared by every job result event."""

    id: UUID | None = None  # deprecated by Pinwheel: may disappear, so never required
    name: str
    # "UUID of Link token used to initialize Link, or an undefined link token if triggered by a refresh job
    # (such as from DDA Monitoring). You should use account_id as the main identifier."
    link_token_id: LenientUuid = None
    timestamp: UtcDatetime
    outcome: Outcome
    error_code: str | None = None
    error_type: str | None = None


class DirectDepositAllocationsAdded(JobPayload):
    params: JobParams | None = None


class DirectDepositSwitchAdded(JobPayload):
    params: DirectDepositSwitchParams | None = None


class EmploymentAdded(JobPayload):
    params: JobParams | None = None


class IdentityAdded(JobPayload):
    params: JobParams | None = None


class IncomeAdded(JobPayload):
    params: JobParams | None = None


class PaystubsAdded(JobPayload):
    params: PaystubsParams | None = None
    added: ItemRefs = []
    deleted: ItemRefs = []


class PaystubsSynced(JobPayload):
    params: PaystubsParams | None = None


class ShiftsAdded(JobPayload):
    params: ShiftsParams | None = None
    added: ItemRefs = []
    deleted: ItemRefs = []


class ShiftsSynced(JobPayload):
    params: ShiftsParams | None = None


PAYLOAD_MODELS: Mapping[str, type[Payload]] = MappingProxyType(
    {
        "account.added": AccountAdded,
        "account.additional_connections_recommended": AccountAdditionalConnectionsRecommended,
        "account.monitoring_status.updated": AccountMonitoringStatusUpdated,
        "direct_deposit_allocations.added": DirectDepositAllocationsAdded,
        "direct_deposit_switch.added": DirectDepositSwitchAdded,
        "employment.added": EmploymentAdded,
        "identity.added": IdentityAdded,
        "income.added": IncomeAdded,
        "paystubs.added": PaystubsAdded,
        **dict.fromkeys(sorted(PAYSTUBS_SYNC_EVENTS), PaystubsSynced),
        "shifts.added": ShiftsAdded,
        **dict.fromkeys(sorted(SHIFTS_SYNC_EVENTS), ShiftsSynced),
    }
)
"""Payload model per modelled event type."""


def payload_model_for(event_type: str) -> type[Payload] | None:
    """The payload model of an event type, None for types routed to the `other` family."""
    return PAYLOAD_MODELS.get(event_type)


def parse_payload(event_type: str, payload: Any) -> Payload | None:
    """Validate a payload (raises pydantic.ValidationError); None for unmodelled event types."""
    model = PAYLOAD_MODELS.get(event_type)
    return None if model is None else model.model_validate(payload)
