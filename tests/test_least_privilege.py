"""Least privilege, proven: each component runs as its own SCRAM user holding only the ACLs `pinwheel-connector
acls` prints, on the secured broker (tests/secure_kafka.py: SASL_SSL, StandardAuthorizer, no ACL = denied); the
pipeline works end to end, and removing any one ACL makes the component fail at once and clearly: one line
naming what is not authorized, exit 2 (commands, the processor), never a hang, a traceback or a misleading
"topic missing". The gateway keeps serving by design: a refused Write answers that webhook 503 with a logged
reason and /readyz names the refusal; a refused DescribeConfigs makes /readyz say min_isr unknown and why.

The components run as the user runs them: `pinwheel-connector <command>` subprocesses configured by their
KAFKA_* environment. The ACLs come from the CLI's JSON (`acls --format json --principal ...`) and are applied
with confluent-kafka, as a user would.

Fast: every removal case has its OWN principal (the component's full set minus that one ACL) and, for the
processors, its own application id (group, changelogs, transactional ids), so the cases of every component run
concurrently against the one broker, each with a bounded time. Only the topics job's Create on a fixed-name
topic needs that topic deleted for its case: those few run one after the other, last.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    NewTopic,
)
from pydantic import BaseModel

import schemas.envelope
from common.ports import free_port
from common.topics import TopicSettings
from gateway import records
from gateway.signature import sign
from gateway.tls import ensure_self_signed
from operate.acls import COMPONENTS, Acl, Operation, acls, acls_json, component_acls
from processors.topics import all_topics, own_changelog_topics
from schemas import catalog
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from tests.sample_data import doc_samples_as_json
from tests.secure_kafka import SecureBroker, acl_binding

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "pinwheel-connector")
APP_ID = "lp-processor"  # the processors' application id of the end-to-end run and of the shared-name cases
SECRET = "lp-secret-do-not-log"
CONCURRENCY = 6
NOT_AUTHORIZED = re.compile(r"not authori[sz]ed", re.IGNORECASE)
COMMAND_TIMEOUT_S = 40.0
PROCESSOR_TIMEOUT_S = 60.0


def e2e_user(component: str) -> str:
    return f"lp-{component}"


# -- the cases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """`component` without the `index`-th ACL of its list, as its own user (and application id, where it names
    resources only this case may touch)."""

    component: str
    index: int

    @property
    def user(self) -> str:
        return f"lp-{self.component}-{self.index}"

    @property
    def acl(self) -> Acl:
        return component_acls(self.component, f"User:{self.user}", self.app_id)[self.index]

    @property
    def app_id(self) -> str:
        if self.component == "processors":
            return f"lp-p{self.index}"  # its own group, changelogs and transactional ids: no member shares them
        if self.fixed_topic_create or self.component != "topics" or self.acl_at(APP_ID).operation != Operation.CREATE:
            return APP_ID
        return f"lp-t{self.index}"  # a changelog's Create: its own changelog names, missing until this case

    def acl_at(self, app_id: str) -> Acl:
        return component_acls(self.component, f"User:{self.user}", app_id)[self.index]

    @property
    def fixed_topic_create(self) -> bool:
        """The topics job's Create on a topic whose name no application id changes: the topic must be deleted for
        the case, so it runs alone."""
        acl = self.acl_at(APP_ID)
        return (
            self.component == "topics"
            and acl.operation == Operation.CREATE
            and acl.resource_name not in own_changelog_topics(APP_ID).values()
        )

    @property
    def id(self) -> str:
        acl = self.acl_at(APP_ID)
        return f"{self.component}:{acl.resource_type.value}:{acl.resource_name}:{acl.operation.value}"

    def entries(self) -> list[dict[str, str]]:
        """Its ACLs (the component's full set minus one) as `acls --format json` prints them."""
        listed: list[dict[str, str]] = json.loads(
            acls_json(acls([self.component], {self.component: f"User:{self.user}"}, self.app_id))
        )
        return listed[: self.index] + listed[self.index + 1 :]


def all_cases() -> list[Case]:
    by_component = acls(application_id=APP_ID)
    return [Case(c, i) for c, entries in by_component.items() for i in range(len(entries))]


CASES = all_cases()


# -- the broker and its principals -----------------------------------------------------------------------------


def cli_acls(app_id: str, principals: dict[str, str]) -> list[dict[str, str]]:
    flags = [f"--principal={c}=User:{user}" for c, user in principals.items()]
    out = subprocess.run(
        [CLI, "acls", "--format", "json", "--application-id", app_id, *flags],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    loaded: list[dict[str, str]] = json.loads(out.stdout)
    return loaded


def declared_topics(app_id: str) -> list[NewTopic]:
    """The topics `topics create` makes for `app_id`, as the super user creates them (one broker)."""
    return [
        NewTopic(spec.name, spec.partitions, spec.durability(1)[0], config=spec.declared_config(1))
        for spec in all_topics(TopicSettings(processor_application_id=app_id))
    ]


def create_topics(broker: SecureBroker, topics: list[NewTopic]) -> None:
    if topics:
        for future in broker.admin_client().create_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)


@dataclass
class World:
    """The secured broker with every principal of this module and its ACLs."""

    broker: SecureBroker
    directory: Path
    gateway_pair: tuple[Path, Path]
    extra: dict[str, Any] = field(default_factory=dict)

    def env(self, user: str, **extra: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "PROCESSOR_", "GATEWAY_", "TOPICS_", "SCHEMA_"))
        }
        return {
            **base,
            **self.broker.env("sasl_ssl", user),
            "KAFKA_REQUEST_TIMEOUT_MS": "10000",
            "PROCESSOR_APPLICATION_ID": APP_ID,
            **extra,
        }


