"""The bench job on faust-streaming, exactly_once (run in the peers' virtualenv by `python -m bench.peers`).

    python -m bench.peers.faust_job --bootstrap HOST:PORT --group G --state-dir DIR [--passthrough TOPIC]

One agent over every family topic runs the account pipeline per event over a Faust table (RocksDB store
through rocksdict, changelogged; keys `<store>\\0<key>`) and sends the outputs to their topics, inside
Faust's per-partition transactions. `--passthrough` forwards the records to TOPIC instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

import faust

from bench.peers.adapter import PeerJob, consumer_record, job_arguments
from schemas import catalog

OUTPUT_TOPICS = (catalog.ACCOUNT_UPDATES_TOPIC, catalog.ACCOUNT_STATE_TOPIC, catalog.DEADLETTER_TOPIC)


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        processing_guarantee="exactly_once",
        store="rocksdb://",
        datadir=args.state_dir,
        commit_interval=args.commit_interval_s,
        topic_partitions=args.partitions,
        topic_disable_leader=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
    )
    source = app.topic(
        *catalog.FAMILY_TOPICS.values(), key_serializer="raw", value_serializer="raw", partitions=args.partitions
    )
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=args.partitions)
    if args.passthrough:
        # The table stays unused; without one, faust-streaming 0.15.3's exactly_once crashes at assignment
        # (KeyError in PartitionAssignor.group_for_topic: no topic group for the source topics).
        sink = app.topic(args.passthrough, key_serializer="raw", value_serializer="raw")

        @app.agent(source)
        async def forward(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
            async for event in stream.events():
                await sink.send(key=event.key, value=event.value)
                yield None

        return app
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in OUTPUT_TOPICS}
    job = PeerJob()

    def put(key: bytes, value: bytes | None) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    @app.agent(source)
    async def process(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            record = consumer_record(
                message.topic,
                message.partition,
                message.offset,
                int(message.timestamp * 1000),
                message.timestamp_type,
                message.key,
                message.value,
                message.headers,
            )
            for out in job.process(record, table.get, put):
                await sinks[out.topic].send(key=out.key, value=out.value)
            yield None

    return app


def main() -> None:
    args = job_arguments()
    app = build_app(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
