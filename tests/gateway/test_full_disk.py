"""A full spool disk never wedges the gateway (issue 25): the gateway (2 workers, a subprocess) spools on a
real 2 MiB filesystem with the broker down until the disk is full and deliveries get 503 `spool_full`; then
space is freed and the refused deliveries are retried (as Pinwheel does) and succeed, then the broker comes
back, and every delivery answered 200 reaches Kafka, counted from outside (confluent-kafka, no project code),
with no restart, while /readyz tells the truth in each phase. (Before the fix, the retried deliveries were
appended behind the partial frame a refused write had left, and the drain stopped there for good.)"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from common.topics import TopicSettings
from connector.local_kafka import LocalKafka
from gateway.kafka_record import KafkaRecord, encode_record
from gateway.settings import GatewaySettings
from gateway.spool.frames import FRAME_OVERHEAD, frame, scan
from gateway.spool.segments import Spool
from schemas.catalog import FAMILY_TOPICS, Family
from tests.gateway.gateway_helpers import (
    SECRET,
    admin_url,
    event_body,
    gateway_env,
    gateway_settings,
    signed_headers,
    start_subprocess,
    stop_subprocess,
    tail_of,
    wait_up,
)
from tests.small_fs import fill, free_bytes, small_filesystem

pytestmark = pytest.mark.kafka

TOPIC = FAMILY_TOPICS[Family.INCOME_EMPLOYMENT]
DISK_BYTES = 2 * 1024 * 1024
BALLAST_BYTES = 640 * 1024  # someone else's file on the spool's disk, deleted to free space
SENDERS = 8
PADDING = 7_001  # bytes per delivery (~14 KB spooled: the record holds it twice): ~95 fill the disk; odd sizes


def event_ids_in_kafka(bootstrap: str, wanted: set[str], timeout_s: float) -> Counter[str]:
    """How often each wanted event_id is in the topic (a plain consumer, read from the beginning)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"outside-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(TopicSettings().partitions)])  # 0: the beginning
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not wanted <= set(seen):
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                headers = dict(message.headers() or [])
                event_id = (headers.get("event_id") or b"").decode()
                if event_id in wanted:
                    seen[event_id] += 1
        return seen
    finally:
        consumer.close()


async def readiness(settings: GatewaySettings, times: int = 1) -> list[tuple[int, dict[str, Any]]]:
    """Each worker's own readiness, from the admin listener's /readyz (its `per_worker` reports with several
    workers), as (200 or 503, the worker's report)."""
    answers = []
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(times):
            body = (await http.get(admin_url(settings) + "/readyz")).json()
            for report in body.get("per_worker") or [body]:
                answers.append((200 if report.get("status") == "ready" else 503, report))
    return answers


class Sender:
    """One account's deliveries, in order; a refused one is sent again, same body, as Pinwheel retries it."""

    def __init__(self, acked: set[str], refusals: Counter[str]) -> None:
        self.account = str(uuid.uuid4())
        self.seq = 0
        self.retry: tuple[str, bytes] | None = None
        self.acked, self.refusals = acked, refusals

    async def post(self, http: httpx.AsyncClient, url: str) -> bool:
        if self.retry is None:
            event_id = str(uuid.uuid4())
            body = event_body("income.added", self.account, self.seq, event_id=event_id, note="x" * PADDING)
            self.retry, self.seq = (event_id, body), self.seq + 1
        event_id, body = self.retry
        response = await http.post(url, content=body, headers=signed_headers(body))
        if response.status_code == 200:
            assert response.json()["status"] == "spooled"
            self.acked.add(event_id)
            self.retry = None
            return True
        assert response.status_code == 503, response.text
        self.refusals[response.json()["reason"]] += 1
        return False


