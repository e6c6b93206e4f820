"""docs/wire-format.md: its consumer snippet, run verbatim, decodes bytes our codec produced."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import Codec
from schemas.envelope import build_dead_letter, build_family_record
from schemas.store import TOPIC_RECORDS, load_store
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "wire-format.md").read_text()
AVSC_DIR = ROOT / "schemas" / "avro"


def snippet_namespace() -> dict[str, Any]:
    match = re.search(r"<!-- consumer-snippet:start -->\n```python\n(.*?)```\n<!-- consumer-snippet:end -->", DOC, re.S)
    assert match is not None, "consumer snippet markers missing from docs/wire-format.md"
    code = match[1]
    assert not re.search(r"^\s*(from|import)\s+schemas\b", code, re.M), "the snippet must not use our package"
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/wire-format.md", "exec"), namespace)  # noqa: S102 - the point is to run the doc
    return namespace


SNIPPET = snippet_namespace()
SCHEMAS = SNIPPET["load_schemas"](str(AVSC_DIR))


@pytest.mark.parametrize("delivery", ALL_DELIVERIES, ids=lambda d: d.name)
def test_snippet_decodes_family_records(delivery: Any) -> None:
    record = build_family_record(
        delivery.body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    value = Codec().encode(record.topic, record.value)
    decoded = SNIPPET["decode"](value, TOPIC_RECORDS[record.topic].split(".")[1], SCHEMAS)
    # Without return_record_name the payload union decodes to the bare record.
    assert decoded == {**record.value, "payload": record.value["payload"][1]}
    assert decoded["raw_body"] == delivery.body


def test_snippet_decodes_other_and_deadletter() -> None:
    codec = Codec()
    raw = b'{"event_id": "e1", "event": "bill.added", "payload": {"end_user_id": "u1"}}'
    record = build_family_record(raw, webhook_id=None, pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT)
    assert SNIPPET["decode"](codec.encode(record.topic, record.value), "OtherEvent", SCHEMAS) == record.value
    dead = build_dead_letter(stage="gateway", reason="invalid_json", error="x", raw=b"{", failed_at=SENT_AT)
    assert SNIPPET["decode"](codec.encode("pinwheel.deadletter.v1", dead), "DeadLetter", SCHEMAS) == dead


def test_fingerprint_table_is_current() -> None:
    for version in load_store().all_versions():
        assert f"| {version.file_name} | `{version.fingerprint.hex()}` |" in DOC
