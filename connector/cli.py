"""`pinwheel-connector`: one command, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Only light imports here: `--help`, `--version` and a usage error build the parser and nothing else. Each command
# imports its code when it runs (tests/connector/test_cli_imports.py keeps it so).
if TYPE_CHECKING:
    from connector.local_kafka import LocalKafka, LocalKafkaCluster

from operate.cli import add_commands

#: How long a command waits for Kafka when neither --timeout nor KAFKA_STARTUP_TIMEOUT_S says.
COMMAND_TIMEOUT_S = 30.0


def _kafka(args: argparse.Namespace) -> int:
    from connector.local_kafka import LocalKafkaSettings, local_broker

    settings = LocalKafkaSettings()
    if args.secure:
        settings = settings.model_copy(update={"secure": True})
    broker = local_broker(settings, args.nodes)
    match args.action:
        case "start":
            bootstrap = broker.start()
            print("\n".join(secure_start_lines(broker)) if broker.secure else bootstrap)
        case "stop":
            broker.stop()
        case "reset":
            broker.reset()
        case "fetch":
            print(broker.ensure_jars())
        case "status":
            status = broker.status()
            print(status or "not running")
            return 0 if status else 1
    return 0


def secure_start_lines(broker: LocalKafka | LocalKafkaCluster) -> list[str]:
    """What `kafka start --secure` prints: shell exports for the super user over SCRAM, the rest as comments.

    `eval "$(pinwheel-connector kafka start --secure)"` points the services at it. Files only: the
    password is in a 0600 file, never on the terminal.
    """
    scram, mtls = broker.client_env("sasl_ssl"), broker.client_env("mtls")
    from connector.local_kafka import LocalKafkaCluster

    first = broker.nodes[0] if isinstance(broker, LocalKafkaCluster) else broker
    return [
        f"# secured local Kafka: TLS only, ACLs enforced (nothing is allowed without one); super users "
        f"User:{first.admin_user} and User:broker",
        f"# CA: {scram['KAFKA_SSL_CA_FILE']}; {first.admin_user}'s password file (0600): "
        f"{scram['KAFKA_SASL_PASSWORD_FILE']}",
        "# as the super user over SASL_SSL (SCRAM-SHA-512; SCRAM-SHA-256 and PLAIN work too):",
        *(f"export {key}={shlex.quote(value)}" for key, value in scram.items()),
        f"# or over mTLS with the certificate CN={first.admin_user} (principal User:{first.admin_user}); more "
        f"certificates CN=<name> with connector.local_tls, in {first.pki.directory}/clients:",
        *(f"#   export {key}={shlex.quote(value)}" for key, value in mtls.items()),
    ]


def _registry(args: argparse.Namespace) -> int:
    from connector.local_registry import LocalRegistry, LocalRegistryError, LocalRegistrySettings

    registry = LocalRegistry(LocalRegistrySettings())
    try:
        match args.action:
            case "start":
                print(registry.start())
            case "stop":
                registry.stop()
            case "fetch":
                print(registry.ensure_app())
            case "status":
                pid = registry.pid()
                if pid is None:
                    print("not running")
                    return 1
                rss = registry.rss_bytes() or 0
                print(f"running pid={pid} url={registry.url} rss={rss / 2**20:.0f}MiB")
    except LocalRegistryError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    return 0


def _topics(args: argparse.Namespace) -> int:
    import asyncio

    from common.settings import KafkaSettings
    from common.topics import TopicMismatchError, ensure_topics
    from processors.topics import all_topics

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
    if args.action == "reset":
        from operate.cli import processor_reset_command

        return processor_reset_command(args)
    if args.action in ("migrate", "migrate-jobs"):
        from operate.cli import processor_migrate_command

        return processor_migrate_command(args)
    from processors.runtime.engine import MissingTopicsError
    from processors.service import run

    try:
        run()
    except MissingTopicsError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return 2
    return 0


def _config(args: argparse.Namespace) -> int:
    from connector.config_docs import configuration_markdown, store_table_markdown

    print(store_table_markdown() if args.stores else configuration_markdown(), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    from connector.run import main as run_main

    return run_main(args)


def _simulate(args: argparse.Namespace) -> int:
    from simulator.commands import simulate_command

    return simulate_command(args)


def _tail(args: argparse.Namespace) -> int:
    from operate.cli import tail_command

    return tail_command(args)


def _verify(args: argparse.Namespace) -> int:
    from simulator.commands import verify_command

    return verify_command(args)


def _webhooks(args: argparse.Namespace) -> int:
    from operate.webhooks import webhooks_command

    return webhooks_command(args)


def _watchdog(args: argparse.Namespace) -> int:
    from operate.watchdog import watchdog_command

    return watchdog_command()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}")
    return seconds


def _kafka_timeout() -> argparse.ArgumentParser:
    """`--timeout S` of every command that talks to Kafka (see `_wait_for_kafka`)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help=f"seconds to wait for Kafka to answer (default KAFKA_STARTUP_TIMEOUT_S, else {COMMAND_TIMEOUT_S:g})",
    )
    parent.set_defaults(waits_for_kafka=True)
    return parent