@pytest.fixture(scope="module")
def world(secure_kafka: SecureBroker, tmp_path_factory: pytest.TempPathFactory) -> World:
    """One SCRAM user per component (the end-to-end run) and one per removal case, each with its ACLs; the
    topics, created by the topics job as its own user; the processors cases' changelogs (their own names)."""
    directory = tmp_path_factory.mktemp("least-privilege")
    cert, key = directory / "gw.crt", directory / "gw.key"
    ensure_self_signed(cert, key)
    world = World(secure_kafka, directory, (cert, key))
    e2e = {c: e2e_user(c) for c in COMPONENTS}
    secure_kafka.add_scram_users([*e2e.values(), *(case.user for case in CASES)])
    printed = cli_acls(APP_ID, e2e)
    assert printed == json.loads(acls_json(acls(COMPONENTS, {c: f"User:{u}" for c, u in e2e.items()}, APP_ID)))
    entries = printed + [entry for case in CASES for entry in case.entries()]
    admin = secure_kafka.admin_client()
    for future in admin.create_acls([acl_binding(e) for e in entries]).values():
        future.result(timeout=60)
    time.sleep(1)  # the broker applies ACLs from its metadata log: a moment after the call returns
    created = run(world, e2e_user("topics"), ["topics", "create"], COMMAND_TIMEOUT_S)
    assert created.code == 0, created.output
    seed_replayable_dead_letters(secure_kafka)
    processors = [case.app_id for case in CASES if case.component == "processors"]
    changelogs = [
        t for app_id in processors for t in declared_topics(app_id) if t.topic in own_changelog_topics(app_id).values()
    ]
    create_topics(secure_kafka, changelogs)
    return world


class NeverValid(BaseModel):
    """A validation bug: a payload model that requires a field Pinwheel never sends."""

    field_pinwheel_never_sends: str


def seed_replayable_dead_letters(broker: SecureBroker) -> None:
    """One gateway dead letter per family topic that today's validation accepts (dead-lettered under a validation
    bug, as tests/operate/test_deadletters.py makes them): `deadletter replay` writes each family topic."""
    codec = build_codec(SchemaSettings())
    now = datetime.now(UTC)
    family = {topic: body for topic, body in bodies().items() if topic in catalog.FAMILY_TOPICS.values()}
    bug = dict.fromkeys((json.loads(body)["event"] for body in family.values()), NeverValid)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schemas.envelope, "PAYLOAD_MODELS", {**schemas.envelope.PAYLOAD_MODELS, **bug})
        planned = [
            records.plan_record(body.encode(), request_headers={}, webhook_id=None, pinwheel_version="2023-11-22",
                         sent_at=now, received_at=now, codec=codec)
            for body in family.values()
        ]  # fmt: skip
    assert all(p.route is records.Route.DEAD_LETTER for p in planned), [p.route for p in planned]
    producer = Producer(broker.confluent_config("sasl_ssl"))
    for p in planned:
        producer.produce(p.record.topic, p.record.value, key=p.record.key, headers=list(p.record.headers))
    assert producer.flush(30) == 0


# -- running the components ---------------------------------------------------------------------------------


@dataclass
class Run:
    code: int | None  # None: still running when the time was up (a hang), or a service we stopped
    seconds: float
    output: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def last_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def __str__(self) -> str:
        return f"exit {self.code} after {self.seconds}s: {self.last_line}"