async def test_a_full_disk_never_wedges_the_gateway(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "disk", DISK_BYTES) as disk:
        (disk / "ballast").write_bytes(b"\0" * BALLAST_BYTES)
        settings = gateway_settings(tls_pair, disk / "spool", workers=2)
        url = f"https://127.0.0.1:{settings.port}"
        log = tmp_path / "gateway.log"
        await asyncio.to_thread(private_broker.kill)  # Kafka is down: every delivery goes to the spool
        process = start_subprocess(gateway_env(settings, private_broker.bootstrap) | {"GATEWAY_WORKERS": "2"}, log)
        acked: set[str] = set()
        refusals: Counter[str] = Counter()
        timeline: dict[str, float] = {}
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as http:
                await wait_up(http, url, process, log)

                senders = [Sender(acked, refusals) for _ in range(SENDERS)]

                async def until_refused(sender: Sender) -> None:
                    refused_in_a_row = 0
                    while refused_in_a_row < 3:
                        refused_in_a_row = 0 if await sender.post(http, url + settings.route) else refused_in_a_row + 1

                async def until_accepted(sender: Sender, n: int) -> None:
                    for _ in range(n):
                        assert await sender.post(http, url + settings.route), refusals

                await asyncio.gather(*(until_refused(s) for s in senders))
                timeline["disk_full"] = time.monotonic() - started
                assert refusals["spool_full"] >= 3 * SENDERS, refusals
                assert len(acked) > 60  # the disk, not some other limit, refused them
                assert free_bytes(disk) < 64 * 1024
                # Full: every worker says so (in its next report: one a second), and says why.
                deadline = time.monotonic() + 10
                answers = await readiness(settings)
                while any(status == 200 for status, _ in answers):
                    assert time.monotonic() < deadline, answers
                    await asyncio.sleep(0.3)
                    answers = await readiness(settings)
                for status, body in answers:
                    assert status == 503, body
                    assert body["spool"] == "disk_full", body
                    assert body["reasons"] == ["spool disk full"], body
                    assert body["kafka"] == "down", body
                # What the disk holds is whole frames only: a refused write left nothing behind.
                segments = sorted((disk / "spool").rglob("*.seg"))
                for segment in segments:
                    data = segment.read_bytes()
                    assert scan(data)[1] == len(data), f"{segment.name}: bytes after the last good frame"
                assert sum(len(scan(s.read_bytes())[0]) for s in segments) == len(acked)

                (disk / "ballast").unlink()  # space returns (the broker is still down)
                deadline = time.monotonic() + 10
                while not all(status == 200 for status, _ in await readiness(settings)):
                    assert time.monotonic() < deadline, "readiness did not come back with the space"
                    await asyncio.sleep(0.5)
                timeline["ready_again"] = time.monotonic() - started
                before = len(acked)
                # The refused deliveries come again (Pinwheel retries 503s), and new ones: all land in the spool.
                await asyncio.gather(*(until_accepted(s, 4) for s in senders))
                assert len(acked) == before + 4 * SENDERS

                await asyncio.to_thread(private_broker.start)  # and the broker is back
                timeline["broker_back"] = time.monotonic() - started
                seen = await asyncio.to_thread(event_ids_in_kafka, private_broker.bootstrap, acked, 60)
                timeline["all_in_kafka"] = time.monotonic() - started
                missing = acked - set(seen)
                assert not missing, f"{len(missing)} of {len(acked)} deliveries answered 200 are not in Kafka"
                assert process.poll() is None  # no restart
                deadline = time.monotonic() + 20
                while True:  # each worker drained and says Kafka is up
                    answers = await readiness(settings)
                    if all(b["kafka"] == "up" and b["spool_records"] == 0 for _, b in answers):
                        break
                    assert time.monotonic() < deadline, answers
                    await asyncio.sleep(0.5)
                assert all(status == 200 and body["spool"] == "ok" for status, body in answers)
        finally:
            stop_subprocess(process)
    text = log.read_text()
    assert SECRET not in text
    assert "x" * 100 not in text  # payload bytes never logged
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    failed = Counter(line.get("stage") for line in lines if line["message"] == "spool drain failed; retrying")
    assert failed == Counter(), (failed, tail_of(log))  # the drain never stuck on the spool
    print(
        f"\n[full disk] acked={len(acked)} in_kafka={len(seen)} duplicates={sum(seen.values()) - len(seen)} "
        f"refusals={dict(refusals)} timeline={ {k: round(v, 1) for k, v in timeline.items()} }"
    )