def _needs_kafka(args: argparse.Namespace) -> bool:
    if args.command == "processor":
        return bool(
            args.action in ("reset", "migrate", "migrate-jobs")
        )  # `processor` itself waits as a service does (KAFKA_STARTUP_TIMEOUT_S)
    if args.command == "verify-record":
        return args.file is None  # a record read from a file needs no Kafka
    return bool(getattr(args, "waits_for_kafka", False))


def _wait_for_kafka(args: argparse.Namespace) -> None:
    """Before a command's first Kafka client: wait (capped back-off) until the cluster answers, at most
    --timeout / KAFKA_STARTUP_TIMEOUT_S / 30 s. Raises KafkaUnreachable or KafkaMisconfigured (one line each).

    The command's other settings are read first: a bad one is reported at once, not after the wait."""
    import asyncio

    from pydantic_settings import BaseSettings

    from common.kafka_wait import wait_for_kafka
    from common.settings import KafkaSettings
    from common.topics import TopicSettings
    from processors.settings import ProcessorSettings
    from schemas.settings import SchemaSettings

    # The settings a Kafka command reads besides KAFKA_* (checked before it waits for Kafka).
    command_settings: dict[str, tuple[type[BaseSettings], ...]] = {
        "topics": (TopicSettings,),
        "processor": (ProcessorSettings,),
        "deadletter": (SchemaSettings,),
        "tail": (SchemaSettings,),
        "verify": (SchemaSettings,),
        "verify-record": (SchemaSettings,),
        "trace": (SchemaSettings,),
    }
    kafka = KafkaSettings()
    for settings_class in command_settings.get(args.command, ()):
        settings_class()
    timeout_s = args.timeout or kafka.startup_timeout_s or COMMAND_TIMEOUT_S
    asyncio.run(wait_for_kafka(kafka, timeout_s=timeout_s, log_every_s=None))  # quiet: the outcome is one line


