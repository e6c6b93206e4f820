"""Per-event cost of turning a family record into the logic's ``Event``: ``python -m bench.event_bench``.

The processors' path (``processors.pipeline``): decode the record's envelope prefix (ids, times, raw body),
read the raw body by the gateway's rules (``schemas.envelope.parse_body``) and build the ``Event``. For
comparison, the floor of the other route: decoding the whole record, typed payload included, with the
same codec (before building anything from it). Records: the real sandbox capture, encoded by the gateway's
own code. Median of 7 runs, µs per record.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from processors.pipeline import ENVELOPE_FIELDS, event_of
from schemas.codec import Codec
from schemas.envelope import build_family_record
from simulator.traffic import load_capture

NOW = datetime(2025, 6, 24, 22, 4, 34, tzinfo=UTC)


def _records(codec: Codec) -> list[ConsumerRecord[bytes, bytes]]:
    records = []
    for offset, row in enumerate(load_capture()):
        family = build_family_record(
            row["body"].encode(), webhook_id="w", pinwheel_version="v", sent_at=NOW, received_at=NOW
        )
        value = codec.encode(family.topic, family.value)
        ms = int(NOW.timestamp() * 1000)
        records.append(ConsumerRecord(family.topic, 0, offset, ms, 1, family.key, value, None, 0, len(value), []))
    return records


def per_record_us(fn: Callable[[], object], records: int, number: int = 500) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=7)) / number / records * 1e6


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m bench.event_bench", description=__doc__.splitlines()[0]).parse_args(argv)
    codec = Codec()
    records = _records(codec)

    def processors_path() -> None:
        for record in records:
            event_of(codec.decode_fields(record.topic, record.value, ENVELOPE_FIELDS, plain=True), record)

    def full_decode() -> None:
        for record in records:
            codec.decode(record.topic, record.value)

    n = len(records)
    path, full = per_record_us(processors_path, n), per_record_us(full_decode, n)
    print(f"{n} capture records, µs per record")
    print(f"record -> Event (envelope prefix, parse_body, event_from_payload): {path:6.2f}")
    print(f"full Avro decode, typed payload included (no Event built yet):    {full:6.2f}")


if __name__ == "__main__":
    main()
