"""`pinwheel-connector`: one command, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from connector.local_kafka import LocalKafka, LocalKafkaError
from connector.settings import KafkaSettings, LocalKafkaSettings


def _kafka(args: argparse.Namespace) -> int:
    broker = LocalKafka(LocalKafkaSettings())
    match args.action:
        case "start":
            print(broker.start())
        case "stop":
            broker.stop()
        case "reset":
            broker.reset()
        case "fetch":
            print(broker.ensure_jars())
        case "status":
            pid = broker.pid()
            if pid is None:
                print("not running")
                return 1
            rss = broker.rss_bytes() or 0
            print(f"running pid={pid} bootstrap={broker.bootstrap} rss={rss / 2**20:.0f}MiB")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from connector.topics import TopicMismatchError, all_topics, ensure_topics

    settings = KafkaSettings()
    try:
        report = asyncio.run(ensure_topics(settings, all_topics(), create=args.action == "create"))
    except TopicMismatchError as exc:
        print(f"topics: {exc}", file=sys.stderr)
        return 2
    for line in report:
        print(line)
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from gateway.__main__ import main as gateway_main

    return gateway_main(["--self-signed"] if args.self_signed else [])


def _processor(args: argparse.Namespace) -> int:
    from processors.service import run

    run()
    return 0


def _config(args: argparse.Namespace) -> int:
    from connector.config_docs import configuration_markdown

    print(configuration_markdown(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pinwheel-connector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run the local single-node Apache Kafka (no Docker)")
    kafka.add_argument("action", choices=["start", "stop", "status", "reset", "fetch"])
    kafka.set_defaults(func=_kafka)

    topics = sub.add_parser("topics", help="create missing topics; fail on a mismatching one")
    topics.add_argument("action", choices=["create", "check"], nargs="?", default="create")
    topics.set_defaults(func=_topics)

    gateway = sub.add_parser("gateway", help="run the HTTPS webhook gateway (GATEWAY_* settings)")
    gateway.add_argument("--self-signed", action="store_true", help="create a self-signed TLS pair if missing")
    gateway.set_defaults(func=_gateway)

    processor = sub.add_parser("processor", help="run the stream processors (PROCESSOR_* settings)")
    processor.set_defaults(func=_processor)

    config = sub.add_parser("config", help="print the configuration table (every environment variable)")
    config.set_defaults(func=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except LocalKafkaError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
