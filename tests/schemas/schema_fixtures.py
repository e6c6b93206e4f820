"""Test data of the schemas tests: the 12 real sandbox deliveries and the 18 samples of the spec.

A uniquely named module (not conftest): other test packages have their own conftest.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from simulator.traffic import load_capture
from tests.sample_data import doc_samples_as_json


@dataclass(frozen=True)
class SampleDelivery:
    name: str
    body: bytes
    headers: dict[str, str]


def capture() -> list[SampleDelivery]:
    """Real sandbox deliveries (bodies byte-exact, the simulator's copy of the capture)."""
    out = []
    for index, item in enumerate(load_capture()):
        body = item["body"].encode()
        out.append(SampleDelivery(f"capture-{index}-{json.loads(body)['event']}", body, item["headers"]))
    return out


def doc_samples() -> list[SampleDelivery]:
    """Every documented sample (trailing-comma typo mended), as compact JSON."""
    texts = doc_samples_as_json()
    return [
        SampleDelivery(f"doc-{index}-{json.loads(text)['event']}", text.encode(), {})
        for index, text in enumerate(texts)
    ]


ALL_DELIVERIES = capture() + doc_samples()
SENT_AT = datetime(2025, 6, 24, 22, 4, 34, tzinfo=UTC)
RECEIVED_AT = datetime(2025, 6, 24, 22, 4, 34, 123456, tzinfo=UTC)
