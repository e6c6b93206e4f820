"""bench.broker_cost on the real broker: a little traffic through a real processor instance, counted back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.broker_cost import CONSUMER_OFFSETS, encode_traffic, run_mode
from bench.cost import total
from common.settings import KafkaSettings
from common.topics import TopicSettings
from processors.topics import own_changelog_topics
from schemas import catalog


async def test_counts_add_up(bootstrap: str, tmp_path: Path) -> None:
    traffic = await encode_traffic(accounts=3, spread_s=1.0, seed=5)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)

    result = await run_mode(kafka, tmp_path, "full", traffic, TopicSettings().partitions, log_dir=None)

    # The input, as written: every record of the traffic, per family topic, no transaction.
    written = Counter(p.record.topic for p in traffic)
    assert result.inputs == len(traffic)
    assert {c.topic: c.committed for c in result.input_costs if c.committed} == written
    assert all(c.offsets == c.committed and c.markers == 0 for c in result.input_costs)
    # The outputs: every topic the processors write, its changelogs under the run's placeholder name.
    names = [c.topic for c in result.costs]
    assert names == [*catalog.OUTPUT_TOPICS, *own_changelog_topics("<app>").values()]  # the state topic once
    costs = {c.topic: c for c in result.costs}
    assert costs[catalog.ACCOUNT_UPDATES_TOPIC].committed > 0
    assert costs["<app>-dedupe-log"].committed > 0
    assert result.committed_transactions > 0
    assert result.aborted_transactions == 0
    for c in result.costs:
        assert c.offsets >= c.committed
        assert c.aborted == 0
        assert c.offsets == c.committed + c.markers
        assert c.transactions <= result.committed_transactions
        assert (c.markers > 0) == (c.committed > 0)  # records here came in transactions, and only those
    # The markers two ways: offsets left over by the records, and the partitions the coordinator's
    # PrepareCommit records list.
    assert sum(c.markers for c in result.costs) == result.coordinator_markers
    # Each transaction committed the input offsets it consumed: one marker in the group's __consumer_offsets
    # partition per transaction at most.
    internal = {c.topic: c for c in result.internal}
    assert 0 < internal[CONSUMER_OFFSETS].markers <= result.committed_transactions
    whole = total(result.costs, result.committed_transactions)
    assert whole.offsets == sum(c.offsets for c in result.costs)
    assert whole.committed == sum(c.committed for c in result.costs)
    assert whole.markers == whole.offsets - whole.committed
    assert result.costs[0].log_bytes is None  # the session's broker is not this bench's: no disk figure
