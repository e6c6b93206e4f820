"""The real schema registry the tests run against, picked in order:

1. `SCHEMA_REGISTRY_URL` from the environment (a Confluent-compatible registry someone already runs);
2. the local Apicurio Registry (connector.local_registry), started on free ports for this test session.

Only the local one can be stopped and restarted by the outage tests (`registry.local`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from connector.local_registry import LocalRegistry, local_registry_on_free_port


@dataclass
class Registry:
    url: str
    kind: Literal["env", "local"]
    local: LocalRegistry | None = None


@contextlib.contextmanager
def select_registry() -> Iterator[Registry]:
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    if url:
        yield Registry(url, "env")
        return
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-registry-test-"))
    registry = local_registry_on_free_port(data_dir)
    try:
        registry.start()
        yield Registry(registry.url, "local", registry)
    finally:
        registry.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def downstream_deserializer(registry_url: str) -> Any:
    """confluent-kafka's AvroDeserializer, as a downstream Python team sets it up: subjects named
    `<topic>-value` (as we register them) and a request timeout. confluent-kafka 2.16's defaults are no timeout
    and a subject strategy that first asks the registry for topic "associations", which Apicurio does not
    have: on a loaded machine that call hung a test past its timeout."""
    from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    client = SchemaRegistryClient({"url": registry_url, "timeout": 30})
    return AvroDeserializer(client, conf={"subject.name.strategy": topic_subject_name_strategy})


def watermarks(bootstrap: str, topics: list[str], *, end: bool) -> dict[tuple[str, int], int]:
    """Low or high watermarks of every partition of `topics`, read with confluent-kafka (not our clients).

    Asked again while the broker answers that a partition has no leader yet (a topic just created on a
    broker just started)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    settling = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:6]}"})
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                metadata = consumer.list_topics(timeout=10)
                out = {}
                for topic in topics:
                    for partition in metadata.topics[topic].partitions:
                        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                        out[(topic, partition)] = high if end else low
                return out
            except KafkaException as exc:
                if exc.args[0].code() not in settling or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
