"""The operator commands of `pinwheel-connector`: `deadletter`, `processor reset`, `spool status`, `acls`,
`verify-record`, `trace`, `tail` (argument handling; `webhooks` has its own in operate/webhooks.py).

`connector/cli.py` registers them (`add_commands` for most; `tail` and `webhooks` it parses itself).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import string
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operate.acls_cli import add_acls_command
from schemas.catalog import FAMILY_TOPIC_NAMES

# Only light imports here: `connector/cli.py` builds its parser from this module (`--help` must stay fast); each
# command imports what it uses when it runs.
if TYPE_CHECKING:
    from common.settings import KafkaSettings
    from operate.deadletters import DeadLetterFilter, DeadLetterRecord
    from schemas.codec import Codec

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (UTC if no offset) or a duration before now: `30m`, `2h`, `7d`."""
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time or a duration like 30m, 2h, 7d: {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _ref(value: str) -> tuple[int, int]:
    partition, sep, offset = value.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(f"expected partition:offset (as `deadletter list` prints it), got {value!r}")
    return int(partition), int(offset)


def _family_topic(value: str) -> str:
    from operate.tail import resolve_topic

    try:
        topic = resolve_topic(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if topic not in FAMILY_TOPIC_NAMES:
        raise argparse.ArgumentTypeError(f"{topic} is not a family topic: only family records carry a signature")
    return topic


def _non_negative(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return int(value)


def add_commands(sub: Any, processor: argparse.ArgumentParser, waits: argparse.ArgumentParser) -> None:
    """Add `deadletter`, `spool` and `acls` to the CLI's subparsers and the `reset` action to `processor`; `waits`
    is the parent parser of the commands that wait for Kafka (`--timeout`)."""
    deadletter = sub.add_parser("deadletter", help="list, show and replay dead letters (pinwheel.deadletter.v1)")
    deadletter.set_defaults(func=deadletter_command)
    actions = deadletter.add_subparsers(dest="action", required=True)
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument(
        "--stage", action="append", choices=["gateway", "processor"], help="gateway or processor (repeatable)"
    )
    selection.add_argument("--reason", action="append", help="reason code, e.g. invalid_payload (repeatable)")
    selection.add_argument("--event-type", action="append", help="event type or pattern, e.g. 'paystubs.*'")
    selection.add_argument("--event-id", action="append", help="event_id (repeatable)")
    selection.add_argument("--since", type=parse_time, help="failed at or after: ISO-8601 time or 30m, 2h, 7d ago")
    selection.add_argument("--until", type=parse_time, help="failed before: ISO-8601 time or a duration ago")
    listing = actions.add_parser("list", help="one line per dead letter (no payload data)", parents=[selection, waits])
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    show = actions.add_parser(
        "show", help="one dead letter whole: headers, reason, raw bytes (payroll data!)", parents=[waits]
    )
    show.add_argument("ref", type=_ref, help="partition:offset, as `deadletter list` prints it")
    replay = actions.add_parser(
        "replay", help="re-run gateway dead letters through today's validation; re-inject processor ones",
        parents=[selection, waits],
    )  # fmt: skip
    replay.add_argument("--dry-run", action="store_true", help="show what would happen, publish nothing")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")

    processor.add_argument(
        "action", nargs="?", choices=["run", "reset", "migrate", "migrate-jobs"], default="run",
        help="run (default); reset: rebuild state and outputs from the family topics: deletes the application's "
        "changelogs, tombstones every account of pinwheel.account_state.v1 (the accounts' and jobs' changelog, "
        "shared with downstream: never deleted) and rewinds the group; migrate (or its old name migrate-jobs): once, "
        "after upgrading from a version with <application_id>-dedupe-changelog or -jobs-changelog, carry their "
        "entries onto the new changelogs (see docs/operations.md)",
    )  # fmt: skip
    processor.add_argument("--dry-run", action="store_true", help="reset, migrate: show what would be done")
    processor.add_argument("--yes", action="store_true", help="reset: do it without asking")

    spool = sub.add_parser("spool", help="the gateway's spool (read-only; safe while the gateway runs)")
    spool.add_argument("action", choices=["status"])
    spool.add_argument("--dir", default=None, help="spool directory (default GATEWAY_SPOOL_DIR)")
    spool.add_argument("--json", action="store_true", help="print JSON")
    spool.set_defaults(func=spool_command)

    add_acls_command(sub)
    verify = sub.add_parser(
        "verify-record",
        help="re-verify a family record's Pinwheel signature offline, from its stored bytes and a secret",
        parents=[waits],
    )
    verify.add_argument("--topic", type=_family_topic, help="family topic (name or alias: account, paystubs, ...)")
    verify.add_argument("--partition", type=_non_negative, help="partition of the record")
    verify.add_argument("--offset", type=_non_negative, help="offset of the record")
    verify.add_argument(
        "--file", type=Path, help="read the record value from this file instead of Kafka (topic from its schema)"
    )
    verify.add_argument(
        "--secret-file",
        type=Path,
        help="file with the secret(s), comma- or newline-separated (default: GATEWAY_SECRETS / GATEWAY_SECRETS_FILE)",
    )
    verify.set_defaults(func=verify_record_command)

    trace = sub.add_parser(
        "trace",
        help="follow an event_id (or every event of an account_id) through the topics: deliveries, dedupe, "
        "updates, dead letters",
        parents=[waits],
    )
    trace.add_argument("id", help="an event_id or an account_id")
    trace.add_argument(
        "--since", type=parse_time, default="24h", help="records logged at or after: ISO-8601 time or 30m, 2h, 7d ago"
    )
    trace.add_argument("--until", type=parse_time, help="records logged before: ISO-8601 time or a duration ago")
    trace.add_argument("--json", action="store_true", help="JSON lines (one per step, then a summary)")
    trace.set_defaults(func=trace_command)


# -- deadletter --------------------------------------------------------------------------------------


def _selection(args: argparse.Namespace) -> DeadLetterFilter:
    from operate.deadletters import DeadLetterFilter

    return DeadLetterFilter(
        stages=frozenset(args.stage or ()),
        reasons=frozenset(args.reason or ()),
        event_types=tuple(args.event_type or ()),
        event_ids=frozenset(args.event_id or ()),
        since=args.since,
        until=args.until,
    )


def deadletter_command(args: argparse.Namespace) -> int:
    import asyncio

    from common.settings import KafkaSettings
    from operate.deadletters import DeadLetterError
    from schemas.codec import build_codec
    from schemas.settings import SchemaSettings

    kafka = KafkaSettings()

    async def run() -> int:
        codec = build_codec(SchemaSettings())
        try:
            # With a registry: every writer id of ours known up front (replays encode without I/O).
            await codec.prepare()
            if args.action == "list":
                return await _list(kafka, codec, _selection(args), args.json)
            if args.action == "show":
                return await _show(kafka, codec, *args.ref)
            return await _replay(kafka, codec, _selection(args), args.dry_run, not args.no_progress)
        finally:
            await codec.close()

    try:
        return asyncio.run(run())
    except DeadLetterError as exc:
        print(f"deadletter: {exc}", file=sys.stderr)
        return 1


def _summary_row(letter: DeadLetterRecord) -> dict[str, Any]:
    return {
        "ref": letter.ref,
        "failed_at": letter.failed_at.isoformat(),
        "stage": letter.stage,
        "reason": letter.reason,
        "event_type": letter.event_type,
        "event_id": letter.event_id,
        "bytes": len(letter.raw),
        "error": letter.datum["error"],
    }


async def _list(kafka: KafkaSettings, codec: Codec, selection: DeadLetterFilter, as_json: bool) -> int:
    from operate.deadletters import read_dead_letters

    count = 0
    if not as_json:
        print(f"{'ref':<12} {'failed_at (UTC)':<20} {'stage':<9} {'reason':<20} {'event_type':<36} event_id")
    async for letter in read_dead_letters(kafka, codec, selection):
        count += 1
        row = _summary_row(letter)
        if as_json:
            print(json.dumps(row))
        else:
            when = letter.failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"{row['ref']:<12} {when:<20} {row['stage']:<9} {row['reason']:<20} "
                f"{row['event_type'] or '-':<36} {row['event_id'] or '-'}"
            )
    print(f"{count} dead letter(s)", file=sys.stderr)
    return 0


def printable(raw: bytes) -> str | None:
    """The bytes as text when they are UTF-8 made of printable characters and whitespace, else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ok = set(string.whitespace)
    return text if all(ch.isprintable() or ch in ok for ch in text) else None


def render_dead_letter(letter: DeadLetterRecord) -> str:
    datum = letter.datum
    lines = [f"dead letter {letter.ref} of pinwheel.deadletter.v1"]
    for name in ("stage", "reason", "error", "event_id", "event_type", "failed_at"):
        value = datum.get(name)
        lines.append(f"  {name:<17}{value.isoformat() if isinstance(value, datetime) else value}")
    for name in ("source_topic", "source_partition", "source_offset", "source_key"):
        if datum.get(name) is not None:
            value = datum[name]
            lines.append(f"  {name:<17}{value.decode('utf-8', 'replace') if isinstance(value, bytes) else value}")
    lines.append("  headers:")
    for name, value in letter.headers:
        text = "(null)" if value is None else (printable(value) or "0x" + value.hex())
        lines.append(f"    {name}: {text}")
    raw = letter.raw
    raw_text = printable(raw)
    lines.append(f"  raw ({len(raw)} bytes{', as text' if raw_text is not None else ', hex'}):")
    lines.append(raw_text if raw_text is not None else raw.hex(" ", 32))
    return "\n".join(lines)


async def _show(kafka: KafkaSettings, codec: Codec, partition: int, offset: int) -> int:
    from operate.deadletters import find_dead_letter

    # Printed to the operator's terminal on request, never logged.
    print(render_dead_letter(await find_dead_letter(kafka, codec, partition, offset)))
    return 0


async def _replay(
    kafka: KafkaSettings, codec: Codec, selection: DeadLetterFilter, dry_run: bool, progress: bool
) -> int:
    from common.progress import ProgressBar
    from operate.deadletters import Verdict, plan_replay, read_dead_letters, replay

    reading = ProgressBar(0, "reading", enabled=progress)

    def total(n: int) -> None:
        reading.total = n

    plans = []
    async for letter in read_dead_letters(kafka, codec, selection, total, reading.update):
        await codec.resolve([letter.raw])  # a processor dead letter's source record may use any writer id
        plans.append(plan_replay(letter, codec))
    reading.close()
    bar = ProgressBar(len(plans), "dry run" if dry_run else "replaying", enabled=progress)
    summary = await replay(kafka, plans, dry_run=dry_run, on_done=lambda plan: bar.update())
    bar.close()
    for (verdict, detail), count in sorted(summary.details.items()):
        label = {Verdict.REPLAYED: "to", Verdict.STILL_INVALID: "reason", Verdict.SKIPPED: "why"}[verdict]
        print(f"  {verdict.value:<14} {count:>6}  {label} {detail}")
    print(summary.line(dry_run))
    return 0


# -- processor reset ---------------------------------------------------------------------------------


def processor_reset_command(args: argparse.Namespace) -> int:
    import asyncio

    from common.settings import KafkaSettings
    from operate.reset import ResetRefused, plan_reset, reset
    from processors.settings import ProcessorSettings

    settings = ProcessorSettings()
    kafka = KafkaSettings()
    try:
        plan = asyncio.run(plan_reset(settings, kafka))
    except ResetRefused as exc:
        print(f"processor reset: {exc}", file=sys.stderr)
        return 1
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("processor reset: add --yes to confirm (no terminal to ask)", file=sys.stderr)
            return 1
        if (
            input(f"Type the application id ({settings.application_id}) to reset it: ").strip()
            != settings.application_id
        ):
            print("not confirmed: nothing changed", file=sys.stderr)
            return 1
    try:
        for line in asyncio.run(reset(settings, kafka, plan)):
            print(line)
    except ResetRefused as exc:
        print(f"processor reset: {exc}", file=sys.stderr)
        return 1
    return 0


def processor_migrate_command(args: argparse.Namespace) -> int:
    import asyncio

    from common.settings import KafkaSettings
    from operate.migrate import MigrationRefused, migrate
    from processors.settings import ProcessorSettings

    try:
        lines = asyncio.run(migrate(ProcessorSettings(), KafkaSettings(), dry_run=args.dry_run))
    except MigrationRefused as exc:
        print(f"processor {args.action}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


# -- spool -------------------------------------------------------------------------------------------


def spool_command(args: argparse.Namespace) -> int:
    from gateway.settings import GatewaySettings
    from operate.spool_status import spool_status

    default = GatewaySettings.model_fields["spool_dir"].default
    spool_dir = Path(args.dir or os.environ.get("GATEWAY_SPOOL_DIR") or default)
    status = spool_status(spool_dir)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(status.table())
    return 0


# -- verify-record -----------------------------------------------------------------------------------


def _secrets(path: Path | None) -> tuple[bytes, ...]:
    """The secrets of --secret-file, else the gateway's (GATEWAY_SECRETS / GATEWAY_SECRETS_FILE)."""
    if path is None:
        from gateway.settings import GatewaySettings

        return GatewaySettings().secret_bytes()  # a missing secret is a settings error: one line, exit 2
    text = path.read_text(encoding="utf-8")
    return tuple(part.strip().encode() for part in text.replace("\n", ",").split(",") if part.strip())


def verify_record_command(args: argparse.Namespace) -> int:
    """Exit 0 verified, 1 not verified, 2 a bad argument or a record that cannot be read."""
    import asyncio

    from common.settings import KafkaSettings
    from operate.provenance import RecordUnavailable, read_file, read_from_kafka, verify_stored
    from schemas.codec import build_codec
    from schemas.settings import SchemaSettings

    by_kafka = [args.topic, args.partition, args.offset]
    if (args.file is None) == all(v is None for v in by_kafka) or (args.file is None and None in by_kafka):
        print("verify-record: give --topic, --partition and --offset, or --file", file=sys.stderr)
        return 2
    try:
        secrets = _secrets(args.secret_file)
    except OSError as exc:
        print(f"verify-record: cannot read {args.secret_file}: {exc.strerror}", file=sys.stderr)
        return 2
    if not secrets:
        print(f"verify-record: no secret in {args.secret_file}", file=sys.stderr)
        return 2

    async def run() -> int:
        codec = build_codec(SchemaSettings())
        try:
            if args.file is not None:
                record = read_file(args.file, args.topic)
            else:
                record = await read_from_kafka(KafkaSettings(), args.topic, args.partition, args.offset)
            if codec.registry is not None:
                await codec.resolve([record.value])
            verification = verify_stored(record, secrets, codec)
        finally:
            await codec.close()
        print(verification.line(record))
        return 0 if verification.verified else 1

    try:
        return asyncio.run(run())
    except RecordUnavailable as exc:
        print(f"verify-record: {exc}", file=sys.stderr)
        return 2


# -- trace -------------------------------------------------------------------------------------------


def trace_command(args: argparse.Namespace) -> int:
    """Exit 0 when something was found, 1 when nothing in the window concerns the id."""
    import asyncio

    from common.settings import KafkaSettings
    from operate.trace import TraceError, build_trace, collect
    from schemas.codec import build_codec
    from schemas.settings import SchemaSettings

    kafka = KafkaSettings()

    async def run() -> int:
        codec = build_codec(SchemaSettings())
        try:
            family, updates, dead = await collect(kafka, codec, args.id.strip(), args.since, args.until)
        finally:
            await codec.close()
        trace = build_trace(args.id.strip(), args.since, family, updates, dead)
        if args.json:
            for step in trace.steps:
                print(json.dumps(step.as_json()))
            print(json.dumps({"summary": trace.summary(), "matched": trace.matched, "query": trace.query}))
        else:
            print("\n".join(trace.lines()))
        return 1 if trace.matched == "nothing" else 0

    try:
        return asyncio.run(run())
    except TraceError as exc:
        print(f"trace: {exc}", file=sys.stderr)
        return 2


def tail_command(args: argparse.Namespace) -> int:
    import asyncio

    from common.settings import KafkaSettings
    from operate.tail import resolve_topic, tail

    try:
        topics = [resolve_topic(t) for t in args.topics]
    except ValueError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        tail(
            topics,
            KafkaSettings(),
            fmt=args.format,
            from_beginning=args.from_beginning,
            max_records=args.max,
            idle_timeout_s=args.idle_timeout,
        )
    )
    return 0
