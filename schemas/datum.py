"""Payload models ↔ Avro datums, and the typed view of a decoded family-topic record.

Known fields become Avro fields; unknown fields of a nested record go to that record's `extra_json`,
unknown top-level payload fields to the envelope's `extra_json` (architecture.md). Reading merges them
back, so `payload_from_datum(payload_to_datum(m), extra_json_of(m)) == m`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from schemas import jsontext
from schemas.catalog import Family, family_of
from schemas.models import PAYLOAD_MODELS, Payload

AVRO_NAMESPACE = "pinwheel"
RECORD_MODELS: Mapping[str, type[Payload]] = {
    f"{AVRO_NAMESPACE}.{model.__name__}": model for model in PAYLOAD_MODELS.values()
}
"""Avro payload record full name → payload model."""


def record_name(model: Payload | type[Payload]) -> str:
    cls = model if isinstance(model, type) else type(model)
    return f"{AVRO_NAMESPACE}.{cls.__name__}"


def extra_json_of(model: BaseModel) -> str | None:
    """JSON object text of the fields the model does not know, None when there are none."""
    extra = model.model_extra
    return jsontext.dumps(extra) if extra else None


# Values the Avro writer takes as they are: the common case, checked first by exact type (the gateway
# builds a datum per request).
_AS_IS = frozenset({str, int, float, bool, type(None), UUID, datetime, date})


def _value(value: Any) -> Any:
    if type(value) in _AS_IS:
        return value
    if isinstance(value, BaseModel):
        out = _fields(value)
        out["extra_json"] = extra_json_of(value)
        return out
    if isinstance(value, list):
        return [_value(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def _fields(model: BaseModel) -> dict[str, Any]:
    # A pydantic model's __dict__ holds exactly its declared fields (extras live in model_extra).
    return {name: _value(value) for name, value in model.__dict__.items()}


def payload_to_datum(payload: Payload) -> tuple[str, dict[str, Any]]:
    """The payload as an Avro union branch `(record full name, record)`, without its top-level extras."""
    return record_name(payload), _fields(payload)


def _merge_extras(value: Any) -> Any:
    if isinstance(value, dict):
        out = {key: _merge_extras(item) for key, item in value.items() if key != "extra_json"}
        extra = value.get("extra_json")
        if extra:
            out.update(jsontext.loads(extra))
        return out
    if isinstance(value, list):
        return [_merge_extras(item) for item in value]
    return value


def payload_from_datum(payload: Any, extra_json: str | None, *, event_type: str | None = None) -> Payload:
    """Rebuild the payload model from a decoded union value.

    `payload` is `(record name, record)` as our codec decodes it, or a bare record dict (a plain fastavro
    read without return_record_name) — then `event_type` picks the model.
    """
    if isinstance(payload, tuple):
        name, record = payload
        model = RECORD_MODELS[name]
    else:
        record = payload
        if event_type is None or event_type not in PAYLOAD_MODELS:
            raise ValueError("a bare payload record needs a modelled event_type")
        model = PAYLOAD_MODELS[event_type]
    merged = _merge_extras(record)
    if extra_json:
        merged.update(jsontext.loads(extra_json))
    return model.model_validate(merged)


@dataclass(frozen=True, slots=True)
class FamilyEvent:
    """What processors read from a family topic record."""

    event_id: str
    event_type: str
    family: Family
    webhook_id: str | None
    pinwheel_version: str | None
    sent_at: datetime
    received_at: datetime
    payload: Payload | None
    """Typed payload; None for the `other` family."""
    raw_payload: Any
    """The untyped payload of an `other` event (parsed from extra_json); None for typed families."""
    raw_body: bytes
    x_pinwheel_signature: str | None = None
    """The signature header the gateway verified (None on records written before schema v2)."""
    x_timestamp: str | None = None
    """The x-timestamp header as received, the text the signature covers (None before schema v2)."""

    @property
    def account_id(self) -> str | None:
        if self.payload is not None:
            return str(self.payload.account_id)
        value = self.raw_payload.get("account_id") if isinstance(self.raw_payload, dict) else None
        return value if isinstance(value, str) else None


def read_family_record(datum: Mapping[str, Any]) -> FamilyEvent:
    """The typed view of a decoded family-topic datum (pinwheel.<Family>Event)."""
    event_type: str = datum["event_type"]
    extra_json: str | None = datum.get("extra_json")
    if datum.get("payload") is None:
        # The record's shape, not today's catalog, decides: an old `other` record stays untyped.
        family = Family.OTHER
        payload = None
        raw_payload = jsontext.loads(extra_json) if extra_json is not None else None
    else:
        family = family_of(event_type)
        payload = payload_from_datum(datum["payload"], extra_json, event_type=event_type)
        raw_payload = None
    return FamilyEvent(
        event_id=datum["event_id"],
        event_type=event_type,
        family=family,
        webhook_id=datum.get("webhook_id"),
        pinwheel_version=datum.get("pinwheel_version"),
        sent_at=datum["sent_at"],
        received_at=datum["received_at"],
        payload=payload,
        raw_payload=raw_payload,
        raw_body=datum["raw_body"],
        x_pinwheel_signature=datum.get("x_pinwheel_signature"),
        x_timestamp=datum.get("x_timestamp"),
    )
