"""Micro-benchmark of the schemas hot path: `python -m bench.codec_bench`.

Per event, for the largest real capture body and a typical one: build_family_record (JSON parse +
pydantic validation + datum), Codec.encode, Codec.decode, and read_family_record (datum → model).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.codec import Codec
from schemas.datum import read_family_record
from schemas.envelope import build_family_record
from simulator.traffic import load_capture

NOW = datetime(2025, 6, 24, 22, 4, 34, tzinfo=UTC)


def per_call_us(fn: Callable[[], object], number: int = 2000, repeat: int = 7) -> float:
    """Median of `repeat` runs, in µs per call (median: robust to a noisy neighbour)."""
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m bench.codec_bench", description=__doc__.splitlines()[0]).parse_args(argv)
    bodies = [record["body"].encode() for record in load_capture()]
    largest = max(bodies, key=len)
    typical = sorted(bodies, key=len)[len(bodies) // 2]
    codec = Codec()
    print(f"{'body':<32} {'bytes':>6} {'avro':>6} {'build':>9} {'encode':>9} {'decode':>9} {'to model':>9}")
    for label, body in (("largest (shifts.added, 60 items)", largest), ("typical (median size)", typical)):
        record = build_family_record(body, webhook_id="w", pinwheel_version="v", sent_at=NOW, received_at=NOW)
        data = codec.encode(record.topic, record.value)
        decoded = codec.decode(record.topic, data)
        build = per_call_us(
            functools.partial(
                build_family_record, body, webhook_id="w", pinwheel_version="v", sent_at=NOW, received_at=NOW
            )
        )
        encode = per_call_us(functools.partial(codec.encode, record.topic, record.value))
        decode = per_call_us(functools.partial(codec.decode, record.topic, data))
        to_model = per_call_us(functools.partial(read_family_record, decoded))
        print(
            f"{label:<32} {len(body):>6} {len(data):>6} {build:>7.1f}µs {encode:>7.1f}µs {decode:>7.1f}µs"
            f" {to_model:>7.1f}µs"
        )


if __name__ == "__main__":
    main()