def run(world: World, user: str, args: list[str], timeout_s: float, **extra: str) -> Run:
    """`pinwheel-connector *args` as `user`, synchronously (the set-up and the end-to-end run)."""
    return asyncio.run(arun(world.env(user, **extra), args, timeout_s))


async def arun(env: dict[str, str], args: list[str], timeout_s: float) -> Run:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        code: int | None = process.returncode
    except TimeoutError:
        process.terminate()
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 20)
        except TimeoutError:
            process.kill()
            out, _ = await process.communicate()
        code = None
    return Run(code, round(time.monotonic() - started, 1), out.decode(errors="replace"))


class Gateway:
    """`pinwheel-connector gateway` as a user; signed webhooks to it and its /readyz (admin listener)."""

    def __init__(self, world: World, user: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log = world.directory / f"gateway-{self.port}.log"
        cert, key = world.gateway_pair
        self.env = world.env(
            user, GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(self.port), GATEWAY_ADMIN_PORT=str(self.admin_port),
            GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key), GATEWAY_SECRETS=SECRET,
            GATEWAY_SPOOL_DIR=str(world.directory / f"spool-{self.port}"), GATEWAY_PUBLISH_TIMEOUT_S="5",
        )  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None
        self.http = httpx.AsyncClient(verify=False, timeout=20)  # noqa: S501  (our own self-signed loopback gateway)

    async def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                CLI, "gateway", env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.process.returncode is None, self.output()
            try:
                if (await self.http.get(f"https://127.0.0.1:{self.port}/livez")).status_code == 200:
                    return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"gateway did not come up: {self.output()}")

    async def post(self, body: str) -> httpx.Response:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json", "Pinwheel-Version": "2023-11-22", "X-Timestamp": str(ts),
            "X-Pinwheel-Signature": sign(SECRET.encode(), ts, body.encode()),
        }  # fmt: skip
        return await self.http.post(f"https://127.0.0.1:{self.port}/webhooks/pinwheel", content=body, headers=headers)

    async def readyz(self) -> dict[str, Any]:
        ready: dict[str, Any] = (await self.http.get(f"http://127.0.0.1:{self.admin_port}/readyz")).json()
        return ready

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self) -> int | None:
        await self.http.aclose()
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


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


async def feed(world: World) -> dict[str, str]:
    """Post one webhook per topic the gateway writes, through a gateway with every ACL: topic -> event id."""
    gateway = Gateway(world, e2e_user("gateway"))
    await gateway.start()
    try:
        sent = bodies()
        for topic, body in sent.items():
            response = await gateway.post(body)
            assert response.status_code == 200, (topic, response.text, gateway.output()[-2000:])
        ready = await checked_readiness(gateway.readyz)
    finally:
        await gateway.stop()
    world.extra["ready"] = ready
    return {topic: json.loads(body)["event_id"] for topic, body in sent.items()}


