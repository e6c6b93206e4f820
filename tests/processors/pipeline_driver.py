"""A broker-free driver for the account pipeline (the idea of Kafka Streams' TopologyTestDriver).

Records go in as the gateway makes them (its own `plan_record`: parse, validate, Avro-encode, headers), or as raw
family-topic records; they reach a real `AccountPipeline` over a real `TaskState` (RocksDB in a temporary
directory) through a fake task context that commits after every record, like a commit interval of one.
A `RecordFailed` (or a `BatchFailed` at the end of the record) is handled the way the runtime handles it: the
record's uncommitted effects are thrown away and the record goes to `reject`. Stream time moves with the
records and with `advance_to` (the runtime's punctuation); nothing here sleeps or reads a clock.

Outputs are decoded by `IndependentReader`: fastavro straight from the .avsc files, with the writer chosen by
the single-object fingerprint — none of the connector's codec (whose encoder is cavro where installed: the reader
also checks that fastavro writes each record's bytes back identically).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import fastavro
from aiokafka.structs import ConsumerRecord
from fastavro.schema import fingerprint, to_parsing_canonical_form

from gateway.records import Route, plan_record
from processors.logic.config import LogicConfig
from processors.pipeline import AccountPipeline, PipelineCounters
from processors.runtime.state import TaskState
from processors.runtime.task import BatchFailed, RecordFailed, RecordingContext
from schemas.catalog import STORE_NAMES, changelog_topic
from schemas.codec import Codec

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
_LOG_APPEND_TIME = 1
APP_ID = "driver"


class IndependentReader:
    """Decodes our single-object Avro records with fastavro and the schema files only."""

    def __init__(self, avro_dir: Path = AVRO_DIR) -> None:
        self._writers: dict[bytes, Any] = {}
        for path in sorted(avro_dir.glob("*.avsc")):
            schema = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
            key = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            self._writers[key] = schema

    def decode(self, value: bytes) -> dict[str, Any]:
        """The record's datum; and fastavro, given it back, must write the very bytes the codec's encoder
        wrote: so every output the driver reads also checks that the two Avro writers agree."""
        assert value[:2] == b"\xc3\x01", "not an Avro single-object record"
        writer = self._writers[value[2:10]]
        datum = cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, None))
        again = io.BytesIO()
        fastavro.schemaless_writer(again, writer, datum)
        assert again.getvalue() == value[10:], "the codec's encoder and fastavro wrote different bytes"
        return datum


@dataclass(frozen=True)
class Output:
    """One record the pipeline emitted, decoded."""

    topic: str
    key: str | None
    value: dict[str, Any]
    headers: dict[str, str]


class PipelineDriver:
    def __init__(self, state_dir: Path, config: LogicConfig | None = None, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        self.config = config or LogicConfig()
        changelogs = {store: changelog_topic(APP_ID, store) for store in STORE_NAMES}
        self.ctx = RecordingContext(TaskState(state_dir, APP_ID, 0, changelogs))
        self.counters = PipelineCounters()
        self.pipeline = self._new_pipeline()
        self.reader = IndependentReader()
        self._offsets: dict[str, int] = {}
        self._changelog_offset = 0

    def _new_pipeline(self) -> AccountPipeline:
        return AccountPipeline(self.ctx, self.codec, self.config, self.counters)

    def close(self) -> None:
        self.ctx.state.close()

    # -- input ---------------------------------------------------------------------------------------

    def gateway_record(
        self,
        body: bytes | Mapping[str, Any],
        received_at: datetime,
        *,
        sent_at: datetime | None = None,
        webhook_id: str | None = "00000000-0000-4000-8000-0000000000ff",
        pinwheel_version: str | None = "2023-11-22",
    ) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(topic, key, value, headers) of the family record the gateway publishes for this body."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        planned = plan_record(
            raw,
            request_headers={},
            webhook_id=webhook_id,
            pinwheel_version=pinwheel_version,
            sent_at=sent_at or received_at,
            received_at=received_at,
            codec=self.codec,
        )
        assert planned.route is not Route.DEAD_LETTER, f"the gateway dead-letters this body: {planned.reason}"
        r = planned.record
        return r.topic, r.key, r.value, list(r.headers)

    def pipe(self, body: bytes | Mapping[str, Any], received_at: datetime, **gateway: Any) -> list[Output]:
        """Deliver one webhook body through the gateway's encoding; the outputs of its commit."""
        topic, key, value, headers = self.gateway_record(body, received_at, **gateway)
        return self.pipe_record(topic, key, value, headers, logged_at=received_at)

    def pipe_record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        *,
        logged_at: datetime,
    ) -> list[Output]:
        """One family-topic record as the consumer hands it over (broker-set timestamp = `logged_at`)."""
        record = self._consumer_record(topic, key, value, headers, logged_at)
        try:
            self.pipeline.process(record)
            self.pipeline.end_of_batch()
        except (RecordFailed, BatchFailed) as failed:
            # The runtime's path (a batch of one record here): the task's uncommitted work is dropped, the task
            # rebuilt, the record rejected.
            self.ctx.emitted.clear()
            self.ctx.state.discard()
            self.pipeline = self._new_pipeline()
            self.pipeline.reject(record, failed.reason, failed.error)
            self.pipeline.end_of_batch()
        return self._commit()

    def refuse(self, body: bytes | Mapping[str, Any], received_at: datetime, error: str) -> list[Output]:
        """The runtime's path for a record whose outputs the broker refused: it is handed to `reject`."""
        topic, key, value, headers = self.gateway_record(body, received_at)
        self.pipeline.reject(self._consumer_record(topic, key, value, headers, received_at), "output_refused", error)
        self.pipeline.end_of_batch()
        return self._commit()

    def _consumer_record(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], logged_at: datetime
    ) -> ConsumerRecord[bytes, bytes]:
        offset = self._offsets.get(topic, 0)
        self._offsets[topic] = offset + 1
        return ConsumerRecord(
            topic=topic,
            partition=0,
            offset=offset,
            timestamp=int(logged_at.timestamp() * 1000),
            timestamp_type=_LOG_APPEND_TIME,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            headers=headers,
        )

    def advance_to(self, when: datetime) -> list[Output]:
        """Punctuation at `when`: stream time moves there and due timers fire."""
        self.pipeline.punctuate(int(when.timestamp() * 1000))
        self.pipeline.end_of_batch()  # the first step of every commit (Task.flush)
        return self._commit()

    # -- state and output ------------------------------------------------------------------------------

    def _commit(self) -> list[Output]:
        writes = sum(1 for _ in self.ctx.state.pending_writes())
        self._changelog_offset += writes
        self.ctx.state.committed(dict.fromkeys(STORE_NAMES, self._changelog_offset))
        emitted, self.ctx.emitted = self.ctx.emitted, []
        return [
            Output(
                out.topic,
                None if out.key is None else out.key.decode(),
                self.reader.decode(out.value or b""),
                {name: raw.decode() for name, raw in out.headers},
            )
            for out in emitted
        ]


def on(outputs: list[Output], topic: str) -> list[Output]:
    return [out for out in outputs if out.topic == topic]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
