"""Shared fixtures: the real broker for this test session (one for all the xdist workers of a run:
tests/shared_session.py), and per-test unique topics."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.settings import KafkaSettings
from common.topics import ensure_topics
from connector.local_kafka import LocalKafka, LocalKafkaSettings
from connector.local_registry import LocalRegistry, LocalRegistrySettings
from processors.service import hot_path_compiled
from processors.topics import all_topics
from schemas.catalog import ACCOUNT_STATE_TOPIC
from simulator.traffic import load_capture
from tests import xdist_groups
from tests.kafka_broker import Broker, select_broker
from tests.schema_registry import Registry, select_registry
from tests.secure_kafka import SecureBroker, secure_broker
from tests.shared_session import finish_owned, shared, shared_root

_USED: list[str] = []  # the summary's lines naming the broker and registry the run used (from every worker)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The real Kafka broker (see tests/kafka_broker.py for how it is chosen), one for all the workers of a run."""
    root = shared_root(tmp_path_factory.getbasetemp())
    with shared("kafka", root, select_broker, _dump_broker, _load_broker) as broker:
        print(f"\n[tests] Kafka {broker.version} ({_kind(broker)}) at {broker.bootstrap}", file=sys.stderr)
        _USED.append(f"Kafka broker: Apache Kafka {broker.version} ({_kind(broker)}) at {broker.bootstrap}")
        yield broker


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureBroker]:
    """A secured local broker (TLS, SCRAM, PLAIN, mTLS, OAUTHBEARER, ACLs enforced): see tests/secure_kafka.py."""
    with secure_broker() as broker:
        print(
            f"\n[tests] secured Kafka {broker.local.settings.version} at {broker.sasl_ssl_bootstrap}", file=sys.stderr
        )
        yield broker


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The real schema registry (see tests/schema_registry.py for how it is chosen), one for all the workers."""
    root = shared_root(tmp_path_factory.getbasetemp())
    with shared("registry", root, select_registry, _dump_registry, _load_registry) as registry:
        print(f"\n[tests] schema registry ({registry.kind}) at {registry.url}", file=sys.stderr)
        version = registry.local.settings.version if registry.local else "unknown"
        _USED.append(f"Schema registry: Apicurio Registry {version} ({registry.kind}) at {registry.url}")
        yield registry


def _dump_broker(broker: Broker) -> dict[str, Any]:
    local = broker.local.settings.model_dump(mode="json") if broker.local else None
    return {"bootstrap": broker.bootstrap, "kind": broker.kind, "version": broker.version, "image": broker.image,
            "local": local}  # fmt: skip


def _load_broker(record: dict[str, Any]) -> Broker:
    local = LocalKafka(LocalKafkaSettings(**record["local"])) if record["local"] else None
    return Broker(record["bootstrap"], record["kind"], record["version"], local=local, image=record["image"])


def _dump_registry(registry: Registry) -> dict[str, Any]:
    local = registry.local.settings.model_dump(mode="json") if registry.local else None
    return {"url": registry.url, "kind": registry.kind, "local": local}


def _load_registry(record: dict[str, Any]) -> Registry:
    local = LocalRegistry(LocalRegistrySettings(**record["local"])) if record["local"] else None
    return Registry(record["url"], record["kind"], local)


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears down what a stopped session (-x) left set up
def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker stops the broker (or registry) it started once no other worker of the run uses it, and tells the
    controller which it used (`pytest_testnodedown`)."""
    finish_owned()
    if (output := getattr(session.config, "workeroutput", None)) is not None:
        output["pinwheel_used"] = _USED


def _kind(broker: Broker) -> str:
    return f"{broker.kind}: {broker.image}" if broker.image else broker.kind


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a session broker is marked `kafka`: `-m kafka` selects the Kafka integration tests; those
    on the secured broker (always the local JVM one) also `secure`, so `make test-docker` need not run them again.

    Under xdist (`--dist loadgroup`) the tests of one group run one after the other on one worker:
    - `secure_kafka`: the tests on the secured broker (its token endpoint lives in the process that started it,
      so it is started once, not shared: tests/shared_session.py);
    - `private_broker`: the tests on the gateway tests' own broker, which they stop and start (one JVM per run);
    - `session_topics`: the tests on the session broker that use the pipeline's fixed topic names (they run a
      processor group that takes every event there, or count or replay everything written there), unless their
      module is marked `own_topics` (it names every topic, group and transactional id of its own);
    - a module's tests that share a module-scoped fixture (a built wheel, a broker of its own): set up once."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"kafka", "secure_kafka"} & fixtures:
            item.add_marker(pytest.mark.kafka)
        if "secure_kafka" in fixtures:
            item.add_marker(pytest.mark.secure)
            item.add_marker(pytest.mark.xdist_group("secure_kafka"))
        elif "private_broker_once" in fixtures:
            item.add_marker(pytest.mark.xdist_group("private_broker"))
        elif "kafka" in fixtures and item.get_closest_marker("own_topics") is None:
            item.add_marker(pytest.mark.xdist_group("session_topics"))
        elif _module_scoped(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.partition("::")[0]))
    xdist_groups.record(items)


