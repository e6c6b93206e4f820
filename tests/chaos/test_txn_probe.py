"""chaos/txn_probe.py, one round on its own broker: the log files it reads without Kafka's tools say what the
`read_committed` reader read (each transaction's records, then its COMMIT marker) and what the coordinator logged.
Whether the round lost a transaction is Kafka's roll of the dice (about 1 in 30); that is `make chaos`'s business."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.txn_probe import PARTITIONS, TOPIC, TRANSACTIONAL_ID, partition_batches, run_round, transaction_states

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(240)
async def test_a_round_and_its_evidence(tmp_path: Path) -> None:
    result = await run_round(tmp_path, kill_after_s=2.0)

    assert len(result.acknowledged) > 5
    assert result.begun >= len(result.acknowledged)
    for partition in range(PARTITIONS):
        batches = partition_batches(tmp_path / "logs", TOPIC, partition)
        data = [int(value or b"0") for b in batches if not b.control for _, _, value in b.records]
        assert data == list(range(1, len(data) + 1))  # one record per transaction begun and sent, in order
        assert set(result.seen[partition]) <= set(data)
        committed = {
            int(batches[i - 1].records[0][2] or b"0")
            for i, batch in enumerate(batches)
            if batch.control and "COMMIT" in batch.describe()
        }
        assert set(result.seen[partition]) <= committed  # what the reader saw is what a COMMIT marker follows
        assert all(b.transactional and b.producer_id == batches[0].producer_id for b in batches)
    states = transaction_states(tmp_path / "logs", TRANSACTIONAL_ID)
    assert any(state.startswith("CompleteCommit (pid") for state in states)
    assert states[-1].startswith("Empty")  # the successor's InitProducerId: a new epoch (1, or 2 when it first
    assert "epoch 0" not in states[-1]  # had the killed producer's open transaction aborted)