def _version() -> str:
    try:
        return importlib.metadata.version("pinwheel-kafka-connector")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pinwheel-connector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    waits = _kafka_timeout()

    kafka = sub.add_parser("kafka", help="run the local Apache Kafka, one node or a cluster (no Docker)")
    kafka.add_argument("action", choices=["start", "stop", "status", "reset", "fetch"])
    kafka.add_argument(
        "--nodes",
        type=_positive,
        default=None,
        help="a KRaft cluster of this many nodes (default: the recorded one, or 1)",
    )
    kafka.add_argument(
        "--secure",
        action="store_true",
        help="TLS, SASL (SCRAM, PLAIN), mTLS and ACLs, no plaintext listener (LOCAL_KAFKA_SECURE); "
        "start prints the client's KAFKA_* variables (eval-able)",
    )
    kafka.set_defaults(func=_kafka)

    registry = sub.add_parser(
        "registry", help="run a local Apicurio schema registry (SCHEMA_REGISTRY_URL is printed by start)"
    )
    registry.add_argument("action", choices=["start", "stop", "status", "fetch"])
    registry.set_defaults(func=_registry)

    topics = sub.add_parser("topics", help="create missing topics; fail on a mismatching one", parents=[waits])
    topics.add_argument("action", choices=["create", "check"], nargs="?", default="create")
    topics.set_defaults(func=_topics)

    gateway = sub.add_parser("gateway", help="run the HTTPS webhook gateway (GATEWAY_* settings)")
    gateway.add_argument("--self-signed", action="store_true", help="create a self-signed TLS pair if missing")
    gateway.set_defaults(func=_gateway)

    processor = sub.add_parser(
        "processor",
        help="run the stream processors (PROCESSOR_* settings)",
        parents=[waits],
        epilog="--timeout is reset's: run waits for Kafka as a service does (KAFKA_STARTUP_TIMEOUT_S)",
    )
    processor.set_defaults(func=_processor)

    config = sub.add_parser("config", help="print the configuration table (every environment variable)")
    config.add_argument(
        "--stores", action="store_true", help="print the state stores' table instead (docs/processing.md, from STORES)"
    )
    config.set_defaults(func=_config)

    run = sub.add_parser("run", help="the whole pipeline on a local Kafka, fed with simulated traffic (make run)")
    run.add_argument("--accounts", type=int, default=None, help="accounts to simulate (default RUN_ACCOUNTS, 300)")
    run.add_argument("--seed", type=int, default=None, help="traffic seed (default: a new one per run)")
    run.add_argument("--show", choices=["sample", "all", "none"], default=None, help="which updates to print")
    run.set_defaults(func=_run)

    simulate = sub.add_parser(
        "simulate",
        help="send signed Pinwheel-like webhooks to a gateway (SIMULATOR_* settings; secret in SIMULATOR_SECRET)",
    )
    simulate.add_argument("--url", help="webhook endpoint (https)")
    simulate.add_argument("--accounts", type=int, help="number of accounts")
    simulate.add_argument("--seed", type=int, help="random seed")
    simulate.add_argument("--rate", type=float, help="most attempts per second (0: unlimited)")
    simulate.add_argument("--concurrency", type=int, help="most requests in flight")
    simulate.add_argument("--time-scale", type=float, help="scale of the retry schedule (0.01: 15 min -> 9 s)")
    simulate.add_argument("--ledger", type=Path, help="JSON-lines ledger to write")
    simulate.add_argument("--ca-file", type=Path, help="PEM file trusted for the gateway's TLS")
    simulate.add_argument("--no-capture", action="store_true", help="leave out the 12 real sandbox deliveries")
    simulate.add_argument("--no-progress", action="store_true", help="no progress bar")
    simulate.set_defaults(func=_simulate)

    tail = sub.add_parser(
        "tail", help="print the records of our topics, Avro decoded (JSON lines or a table)", parents=[waits]
    )
    tail.add_argument(
        "topics",
        nargs="*",
        default=["updates"],
        help="topic names or aliases (updates, state, deadletter, account, paystubs, ...); default: updates",
    )
    tail.add_argument("--format", choices=["json", "table"], default="json", help="output format")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not the end")
    tail.add_argument("--max", type=int, default=None, help="stop after this many records")
    tail.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=_tail)

    verify = sub.add_parser(
        "verify", help="compare a simulator ledger with the account updates (read_committed)", parents=[waits]
    )
    verify.add_argument("--ledger", type=Path, default=Path("var/simulator/ledger.jsonl"), help="ledger file")
    verify.add_argument("--wait", type=float, default=60.0, help="seconds to wait for missing updates")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_verify)

    webhooks = sub.add_parser("webhooks", help="manage Pinwheel webhook subscriptions (PINWHEEL_API_* settings)")
    webhooks.set_defaults(func=_webhooks)
    actions = webhooks.add_subparsers(dest="action", required=True)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    create = actions.add_parser("create", help="subscribe an https endpoint to events", parents=[as_json])
    create.add_argument("--url", required=True, help="https:// endpoint that receives the webhooks")
    create.add_argument("--events", required=True, help="comma-separated event types (see schemas.catalog)")
    create.add_argument("--status", choices=["active", "paused"], default="active", help="initial status")
    create.add_argument("--version", default=None, help="webhook API version (default PINWHEEL_API_VERSION)")
    listing = actions.add_parser(
        "list", help="list the webhooks of the API key (follows the cursor)", parents=[as_json]
    )
    listing.add_argument("--limit", type=int, default=100, help="page size, 1-100")
    show = actions.add_parser("show", help="show one webhook", parents=[as_json])
    show.add_argument("id", help="webhook id")
    update = actions.add_parser(
        "update", help="change a webhook (e.g. --status active to resume a paused one)", parents=[as_json]
    )
    update.add_argument("id", help="webhook id")
    update.add_argument("--url", default=None, help="new https:// endpoint")
    update.add_argument("--events", default=None, help="new comma-separated event types")
    update.add_argument("--status", choices=["active", "paused"], default=None, help="new status")
    update.add_argument("--version", default=None, help="new webhook API version")
    delete = actions.add_parser("delete", help="delete a webhook", parents=[as_json])
    delete.add_argument("id", help="webhook id")

    watchdog = sub.add_parser(
        "watchdog",
        help="check the Pinwheel webhook subscription periodically, with metrics for its alerts "
        "(WATCHDOG_* and PINWHEEL_API_* settings)",
    )
    watchdog.set_defaults(func=_watchdog)

    add_commands(sub, processor, waits)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every end of a command is one line on stderr and an exit code: 0 done, 1 failed, 2 fix the configuration
    (a setting, Kafka unreachable within the timeout, Kafka refusing us), 130 interrupted. A bug is one JSON
    record (the stack without the messages, as the services log it), never a plain traceback."""
    args = build_parser().parse_args(argv)
    try:
        if _needs_kafka(args):
            _wait_for_kafka(args)
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failed(args, exc)
    return code


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    """How a command ended in an exception; the exception classes are imported here, not before the command runs."""
    from pydantic import ValidationError

    from common.kafka_errors import KafkaMisconfigured, KafkaUnreachable
    from common.settings import settings_error_text
    from connector.local_kafka import LocalKafkaError

    if isinstance(exc, LocalKafkaError):
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, ValidationError):
        # Any command, any settings class: exit 2 naming the environment variable and the reason.
        if (text := settings_error_text(exc)) is None:
            return _crashed(args, exc)
        print(f"{args.command}: {text}", file=sys.stderr)
        return 2
    if isinstance(exc, KafkaUnreachable | KafkaMisconfigured):
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):
        if exc.filename is None:  # a socket's error: about Kafka, classified below
            return _unexpected(args, exc)
        print(f"{args.command}: cannot use {exc.filename}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    return _unexpected(args, exc)


def _unexpected(args: argparse.Namespace, exc: Exception) -> int:
    """Kafka gone (or refusing an operation) after the command started: one line; anything else: a bug."""
    from common.kafka_errors import Kind, classify_kafka_error

    verdict = classify_kafka_error(exc)
    if verdict.kind is Kind.OTHER:
        return _crashed(args, exc)
    print(f"{args.command}: kafka: {verdict.reason.removeprefix('kafka ')}", file=sys.stderr)
    return 2


def _crashed(args: argparse.Namespace, exc: BaseException) -> int:
    """An unexpected exception: one JSON record on stderr (type and stack, not the message: it may quote data)."""
    import logging

    from common import logs

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("connector.crash")
    logger.handlers, logger.propagate = [handler], False
    logger.critical(f"{args.command}: unexpected error", exc_info=exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