async def checked_readiness(readyz: Callable[[], Awaitable[dict[str, Any]]], timeout_s: float = 30) -> dict[str, Any]:
    """/readyz once the min-ISR watch has checked (or, should it never, the last answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ready = await readyz()
        except httpx.HTTPError:
            ready = {}
        if "exited" in ready or ("min_isr" in ready and "not checked yet" not in ready.get("min_isr_reason", "")):
            return ready
        if time.monotonic() > deadline:
            return ready
        await asyncio.sleep(0.3)


def read_all(broker: SecureBroker, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every committed record of `topic`, read as the super user."""
    consumer = Consumer({**broker.confluent_config("sasl_ssl"), "group.id": f"lp-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})  # fmt: skip
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


# -- the pipeline, end to end -------------------------------------------------------------------------------


def test_the_pipeline_runs_end_to_end_with_only_the_printed_acls(world: World) -> None:
    assert (checked := run(world, e2e_user("topics"), ["topics", "check"], COMMAND_TIMEOUT_S)).code == 0, checked
    posted = asyncio.run(feed(world))
    assert world.extra["ready"]["min_isr"] == "ok", world.extra["ready"]
    assert world.extra["ready"]["kafka_refusals"] == {}, world.extra["ready"]

    state = world.directory / "e2e-state"
    processor = subprocess.Popen(
        [CLI, "processor"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=world.env(e2e_user("processors"), PROCESSOR_STATE_DIR=str(state), PROCESSOR_HEALTH_PORT=str(free_port())),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        updated: set[str] = set()
        accounts = {event_id for topic, event_id in posted.items() if topic != catalog.DEADLETTER_TOPIC}
        while time.monotonic() < deadline and not accounts <= updated:
            assert processor.poll() is None, "the processor exited"
            updated = event_ids(read_all(world.broker, catalog.ACCOUNT_UPDATES_TOPIC)) & accounts
            time.sleep(1)
        assert accounts <= updated, f"no account update for {[t for t, e in posted.items() if e not in updated]}"
    finally:
        processor.terminate()
        processor.wait(30)

    tailed = run(world, e2e_user("tail"), ["tail", "updates", "--from-beginning", "--max", "1", "--idle-timeout", "5"],
                 COMMAND_TIMEOUT_S)  # fmt: skip
    assert tailed.code == 0, tailed.output
    ledger = world.directory / "empty-ledger.jsonl"
    ledger.touch()
    verified = run(world, e2e_user("verify"), ["verify", "--ledger", str(ledger), "--wait", "1"], COMMAND_TIMEOUT_S)
    assert verified.code == 0, verified.output
    listed = run(world, e2e_user("deadletter-list"), ["deadletter", "list", "--json"], COMMAND_TIMEOUT_S)
    assert listed.code == 0, listed.output
    refs = [json.loads(line)["ref"] for line in listed.output.splitlines() if line.startswith("{")]
    assert refs, listed.output
    shown = run(world, e2e_user("deadletter-show"), ["deadletter", "show", refs[0]], COMMAND_TIMEOUT_S)
    assert shown.code == 0, shown.output
    replayed = run(world, e2e_user("deadletter-replay"), ["deadletter", "replay", "--no-progress"], COMMAND_TIMEOUT_S)
    assert replayed.code == 0, replayed.output
    reset = run(
        world, e2e_user("processor-reset"), ["processor", "reset", "--yes"], 120, PROCESSOR_STATE_DIR=str(state)
    )
    assert reset.code == 0, reset.output


# -- every ACL is needed ---------------------------------------------------------------------------------------


async def run_case(world: World, case: Case) -> Run:
    """The quickest run of `case.component` that needs the ACL the case removed."""
    acl = case.acl
    env = world.env(case.user, PROCESSOR_APPLICATION_ID=case.app_id)
    op = acl.operation
    if case.component == "topics":
        return await arun(env, ["topics", "create" if op == Operation.CREATE else "check"], COMMAND_TIMEOUT_S)
    if case.component == "gateway":
        return await gateway_case(world, case)
    if case.component == "processors":
        return await processor_case(world, case, env)
    if case.component == "tail":
        args = ["tail", acl.resource_name, "--from-beginning", "--max", "1", "--idle-timeout", "5"]
        return await arun(env, args, COMMAND_TIMEOUT_S)
    if case.component == "verify":  # an empty ledger: it reads the updates all the same
        ledger = world.directory / "empty-ledger.jsonl"
        ledger.touch()
        return await arun(env, ["verify", "--ledger", str(ledger), "--wait", "1"], COMMAND_TIMEOUT_S)
    if case.component == "deadletter-list":
        return await arun(env, ["deadletter", "list"], COMMAND_TIMEOUT_S)
    if case.component == "deadletter-show":
        return await arun(env, ["deadletter", "show", "0:0"], COMMAND_TIMEOUT_S)
    if case.component == "deadletter-replay":
        return await arun(env, ["deadletter", "replay", "--no-progress"], COMMAND_TIMEOUT_S)
    assert case.component == "processor-reset", case
    state = str(world.directory / f"reset-{case.index}")
    return await arun(env | {"PROCESSOR_STATE_DIR": state}, ["processor", "reset", "--yes"], COMMAND_TIMEOUT_S)


async def gateway_case(world: World, case: Case) -> Run:
    started = time.monotonic()
    gateway = Gateway(world, case.user)
    await gateway.start()
    details: dict[str, Any] = {}
    try:
        if case.acl.operation == Operation.WRITE:
            response = await gateway.post(bodies()[case.acl.resource_name])
            details["status"] = response.status_code
            details["response"] = response.text
            details["ready"] = await gateway.readyz()
        else:  # DescribeConfigs: the min-ISR watch's first check
            details["ready"] = await checked_readiness(gateway.readyz)
    finally:
        code = await gateway.stop()
    return Run(code, round(time.monotonic() - started, 1), gateway.output(), details)


async def processor_case(world: World, case: Case, env: dict[str, str]) -> Run:
    state = str(world.directory / f"state-{case.index}")
    if case.acl.operation != Operation.DESCRIBE_CONFIGS:
        return await arun(env | {"PROCESSOR_STATE_DIR": state, "PROCESSOR_HEALTH_PORT": "0"}, ["processor"],
                          PROCESSOR_TIMEOUT_S)  # fmt: skip
    # DescribeConfigs: only the min-ISR watch of /readyz needs it; the processor runs on, /readyz says why.
    port = free_port()
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        CLI, "processor", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env | {"PROCESSOR_STATE_DIR": state, "PROCESSOR_HEALTH_PORT": str(port)},
    )  # fmt: skip
    details: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=5) as http:

        async def readyz() -> dict[str, Any]:
            if process.returncode is not None:
                return {"exited": process.returncode}
            ready: dict[str, Any] = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
            return ready

        details["ready"] = await checked_readiness(readyz, PROCESSOR_TIMEOUT_S)
    if process.returncode is None:
        process.terminate()
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return Run(process.returncode, round(time.monotonic() - started, 1), out.decode(errors="replace"), details)


async def recreated(world: World, name: str) -> None:
    """Delete the topic `name` (as the super user) and wait until the broker no longer lists it."""
    admin = world.broker.admin_client()
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=60)
    deadline = time.monotonic() + 30
    while name in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{name} still listed 30 s after its deletion"
        await asyncio.sleep(0.2)


async def run_all(world: World, cases: list[Case]) -> dict[str, Run]:
    await feed(world)  # input for the processors cases: each reads it from the start in its own group
    slots = asyncio.Semaphore(CONCURRENCY)

    async def bounded(case: Case) -> tuple[str, Run]:
        async with slots:
            return case.id, await run_case(world, case)

    together = [case for case in cases if not case.fixed_topic_create]
    results = dict(await asyncio.gather(*(bounded(case) for case in together)))
    # The topics job's Create on a fixed-name topic: that topic deleted, `topics create` run, the topic made anew.
    declared = {topic.topic: topic for topic in declared_topics(APP_ID)}
    for case in cases:
        if case.fixed_topic_create:
            await recreated(world, case.acl.resource_name)
            try:
                results[case.id] = await run_case(world, case)
            finally:
                create_topics(world.broker, [declared[case.acl.resource_name]])
    return results


@pytest.fixture(scope="module")
def outcomes(world: World, request: pytest.FixtureRequest) -> dict[str, Run]:
    """Every selected removal case's run (all at once, CONCURRENCY at a time), keyed by the case's id."""
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if hasattr(item, "callspec") and "case" in item.callspec.params
    }
    started = time.monotonic()
    results = asyncio.run(run_all(world, [case for case in CASES if case in selected]))
    slowest = sorted(results.items(), key=lambda item: -item[1].seconds)[:5]
    print(f"\n[least privilege] {len(results)} removal cases in {time.monotonic() - started:.0f} s; the slowest: "
          + ", ".join(f"{name} {run.seconds:g} s" for name, run in slowest), file=sys.stderr)  # fmt: skip
    return results


