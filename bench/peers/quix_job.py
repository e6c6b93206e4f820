"""The bench job on Quix Streams, exactly-once (run in the peers' virtualenv by `python -m bench.peers`).

    python -m bench.peers.quix_job --bootstrap HOST:PORT --group G --state-dir DIR [--passthrough TOPIC]

Reads every family topic (one concatenated dataframe), runs the account pipeline per record with a
stateful `apply` over Quix's RocksDB state (scoped to the account key, changelogged), and produces the
updates, snapshots and dead letters with `to_topic` in Quix's transaction. `--passthrough` copies the
records to TOPIC instead, on the same runtime settings.
"""

from __future__ import annotations

from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from bench.peers.adapter import PeerJob, consumer_record, job_arguments
from schemas import catalog

OUTPUT_TOPICS = (catalog.ACCOUNT_UPDATES_TOPIC, catalog.ACCOUNT_STATE_TOPIC, catalog.DEADLETTER_TOPIC)
_CREATE_TIME = 0


class OutputValue(Serializer):
    """The outputs travel as (topic, key, value): the value is the last."""

    def __call__(self, value: tuple[str, bytes, bytes], ctx: SerializationContext) -> bytes:
        return value[2]


def main() -> None:
    args = job_arguments()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval_s,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    inputs = [
        app.topic(name, key_deserializer="bytes", value_deserializer="bytes") for name in catalog.FAMILY_TOPICS.values()
    ]
    sdf = app.dataframe(inputs[0])
    for topic in inputs[1:]:
        sdf = sdf.concat(app.dataframe(topic))
    if args.passthrough:
        sdf.to_topic(app.topic(args.passthrough, key_serializer="bytes", value_serializer="bytes"))
        app.run()
        return
    job = PeerJob()

    def run(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> list[tuple[str, bytes, bytes]]:
        ctx = message_context()
        record = consumer_record(ctx.topic, ctx.partition, ctx.offset, timestamp, 1, key, value, headers)

        def put(k: bytes, v: bytes | None) -> None:
            if v is None:
                state.delete(k)
            else:
                state.set_bytes(k, v)

        outputs = job.process(record, state.get_bytes, put)
        return [(out.topic, out.key or b"", out.value or b"") for out in outputs]

    outputs = sdf.apply(run, stateful=True, metadata=True, expand=True)
    for name in OUTPUT_TOPICS:
        topic = app.topic(name, key_serializer="bytes", value_serializer=OutputValue())
        outputs.filter(lambda out, name=name: out[0] == name).to_topic(topic, key=lambda out: out[1])
    app.run()


if __name__ == "__main__":
    main()
