"""Issue 26, item 1: the shapes a refresh job (DDA monitoring) sends produce account updates, never dead letters.

Every documented event that carries `link_token_id`, with it empty, "undefined", left out and some other non-UUID
text, goes through the real HTTPS gateway and the processors on the real broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.catalog import ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS
from tests.live_pipeline import Live, Written, live_pipeline
from tests.refresh_jobs import LINK_TOKEN_SHAPES, refresh_body, samples_with_link_token

pytestmark = pytest.mark.kafka


@pytest.fixture
async def live(bootstrap: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with live_pipeline(bootstrap, tmp_path) as pipeline:
        yield pipeline


async def test_refresh_job_shapes_reach_the_account_updates(live: Live) -> None:
    account = str(uuid.uuid4())
    sent: dict[str, tuple[str, str]] = {}  # event_id -> (event type, shape)
    for sample in samples_with_link_token():
        for shape in LINK_TOKEN_SHAPES:
            event_id = str(uuid.uuid4())
            assert await live.post(refresh_body(sample, shape, account, event_id)) == 200
            sent[event_id] = (sample["event"], shape)
    assert len(sent) == 16 * 4

    def updates(records: list[Written]) -> dict[str, Written]:
        return {r.event_id: r for r in records if r.topic == ACCOUNT_UPDATES_TOPIC and r.event_id in sent}

    records = await live.collect(lambda rs: len(updates(rs)) == len(sent))
    got = updates(records)
    assert set(got) == set(sent), [sent[e] for e in set(sent) - set(got)]
    assert not [r for r in records if r.topic == DEADLETTER_TOPIC and r.event_id in sent]
    family = [r for r in records if r.topic in FAMILY_TOPICS.values() and r.event_id in sent]
    assert len(family) == len(sent)
    for record in family:
        payload = record.value["payload"][1]
        assert payload["link_token_id"] is None  # the typed field; the exact value is in raw_body
        assert str(payload["account_id"]) == account
    for event_id, update in got.items():
        assert str(update.value["account_id"]) == account
        assert update.value["account"]["link_token_id"] is None, sent[event_id]
