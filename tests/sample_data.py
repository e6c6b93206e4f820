"""The test data the repository carries (no test reads anything outside the repository):

- the 12 real deliveries captured from Pinwheel's sandbox: the simulator's copy, the only one
  (`simulator.traffic.load_capture`);
- the sample bodies of Pinwheel's webhook documentation, one file each in tests/fixtures/doc-samples, verbatim:
  two of them (paystubs.added, shifts.added) carry the documentation's trailing-comma typo, so are not JSON.

A module of the tests package (`tests.sample_data`), shared by the gateway and the schemas tests.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

DOC_SAMPLES_DIR = Path(__file__).parent / "fixtures" / "doc-samples"
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def doc_samples() -> list[str]:
    """Every documented sample body, verbatim, in the documentation's order."""
    return [path.read_text() for path in sorted(DOC_SAMPLES_DIR.glob("*.json"))]


def doc_samples_as_json() -> list[str]:
    """The documented samples with the trailing-comma typo mended, as compact `json.dumps` text."""
    return [json.dumps(json.loads(_TRAILING_COMMA.sub(r"\1", text))) for text in doc_samples()]


def account_added(account_id: str, at: datetime) -> dict[str, Any]:
    """An `account.added` body of a connected Workday account, with a new event id."""
    return {
        "event_id": str(uuid.uuid4()),
        "event": "account.added",
        "payload": {
            "account_id": account_id,
            "link_token_id": str(uuid.uuid4()),
            "platform_id": str(uuid.uuid4()),
            "platform_name": "Workday",
            "created_at": at.isoformat(),
            "connected": True,
            "monitoring_status": "active",
        },
    }