def expected_name(case: Case) -> str:
    """The resource the failure must name (a transactional id starts with the granted prefix)."""
    return case.acl.resource_name


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_without_any_one_acl_the_component_fails_clearly(case: Case, outcomes: dict[str, Run]) -> None:
    failure = outcomes[case.id]
    print(f"{case.id}: {failure}")
    whole = failure.output + json.dumps(failure.details)
    assert "Traceback" not in whole, whole[-3000:]
    assert "Unclosed" not in whole, whole[-3000:]
    name = expected_name(case)
    if case.acl.operation == Operation.DESCRIBE_CONFIGS and case.component in ("gateway", "processors"):
        ready = failure.details.get("ready", {})
        assert ready.get("min_isr") == "unknown", (ready, failure.output[-3000:])
        assert NOT_AUTHORIZED.search(ready["min_isr_reason"]), ready
        assert name in ready["min_isr_reason"], ready
        return
    if case.component == "gateway":  # Write: that webhook 503, a logged reason, /readyz naming the refusal
        assert failure.details["status"] == 503, failure.details
        logged = [line for line in failure.output.splitlines() if NOT_AUTHORIZED.search(line) and name in line]
        assert logged, failure.output[-3000:]
        refusals = failure.details["ready"].get("kafka_refusals", {})
        assert NOT_AUTHORIZED.search(refusals.get(name, "")), failure.details["ready"]
        return
    assert failure.code is not None, f"still running after {failure.seconds}s: {failure.output[-3000:]}"
    assert failure.code == 2, failure.output[-3000:]
    assert NOT_AUTHORIZED.search(failure.last_line), failure.output[-3000:]
    assert name in failure.last_line, failure.output[-3000:]