_ROOT = Path(__file__).resolve().parents[1]
_PRODUCT = ("common", "connector", "gateway", "operate", "processors", "schemas", "simulator")


def _stale_extensions() -> list[str]:
    """mypyc's extensions (setup.py) older than their source: Python would import them, not the edited source."""
    stale = []
    for package in _PRODUCT:
        for extension in (_ROOT / package).rglob("*.so"):
            source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
            if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
                stale.append(str(source.relative_to(_ROOT)))
    return stale


def pytest_configure(config: pytest.Config) -> None:
    if stale := _stale_extensions():
        pytest.exit(f"compiled extensions older than their source ({', '.join(stale)}): run `make install`", 2)
    xdist_groups.configure(config)


def pytest_unconfigure() -> None:
    xdist_groups.unconfigure()


@pytest.hookimpl(optionalhook=True)  # xdist's controller: `--dist loadgroup` by the groups the workers recorded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return xdist_groups.GroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


def _module_scoped(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("module", "package", "class") for defs in definitions for d in defs)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which broker (and registry) the run used, so a report of 'passed on Kafka X' can be checked."""
    for line in dict.fromkeys(_USED):  # once each: the workers of a run share them
        terminalreporter.write_line(line)
    build = "compiled (mypyc, setup.py)" if hot_path_compiled() else "pure Python"
    terminalreporter.write_line(f"Processors' hot path: {build}")


@pytest.hookimpl(optionalhook=True)  # xdist's controller, as each worker ends: the lines of the workers
def pytest_testnodedown(node: Any, error: Any) -> None:
    _USED.extend(getattr(node, "workeroutput", {}).get("pinwheel_used", []))


@pytest.fixture(scope="session")
def bootstrap(kafka: Broker) -> str:
    return kafka.bootstrap


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names per test, so tests never see each other's topics, groups or transactional ids."""
    token = uuid.uuid4().hex[:10]
    return lambda base: f"test-{base}-{token}"


@pytest.fixture
async def make_topic(bootstrap: str, unique: Callable[[str], str]) -> AsyncIterator[Callable[..., Any]]:
    """Create a unique topic: `name = await make_topic("base", partitions=3, compact=False)`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(base: str, partitions: int = 1, compact: bool = False) -> str:
        name = unique(base)
        config = {"cleanup.policy": "compact"} if compact else {}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed TLS pair for the gateways of the tests."""
    from gateway.tls import ensure_self_signed

    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    assert ensure_self_signed(cert, key)
    return cert, key


@pytest.fixture(scope="session")
def capture() -> list[dict[str, Any]]:
    """The 12 real deliveries captured from Pinwheel's sandbox ({path, headers, body})."""
    return load_capture()


@pytest.fixture
async def state_topic_recreated(bootstrap: str) -> AsyncIterator[None]:
    """For a test whose processors write in the Confluent wire format: the state topic is deleted at its end and
    created again, empty, as declared. The state topic is the accounts store's changelog (processors/logic/
    stores.py), and one topic on the session's broker serves every test's processors: a later test's processor
    would restore these records, which decode only with the registry that framed them (without one it stops,
    rightly: ChangelogUnreadable). A compacted topic takes no DeleteRecords, hence the new topic."""
    yield
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([ACCOUNT_STATE_TOPIC])
        deadline = time.monotonic() + 60
        while ACCOUNT_STATE_TOPIC in await admin.list_topics():  # deletion is asynchronous in the broker
            assert time.monotonic() < deadline, f"{ACCOUNT_STATE_TOPIC} was never deleted"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    [spec] = [spec for spec in all_topics() if spec.name == ACCOUNT_STATE_TOPIC]
    while True:  # the name may be taken a little longer
        try:
            await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [spec])
            return
        except Exception:
            assert time.monotonic() < deadline, f"{ACCOUNT_STATE_TOPIC} could not be created again"
            await asyncio.sleep(0.5)
