"""Test data of the schemas tests: the 12 real sandbox deliveries and the 18 samples of the spec.

A uniquely named module (not conftest): other test packages have their own conftest.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Delivery:
    name: str
    body: bytes
    headers: dict[str, str]


def capture() -> list[Delivery]:
    """Real sandbox deliveries (bodies byte-exact, copied from the shared capture)."""
    lines = (FIXTURES / "pinwheel-sandbox-capture.jsonl").read_text().splitlines()
    out = []
    for index, line in enumerate(lines):
        item = json.loads(line)
        body = item["body"].encode()
        out.append(Delivery(f"capture-{index}-{json.loads(body)['event']}", body, item["headers"]))
    return out


def doc_samples() -> list[Delivery]:
    """Every sample of pinwheel-webhooks.md (trailing-comma typo fixed), one compact body per line."""
    lines = (FIXTURES / "pinwheel-doc-samples.jsonl").read_text().splitlines()
    return [Delivery(f"doc-{index}-{json.loads(line)['event']}", line.encode(), {}) for index, line in enumerate(lines)]


ALL_DELIVERIES = capture() + doc_samples()
SENT_AT = datetime(2025, 6, 24, 22, 4, 34, tzinfo=UTC)
RECEIVED_AT = datetime(2025, 6, 24, 22, 4, 34, 123456, tzinfo=UTC)
