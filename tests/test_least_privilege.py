"""Least privilege, shipped: each component runs as its own user holding only the ACLs `pinwheel-connector acls`
prints, on a broker that denies everything else (tests/acl_kafka.py), and removing any one of them makes the
component fail, within a bounded time, with a message naming the authorization problem.

The components run as the user would run them: `pinwheel-connector <command>` subprocesses configured by their
KAFKA_* environment. The ACLs are applied from the CLI's JSON with confluent-kafka, as a user would.

The removal cases are recorded as they behave today: those where the component hangs, exits with a traceback or
says something other than "not authorized" are strict xfails (`TODAY`), each naming what happens, until the
authorization-error classifier (issue 24) is wired in; a case that starts passing fails the run, so the table
stays true.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from gateway.signature import sign
from gateway.tls import ensure_self_signed
from operate.acls import COMPONENTS, Acl, acls, default_principal
from schemas import catalog
from tests.acl_kafka import AclKafka, acl_broker
from tests.sample_data import doc_samples_as_json

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(900)]  # slow: being reworked

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "pinwheel-connector")
APP_ID = "lp-processor"  # the processors' application id of this module (names the group, changelogs, txn ids)
SECRET = "lp-secret-do-not-log"
USERS = {c: default_principal(c).removeprefix("User:") for c in COMPONENTS}
AUTHORIZATION = re.compile(r"authori[sz]ation", re.IGNORECASE)


@pytest.fixture(scope="module")
def acl_kafka() -> Iterator[AclKafka]:
    """The authorizing broker (tests/acl_kafka.py), one user per component (`pinwheel-<component>`)."""
    with acl_broker(USERS.values()) as broker:
        yield broker


# -- applying the CLI's ACLs --------------------------------------------------------------------------


def binding(entry: dict[str, str]) -> AclBinding:
    """One object of `pinwheel-connector acls --format json` as confluent-kafka's AclBinding."""
    return AclBinding(
        ResourceType[entry["restype"]],
        entry["name"],
        ResourcePatternType[entry["resource_pattern_type"]],
        entry["principal"],
        entry["host"],
        AclOperation[entry["operation"]],
        AclPermissionType[entry["permission_type"]],
    )


