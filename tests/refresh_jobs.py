"""Bodies as a refresh job (DDA monitoring) may send them: the documented samples with an "undefined" link token.

Pinwheel documents `link_token_id` on every job event as "UUID of Link token used to initialize Link, or an
undefined link token if triggered by a refresh job (such as from DDA Monitoring)". What "undefined" looks like on
the wire is not documented, so every shape a JavaScript-or-Python backend plausibly sends is covered: an empty
string, the text "undefined", the field left out, and some other non-UUID text.

A module of the tests package (`tests.refresh_jobs`), shared by the schemas, processors and end-to-end tests.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.sample_data import doc_samples_as_json

#: label -> the link_token_id value sent (None: the field is left out).
LINK_TOKEN_SHAPES: dict[str, str | None] = {
    "empty": "",
    "undefined": "undefined",
    "missing": None,
    "not_a_uuid": "dda-monitoring-refresh-2025-06-24",
}


def samples_with_link_token() -> list[dict[str, Any]]:
    """The documented sample bodies whose payload carries a link_token_id (account.added and every job event)."""
    bodies = [json.loads(text) for text in doc_samples_as_json()]
    return [body for body in bodies if "link_token_id" in body["payload"]]


def refresh_body(sample: dict[str, Any], shape: str, account_id: str, event_id: str | None = None) -> bytes:
    """`sample` for `account_id` with a fresh event_id and the link token in `shape` (Pinwheel's body style)."""
    payload = {key: value for key, value in sample["payload"].items() if key != "link_token_id"}
    payload["account_id"] = account_id
    if sample["event"] != "account.added":
        payload["id"] = str(uuid.uuid4())  # one job per event: no join between the shapes
    value = LINK_TOKEN_SHAPES[shape]
    if value is not None:
        payload["link_token_id"] = value
    body = {"event_id": event_id or str(uuid.uuid4()), "event": sample["event"], "payload": payload}
    return json.dumps(body).encode()
