"""Issue 26, item 3: `verify-record` re-proves a family record's origin offline, `trace` follows an event.

Deliveries go through the real HTTPS gateway and the processors on the real broker (`tests.live_pipeline`); the
commands run as `pinwheel-connector` runs them (`connector.cli.main`, on a thread of its own: it starts its own
event loop), reading the same broker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.cli import main
from schemas.catalog import ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS, Family
from schemas.codec import Codec
from tests.live_pipeline import SECRET, Live, Written, live_pipeline

pytestmark = pytest.mark.kafka

INCOME_TOPIC = FAMILY_TOPICS[Family.INCOME_EMPLOYMENT]


@pytest.fixture
async def live(bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    for name in ("GATEWAY_SECRETS", "GATEWAY_SECRETS_FILE", "SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    async with live_pipeline(bootstrap, tmp_path) as pipeline:
        yield pipeline


def job_body(account: str, job_id: str, outcome: str, event_id: str, **payload: Any) -> bytes:
    body = {
        "event_id": event_id,
        "event": "income.added",
        "payload": {
            "id": job_id,
            "account_id": account,
            "link_token_id": "undefined",
            "name": "income",
            "timestamp": datetime.now(UTC).isoformat(),  # a job of now: no timeout of the pending in the test
            "outcome": outcome,
            "error_code": None,
            "error_type": None,
            "params": {},
            **payload,
        },
    }
    return json.dumps(body).encode()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as exc:  # argparse's refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def delivered(live: Live) -> dict[str, Any]:
    """A pending then a successful income job (the success delivered twice, as a Pinwheel redelivery), and a signed
    body the gateway dead-letters (its payload fails the model), all for one account."""
    account, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    pending_id, success_id, broken_id = (str(uuid.uuid4()) for _ in range(3))
    now = int(time.time())
    assert await live.post(job_body(account, job_id, "pending", pending_id), timestamp=now - 2) == 200
    success = job_body(account, job_id, "success", success_id)
    assert await live.post(success, timestamp=now - 1) == 200
    assert await live.post(success, timestamp=now) == 200  # a redelivery: same body, a later x-timestamp
    broken = job_body(account, str(uuid.uuid4()), "success", broken_id, timestamp="yesterday")
    assert await live.post(broken) == 200  # genuine data: dead-lettered, answered 200

    def done(records: list[Written]) -> bool:
        updates = {r.event_id for r in records if r.topic == ACCOUNT_UPDATES_TOPIC}
        dead = {r.event_id for r in records if r.topic == DEADLETTER_TOPIC}
        return {pending_id, success_id} <= updates and broken_id in dead

    records = await live.collect(done)
    assert done(records)
    family = [r for r in records if r.topic == INCOME_TOPIC and r.event_id in (pending_id, success_id)]
    assert len(family) == 3
    return {
        "account": account,
        "job_id": job_id,
        "pending": pending_id,
        "success": success_id,
        "broken": broken_id,
        "family": family,
    }


def secret_file(tmp_path: Path, *secrets: str) -> str:
    path = tmp_path / f"secrets-{uuid.uuid4().hex[:6]}"
    path.write_text("\n".join(secrets) + "\n")
    return str(path)


async def test_verify_record(
    live: Live,
    delivered: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record: Written = delivered["family"][0]
    where = ["--topic", "income_employment", "--partition", str(record.partition), "--offset", str(record.offset)]
    assert record.value["x_pinwheel_signature"].startswith("v2=")
    assert record.value["x_timestamp"].isdigit()

    code, out, _ = await cli(capsys, "verify-record", *where, "--secret-file", secret_file(tmp_path, SECRET))
    assert code == 0, out
    assert out.startswith(f"verified: {INCOME_TOPIC} {record.partition}:{record.offset} (income.added ")
    assert "secret 1 of 1" in out
    assert SECRET not in out

    # During a rotation, any of the secrets given: the second one matches.
    code, out, _ = await cli(capsys, "verify-record", *where, "--secret-file", secret_file(tmp_path, "old", SECRET))
    assert (code, "secret 2 of 2" in out) == (0, True)

    code, out, _ = await cli(capsys, "verify-record", *where, "--secret-file", secret_file(tmp_path, "wrong-secret"))
    assert code == 1
    assert out.startswith("not verified: ")
    assert "does not match" in out

    # Without --secret-file: the gateway's own GATEWAY_SECRETS, and a settings error naming it when unset.
    code, out, err = await cli(capsys, "verify-record", *where)
    assert code == 2
    assert "GATEWAY_SECRETS: at least one non-empty secret is required" in err
    assert out == ""
    monkeypatch.setenv("GATEWAY_SECRETS", f"rotated-out,{SECRET}")
    code, out, _ = await cli(capsys, "verify-record", *where)
    assert code == 0, out
    assert "secret 2 of 2" in out
    monkeypatch.delenv("GATEWAY_SECRETS")

    right = ["--secret-file", secret_file(tmp_path, SECRET)]
    # The record's bytes saved to a file (what kcat -f '%s' writes): the topic comes from the schema fingerprint.
    codec = Codec()
    raw = await fetch_value(live, record)
    saved = tmp_path / "record.bin"
    saved.write_bytes(raw)
    code, out, _ = await cli(capsys, "verify-record", "--file", str(saved), *right)
    assert code == 0, out

    # Tampered: the typed payload changed, raw_body (and so the signature) left alone.
    datum = codec.decode(INCOME_TOPIC, raw)
    name, payload = datum["payload"]
    forged = {**datum, "payload": (name, {**payload, "outcome": "error"})}
    saved.write_bytes(codec.encode(INCOME_TOPIC, forged))
    code, out, _ = await cli(capsys, "verify-record", "--file", str(saved), *right)
    assert code == 1
    assert "the signature matches raw_body, but the record's payload differ" in out

    # Tampered: the raw body itself.
    body = bytes(datum["raw_body"]).replace(b'"name": "income"', b'"name": "payroll"')
    assert body != datum["raw_body"]
    saved.write_bytes(codec.encode(INCOME_TOPIC, {**datum, "raw_body": body}))
    code, out, _ = await cli(capsys, "verify-record", "--file", str(saved), *right)
    assert code == 1
    assert "does not match the stored raw_body" in out

    # Refusals: one line, exit 2, nothing on stdout.
    secrets = ["--secret-file", secret_file(tmp_path, SECRET)]
    cases = [
        ["--topic", "income_employment", "--partition", "x", "--offset", "0"],
        ["--topic", "updates", "--partition", "0", "--offset", "0"],  # not a family topic
        ["--topic", "income_employment", "--partition", str(record.partition)],  # no offset
        ["--topic", "income_employment", "--partition", str(record.partition), "--offset", "99999999"],
        ["--topic", "income_employment", "--partition", "999", "--offset", "0"],
        ["--file", str(tmp_path / "absent.bin")],
    ]
    for argv in cases:
        code, out, err = await cli(capsys, "verify-record", *argv, *secrets)
        assert code == 2, (argv, out, err)
        assert out == ""


async def fetch_value(live: Live, record: Written) -> bytes:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=live.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(record.topic, record.partition)
        consumer.assign([tp])
        consumer.seek(tp, record.offset)
        message = await consumer.getone(tp)
        assert message.offset == record.offset
        return message.value or b""
    finally:
        await consumer.stop()


def steps(out: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines()]
    return lines[:-1], lines[-1]


async def test_trace_by_event_id_and_by_account(
    live: Live, delivered: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    success, pending, account = delivered["success"], delivered["pending"], delivered["account"]
    code, out, _ = await cli(capsys, "trace", success, "--since", "10m", "--json")
    assert code == 0
    found, summary = steps(out)
    assert summary["matched"] == "event_id"
    deliveries = [s for s in found if s["kind"] == "delivery"]
    assert [(d["copy"], d["attempt"], d["verdict"]) for d in deliveries] == [(1, 1, "processed"), (2, 2, "duplicate")]
    assert {d["ref"].split()[0] for d in deliveries} == {INCOME_TOPIC}
    assert deliveries[0]["x_timestamp"] != deliveries[1]["x_timestamp"]
    updates = [s for s in found if s["kind"] == "update"]
    own = [u for u in updates if u["related_to"] is None]
    assert [(u["update_id"], u["change"], u["outcome"]) for u in own] == [(success, "job_succeeded", "success")]
    assert own[0]["job_id"] == delivered["job_id"]
    assert own[0]["pending_since"] is not None  # joined with the pending event
    assert own[0]["time_to_resolve_ms"] is not None
    joined = [u for u in updates if u["related_to"] == success]
    assert [(u["update_id"], u["change"]) for u in joined] == [(pending, "job_pending")]
    assert joined[0]["state_version"] < own[0]["state_version"]
    assert all(s["at"] for s in found)
    assert not [s for s in found if s["kind"] == "dead_letter"]

    # by account: every delivery of the account, its updates and the gateway's dead letter, in time order
    code, out, _ = await cli(capsys, "trace", account, "--since", "10m", "--json")
    assert code == 0
    found, summary = steps(out)
    assert summary["matched"] == "account_id"
    assert len([s for s in found if s["kind"] == "delivery"]) == 3
    assert {s["update_id"] for s in found if s["kind"] == "update"} == {pending, success}
    (dead,) = [s for s in found if s["kind"] == "dead_letter"]
    assert (dead["event_id"], dead["stage"], dead["reason"]) == (delivered["broken"], "gateway", "invalid_payload")
    assert [s["at"] for s in found] == sorted(s["at"] for s in found)

    # the dead-lettered event by its id, as text
    code, out, _ = await cli(capsys, "trace", delivered["broken"], "--since", "10m")
    assert code == 0
    assert "dead_letter" in out
    assert "reason=invalid_payload" in out
    assert "gateway logs are not in Kafka" in out
    assert out.strip().endswith("0 delivery record(s) in Kafka (0 duplicate), 0 update(s), 1 dead letter(s)")

    code, out, _ = await cli(capsys, "trace", str(uuid.uuid4()), "--since", "10m")
    assert code == 1
    assert out.startswith("nothing found for ")