def cli_acls(*args: str) -> list[dict[str, str]]:
    out = subprocess.run(
        [CLI, "acls", "--format", "json", "--application-id", APP_ID, *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    loaded: list[dict[str, str]] = json.loads(out.stdout)
    return loaded


def create(broker: AclKafka, entries: list[dict[str, str]]) -> None:
    admin = broker.admin()  # kept while the futures are awaited: a collected client cancels them
    for future in admin.create_acls([binding(e) for e in entries]).values():
        future.result()
    time.sleep(0.3)  # the broker applies ACLs from its metadata log: a moment after the call returns


def delete(broker: AclKafka, entries: list[dict[str, str]]) -> None:
    filters = [
        AclBindingFilter(
            b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
        )
        for b in map(binding, entries)
    ]
    admin = broker.admin()
    for future in admin.delete_acls(filters).values():
        future.result()
    time.sleep(0.3)


@pytest.fixture(scope="module")
def granted(acl_kafka: AclKafka) -> list[dict[str, str]]:
    """Every component's ACLs, applied from the real CLI's JSON output."""
    entries = cli_acls()
    create(acl_kafka, entries)
    return entries


@pytest.fixture(scope="module")
def topics_created(acl_kafka: AclKafka, granted: list[dict[str, str]]) -> None:
    """Every declared topic, created by the topics job as its own user (the first step of a deployment)."""
    created = run_cli(acl_kafka, "topics", ["topics", "create"], 60)
    assert created.code == 0, created.output


# -- running the components ---------------------------------------------------------------------------


@dataclass
class Run:
    code: int | None  # None: still running when the time was up (a hang)
    seconds: float
    output: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.output


def component_env(broker: AclKafka, component: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PROCESSOR_", "GATEWAY_", "TOPICS_"))}
    return {
        **env,
        **broker.env(USERS[component]),
        "KAFKA_REQUEST_TIMEOUT_MS": "5000",
        "PROCESSOR_APPLICATION_ID": APP_ID,
        **extra,
    }


def run_cli(broker: AclKafka, component: str, args: list[str], timeout_s: float, **extra: str) -> Run:
    started = time.monotonic()
    env = component_env(broker, component, **extra)
    with subprocess.Popen([CLI, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as p:
        try:
            out, _ = p.communicate(timeout=timeout_s)
            code: int | None = p.returncode
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                out, _ = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            code = None
    text = "\n".join(line for line in out.decode(errors="replace").splitlines() if "in the clear" not in line)
    return Run(code, round(time.monotonic() - started, 1), text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """`pinwheel-connector gateway` as its own user, and signed webhooks to it."""

    def __init__(self, broker: AclKafka, directory: Path) -> None:
        cert, key = directory / "gw.crt", directory / "gw.key"
        ensure_self_signed(cert, key)
        self.port = free_port()
        self.log = directory / f"gateway-{self.port}.log"
        env = component_env(
            broker, "gateway", GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(self.port),
            GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key), GATEWAY_SECRETS=SECRET,
            GATEWAY_SPOOL_DIR=str(directory / f"spool-{self.port}"),
            GATEWAY_PUBLISH_TIMEOUT_S="3",
        )  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([CLI, "gateway"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.http = httpx.Client(verify=False, timeout=20)  # noqa: S501  (our own self-signed loopback gateway)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if self.http.get(f"https://127.0.0.1:{self.port}/livez").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"gateway did not come up: {self.output()}")

    def post(self, body: str) -> httpx.Response:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json", "Pinwheel-Version": "2023-11-22", "X-Timestamp": str(ts),
            "X-Pinwheel-Signature": sign(SECRET.encode(), ts, body.encode()),
        }  # fmt: skip
        return self.http.post(f"https://127.0.0.1:{self.port}/webhooks/pinwheel", content=body, headers=headers)

    def readyz(self) -> dict[str, Any]:
        ready: dict[str, Any] = self.http.get(f"https://127.0.0.1:{self.port}/readyz").json()
        return ready

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bodies() -> dict[str, str]:
    """One webhook body per topic the gateway writes (fresh event ids): a documented sample per typed family,
    an undocumented type (`other`), and an invalid payload (a gateway dead letter)."""
    samples = {json.loads(s)["event"]: s for s in doc_samples_as_json()}
    chosen = {
        catalog.FAMILY_TOPICS[catalog.family_of(event)]: samples[event]
        for event in ("account.added", "direct_deposit_allocations.added", "income.added", "paystubs.added",
                      "shifts.added")
    }  # fmt: skip
    fresh = {topic: json.dumps({**json.loads(body), "event_id": str(uuid.uuid4())}) for topic, body in chosen.items()}
    other = {"event_id": str(uuid.uuid4()), "event": "bill.added", "payload": {"account_id": str(uuid.uuid4())}}
    invalid = {"event_id": str(uuid.uuid4()), "event": "account.added", "payload": {"account_id": 5}}
    return {
        **fresh,
        catalog.FAMILY_TOPICS[catalog.Family.OTHER]: json.dumps(other),
        catalog.DEADLETTER_TOPIC: json.dumps(invalid),
    }


def admin_config(broker: AclKafka) -> dict[str, str]:
    return {
        "bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
        "sasl.username": "admin", "sasl.password": broker.passwords["admin"],
    }  # fmt: skip


def read_all(broker: AclKafka, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every committed record of `topic`, read as the admin."""
    consumer = Consumer({**admin_config(broker), "group.id": f"lp-{uuid.uuid4().hex}", "isolation.level":
                         "read_committed", "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p, 0) for p in partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        done: set[int] = {p for p, end in ends.items() if end == 0}
        while len(done) < len(tps) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(message)
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return records
    finally:
        consumer.close()


def event_ids(records: list[Any]) -> set[str]:
    return {value.decode() for r in records for name, value in (r.headers() or []) if name == "event_id"}


# -- the pipeline, end to end -------------------------------------------------------------------------


def test_the_pipeline_runs_end_to_end_with_only_the_printed_acls(
    acl_kafka: AclKafka, topics_created: None, tmp_path: Path
) -> None:
    assert run_cli(acl_kafka, "topics", ["topics", "check"], 60).code == 0

    gateway = Gateway(acl_kafka, tmp_path)
    try:
        sent = bodies()
        for topic, body in sent.items():
            response = gateway.post(body)
            assert response.status_code == 200, (topic, response.text, gateway.output()[-2000:])
        assert gateway.readyz()["min_isr"] == "ok"
    finally:
        gateway.stop()
    posted = {json.loads(body)["event_id"] for body in sent.values()}

    processor = subprocess.Popen(
        [CLI, "processor"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=component_env(acl_kafka, "processors", PROCESSOR_STATE_DIR=str(tmp_path / "state"),
                          PROCESSOR_HEALTH_PORT=str(free_port())),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        updated: set[str] = set()
        accounts = {json.loads(body)["event_id"] for t, body in sent.items() if t in catalog.FAMILY_TOPICS.values()}
        while time.monotonic() < deadline and not accounts <= updated:
            assert processor.poll() is None, "the processor exited"
            updated = event_ids(read_all(acl_kafka, catalog.ACCOUNT_UPDATES_TOPIC)) & posted
            time.sleep(1)
        assert accounts <= updated, f"no account update for {accounts - updated}"
    finally:
        processor.terminate()
        processor.wait(30)

    for component, args in (
        ("tail", ["tail", "updates", "--from-beginning", "--max", "1", "--idle-timeout", "5"]),
        ("deadletter-list", ["deadletter", "list", "--json"]),
    ):
        done = run_cli(acl_kafka, component, args, 60)
        assert done.code == 0, (component, done.output)
    listed = [json.loads(line) for line in run_cli(acl_kafka, "deadletter-list", ["deadletter", "list", "--json"], 60)
              .output.splitlines() if line.startswith("{")]  # fmt: skip
    assert listed
    shown = run_cli(acl_kafka, "deadletter-show", ["deadletter", "show", listed[0]["ref"]], 60)
    assert shown.code == 0, shown.output
    replayed = run_cli(acl_kafka, "deadletter-replay", ["deadletter", "replay", "--no-progress"], 60)
    assert replayed.code == 0, replayed.output
    reset = run_cli(acl_kafka, "processor-reset", ["processor", "reset", "--yes"], 120,
                    PROCESSOR_STATE_DIR=str(tmp_path / "state"))  # fmt: skip
    assert reset.code == 0, reset.output


# -- every ACL is needed --------------------------------------------------------------------------------


def _cases() -> list[Any]:
    cases = []
    for component, entries in acls(application_id=APP_ID).items():
        if component in ("verify",):  # needs a simulator ledger: covered by tail's identical ACL shape
            continue
        for acl in entries:
            reason = today(component, acl)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            if component == "deadletter-replay" and acl.operation.value == "WRITE":
                marks = [
                    pytest.mark.skip(
                        reason="replay writes only replayable dead letters; this broker holds a "
                        "still-invalid one, so the family topics' Write is not reached"
                    )
                ]
            name = f"{component}:{acl.resource_type.value}:{acl.resource_name}:{acl.operation.value}"
            cases.append(pytest.param(component, acl, id=name, marks=marks))
    return cases


def today(component: str, acl: Acl) -> str | None:
    """What the component does today without `acl`, where that is not a clear failure (None: it is clear).

    Measured on Kafka 4.3 with aiokafka 0.14; the integrator's classifier (issue 24) is to turn these into one
    line naming the authorization problem and exit 2.
    """
    op, rtype, name = acl.operation.value, acl.resource_type.value, acl.resource_name
    changelog = name.endswith("-changelog")
    if component == "topics" and op == "DESCRIBE":
        return "exits 2 saying the topic is missing (metadata hides a topic its user may not describe)"
    if component == "gateway" and op == "DESCRIBE_CONFIGS":
        return "common.isr_watch ignores describe_configs' per-topic error: /readyz says min_isr ok, unchecked"
    if component == "processors":
        if rtype == "GROUP":
            return "exits 1 with a GroupAuthorizationFailedError traceback from the consumer's getmany"
        if rtype == "TOPIC" and not changelog and op in ("READ", "WRITE"):
            return "exits 2 saying the topic is missing (check_topics lists only the topics it may describe)"
        if op == "DESCRIBE_CONFIGS":
            return "not reached with PROCESSOR_HEALTH_PORT=0 (the min-ISR watch runs with /readyz); with it, "
            "common.isr_watch ignores the per-topic error and says min_isr ok: the service runs on"
        if op == "READ":
            return "hangs: every task's restore fails (TopicAuthorizationFailedError), logged as a warning and "
            "retried every second forever"
        if rtype == "TRANSACTIONAL_ID":
            return "hangs: every task's producer start fails (TransactionalIdAuthorizationFailed), logged as a "
            "warning and retried every second forever"
        return "runs on: the changelog Write is first needed by a commit with state writes, which this run (no new "
        "input) does not make; a refused commit restarts the task forever (engine._fail)"
    if component == "tail":
        return "exits 1 with a TopicAuthorizationFailedError traceback (after printing 'is not authorized')"
    if component.startswith("deadletter-") and op == "READ":
        return "exits 1 saying the dead-letter topic does not exist (metadata hides what it may not describe)"
    if component == "processor-reset":
        if rtype == "GROUP":
            return "exits 1 with a GroupAuthorizationFailedError traceback (find_coordinator)"
        if op == "READ":
            return "exits 1 saying the family topic is missing (metadata hides what it may not describe)"
        if op == "DELETE":
            return "the changelog stays hidden (no Describe), so it is not deleted; its re-creation finds it and "
            "waits 30 s, then exits 1 with a TopicMismatchError traceback ('created but without leaders')"
        return "exits 1 with a TopicMismatchError traceback naming TopicAuthorizationFailedError, AFTER deleting "
        "the changelogs: the application is left without them until `topics create` runs"
    return None


@pytest.mark.parametrize(("component", "acl"), _cases())
def test_without_any_one_acl_the_component_fails_clearly(
    acl_kafka: AclKafka, topics_created: None, component: str, acl: Acl, tmp_path: Path
) -> None:
    removed = [acl.binding() | {"principal": default_principal(component)}]
    delete(acl_kafka, removed)
    try:
        failure = run_without(acl_kafka, component, acl, tmp_path)
    finally:
        create(acl_kafka, removed)
        if component in ("topics", "processor-reset"):  # a topic deleted for the case, or left deleted by it
            assert run_cli(acl_kafka, "topics", ["topics", "create"], 60).code == 0
    print(f"{component} without {acl.operation.value} on {acl.resource_name}: {failure}")
    assert failure.code != 0, failure.output[-3000:]
    assert failure.code is not None, f"still running after {failure.seconds}s: {failure.output[-3000:]}"
    assert not failure.traceback, failure.output[-3000:]
    assert AUTHORIZATION.search(failure.output), failure.output[-3000:]


def run_without(broker: AclKafka, component: str, acl: Acl, tmp_path: Path) -> Run:
    """The quickest run of `component` that needs `acl`."""
    if component == "topics":
        if acl.operation.value == "CREATE":  # only a missing topic is created
            admin = broker.admin()
            for future in admin.delete_topics([acl.resource_name]).values():
                future.result()
            time.sleep(1)
            return run_cli(broker, component, ["topics", "create"], 60)
        return run_cli(broker, component, ["topics", "check"], 60)
    if component == "gateway":
        gateway = Gateway(broker, tmp_path)
        started = time.monotonic()
        try:
            if acl.operation.value == "WRITE":
                response = gateway.post(bodies()[acl.resource_name])
                code = 0 if response.status_code == 200 else 1
                return Run(code, round(time.monotonic() - started, 1), response.text + "\n" + gateway.output())
            time.sleep(2)
            ready = gateway.readyz()
            code = 0 if ready.get("min_isr") == "ok" else 1
            return Run(code, round(time.monotonic() - started, 1), json.dumps(ready))
        finally:
            gateway.stop()
    if component == "processors":
        return run_cli(broker, component, ["processor"], 20, PROCESSOR_STATE_DIR=str(tmp_path / "state"),
                       PROCESSOR_HEALTH_PORT="0")  # fmt: skip
    if component == "tail":
        return run_cli(broker, component, ["tail", acl.resource_name, "--from-beginning", "--max", "1",
                                           "--idle-timeout", "5"], 30)  # fmt: skip
    if component == "deadletter-list":
        return run_cli(broker, component, ["deadletter", "list"], 30)
    if component == "deadletter-show":
        return run_cli(broker, component, ["deadletter", "show", "0:0"], 30)
    if component == "deadletter-replay":
        return run_cli(broker, component, ["deadletter", "replay", "--no-progress"], 30)
    return run_cli(broker, component, ["processor", "reset", "--yes"], 60, PROCESSOR_STATE_DIR=str(tmp_path / "s"))