async def test_a_gateway_starts_on_a_full_disk_and_drains_what_it_has(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "disk", DISK_BYTES) as disk:
        # What a crash on a full disk leaves: spooled records, a damaged frame among them, a torn tail, and
        # the half-written repair copy of an older version, on a disk with not a byte free.
        worker = disk / "spool" / "worker-0"
        spool = Spool.open(worker, segment_bytes=16 << 20, max_bytes=1 << 30)
        event_ids = [str(uuid.uuid4()) for _ in range(120)]
        now_ms = int(time.time() * 1000)
        payloads = [
            encode_record(KafkaRecord(TOPIC, b"acct", b"v" * 3_001, (("event_id", e.encode()),), now_ms))
            for e in event_ids
        ]
        assert spool.append_many(payloads) == 120
        spool.close()
        segment = next(worker.glob("*.seg"))
        data = bytearray(segment.read_bytes())
        data[sum(FRAME_OVERHEAD + len(p) for p in payloads[:70]) + FRAME_OVERHEAD + 9] ^= 0x10  # frame 71
        segment.write_bytes(bytes(data) + frame(payloads[0])[:-1000])
        (worker / f"{segment.stem}.tmp").write_bytes(b"\0" * 300_000)
        fill(disk / "ballast")
        assert free_bytes(disk) < 4096

        await asyncio.to_thread(private_broker.kill)
        settings = gateway_settings(tls_pair, disk / "spool")
        url = f"https://127.0.0.1:{settings.port}"
        log = tmp_path / "gateway.log"
        process = start_subprocess(gateway_env(settings, private_broker.bootstrap), log)
        try:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as http:
                await wait_up(http, url, process, log)  # it starts: recovery repaired in place, needing no room
                [(status, body)] = await readiness(settings)
                # The .tmp leftover was removed at start, so there is room again: truthfully ready.
                assert (status, body["spool"], body["spool_records"]) == (200, "ok", 119), body
                (disk / "filler").write_bytes(b"\0")  # and full once more
                fill(disk / "filler")
                [(status, body)] = await readiness(settings)
                assert (status, body["spool"]) == (503, "disk_full"), body
                # (large: a small one may still fit in the segment's last, partly used page)
                body = event_body("income.added", str(uuid.uuid4()), note="x" * 50_000)
                response = await http.post(url + settings.route, content=body, headers=signed_headers(body))
                assert (response.status_code, response.json()["reason"]) == (503, "spool_full")

                await asyncio.to_thread(private_broker.start)  # the drain needs no free space, and frees some
                expected = set(event_ids) - {event_ids[70]}
                seen = await asyncio.to_thread(event_ids_in_kafka, private_broker.bootstrap, expected, 60)
                assert expected <= set(seen), f"{len(expected - set(seen))} spooled records not in Kafka"
                deadline = time.monotonic() + 20
                while (body := (await readiness(settings))[0][1])["spool_records"]:
                    assert time.monotonic() < deadline, body
                    await asyncio.sleep(0.5)
                assert not list(worker.glob("*.seg"))  # drained on the full disk: the space is free
                assert body["spool"] == "ok"
                assert body["kafka"] == "up"
        finally:
            stop_subprocess(process)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    quarantined = [line for line in lines if line["message"] == "damaged spool frame quarantined"]
    assert len(quarantined) == 1, quarantined
    print(f"\n[full-disk start] drained={len(expected)} quarantined={quarantined[0]}")
