"""The state stores are declared once (`processors.logic.stores.STORES`): everything that names a store or its
changelog is derived from that declaration, and no other module spells a store name."""

from __future__ import annotations

import ast
import dataclasses
import re
import struct
from pathlib import Path

import pytest

from common.kafka_access import TopicOp
from common.settings import KafkaSettings
from common.topics import TopicSettings
from operate.acls import Operation, component_acls
from operate.reset import SHARED_CHANGELOGS, _changelog_specs
from processors.logic.account_table import AccountState
from processors.logic.codec import INT_SERDE
from processors.logic.join import JobState
from processors.logic.stores import (
    LOCAL_STORE_NAMES,
    LOGGED_STORE_NAMES,
    STORE_NAMES,
    STORES,
    InMemoryStore,
    Stores,
    StoreSpec,
    in_memory_stores,
)
from processors.pipeline import CachedStoreView, PipelineCounters, StoreView, pipeline_task_state, task_stores
from processors.service import build_engine, topic_needs
from processors.settings import ProcessorSettings
from processors.topics import all_topics, changelog_topics, own_changelog_topics
from schemas.settings import SchemaSettings

ROOT = Path(__file__).resolve().parents[2]
APP = "app-x"
# The expected names spelled out once here: the derived lists must be exactly these, in this order.
NAMES = ("dedupe", "jobs", "accounts", "timers")
LOGGED = ("dedupe", "jobs", "accounts")  # the timers are derived on restore: no changelog
OWN = ("dedupe",)  # the accounts' and the jobs' changelog is the contract's state topic
CHANGELOGS = [f"{APP}-{name}-log" for name in OWN]  # the dedupe store's: expiring, a log kept by time
STATE_TOPIC = "pinwheel.account_state.v1"
RESTORED_FROM = dict(zip(LOGGED, [*CHANGELOGS, STATE_TOPIC, STATE_TOPIC], strict=True))


def test_the_declaration_is_the_four_stores_and_the_typed_stores_follow_it() -> None:
    assert STORE_NAMES == NAMES
    assert tuple(f.name for f in dataclasses.fields(Stores)) == STORE_NAMES
    assert [spec.name for spec in STORES if spec.ordered] == ["timers"]
    assert [spec.name for spec in STORES if spec.cached] == ["jobs", "accounts"]
    assert [spec.name for spec in STORES if not spec.logged] == ["timers"]
    assert (LOGGED_STORE_NAMES, LOCAL_STORE_NAMES) == (LOGGED, ("timers",))


def test_a_store_cannot_be_both_cached_and_ordered() -> None:
    with pytest.raises(ValueError, match="cached store cannot be iterated in order"):
        StoreSpec("x", STORES[0].serde, cached=True, ordered=True)


def test_stores_of_refuses_a_missing_or_unknown_store() -> None:
    stores = {name: InMemoryStore[object]() for name in STORE_NAMES}
    with pytest.raises(ValueError, match="expected the stores"):
        Stores.of({**stores, "extra": InMemoryStore[object]()})
    del stores["timers"]
    with pytest.raises(ValueError, match="expected the stores"):
        Stores.of(stores)


class _NoRange:
    """A store with get/put/delete only: not an ordered one."""

    def get(self, key: str) -> object | None:
        return None

    def put(self, key: str, value: object) -> None:
        pass

    def delete(self, key: str) -> None:
        pass


def test_stores_of_refuses_an_ordered_store_without_range() -> None:
    stores: dict[str, object] = {name: InMemoryStore[object]() for name in STORE_NAMES}
    ordered = [spec.name for spec in STORES if spec.ordered]
    plain = {name: _NoRange() for name in STORE_NAMES if name not in ordered}
    accepted = Stores.of({**stores, **plain})  # an unordered store needs no range
    assert all(getattr(accepted, name) is store for name, store in plain.items())
    with pytest.raises(TypeError, match=re.escape(f"the stores {ordered} are declared ordered but have no range")):
        Stores.of({**stores, **{name: _NoRange() for name in ordered}})


SAMPLES: dict[str, object] = {
    "dedupe": 1_767_225_600_000_000,
    "jobs": {"income.added": JobState(closed_through_us=5)},
    "accounts": AccountState("acc-1", platform_name="Acme"),
    "timers": 7,
}


def test_serialized_in_memory_stores_keep_each_value_in_its_specs_serde() -> None:
    stores = in_memory_stores(serialized=True)
    for spec in STORES:
        store = getattr(stores, spec.name)
        assert isinstance(store, InMemoryStore)
        sample = SAMPLES[spec.name]
        store.put("k", sample)
        assert store.get("k") == sample
        if spec.serde is INT_SERDE:  # 8 bytes: a value that does not fit is refused on put
            with pytest.raises(struct.error):
                store.put("big", 2**63)
        else:  # kept as bytes: every read decodes a fresh value
            assert store.get("k") is not sample


def test_the_task_views_are_one_per_spec_over_the_runtime_state(tmp_path: Path) -> None:
    state = pipeline_task_state(tmp_path, APP, 0)
    try:
        stores, cached = task_stores(state)
        for spec in STORES:
            view = getattr(stores, spec.name)
            assert isinstance(view, StoreView)
            assert isinstance(view, CachedStoreView) is spec.cached
        assert sorted(cached, key=id) == sorted((getattr(stores, s.name) for s in STORES if s.cached), key=id)
        stores.timers.put("0001|d|e", 7)  # an uncached view writes through to the spec's store, in its serde
        assert state.get("timers", b"0001|d|e") == STORES[STORE_NAMES.index("timers")].serde.to_bytes(7)
        assert [key for key, _ in stores.timers.range("0", "1")] == ["0001|d|e"]
    finally:
        state.close()


def test_every_changelog_list_is_the_one_derived_from_the_stores() -> None:
    assert changelog_topics(APP) == RESTORED_FROM
    assert own_changelog_topics(APP) == dict(zip(OWN, CHANGELOGS, strict=True))
    specs = all_topics(TopicSettings(processor_application_id=APP))
    changelog_specs = [spec for spec in specs if spec.name.startswith(f"{APP}-")]
    assert [spec.name for spec in changelog_specs] == CHANGELOGS  # provisioned: the state topic is not one
    assert [spec.name for spec in specs].count(STATE_TOPIC) == 1  # provisioned once, as a contract topic
    assert all(spec.config["cleanup.policy"] == "delete" for spec in changelog_specs)  # kept by time
    assert all(spec.config["retention.ms"] == str(30 * 24 * 3_600_000) for spec in changelog_specs)
    settings = ProcessorSettings(application_id=APP)
    needs = topic_needs(settings)
    assert [name for name in needs if name.startswith(f"{APP}-")] == CHANGELOGS
    assert set(needs[STATE_TOPIC]) == {TopicOp.READ, TopicOp.WRITE}  # written as an output, read by the restore
    engine = build_engine(settings, KafkaSettings(), SchemaSettings(), PipelineCounters())
    assert engine.changelogs == RESTORED_FROM  # what restore reads and tasks (or, the state, the pipeline) write
    assert engine.output_logged == ("jobs", "accounts")  # written by the pipeline, restored through its codec
    assert engine.local_stores == ("timers",)  # what restore derives
    assert engine.expiring == ("dedupe",)  # logged one record per transaction, deletes kept local
    assert [spec.name for spec in _changelog_specs(APP, 3)] == CHANGELOGS  # what `processor reset` recreates
    assert SHARED_CHANGELOGS == (STATE_TOPIC,)  # what `processor reset` writes tombstones to, never deletes
    acls = component_acls("processors", "User:p", APP)
    granted = {acl.resource_name for acl in acls}
    own = {name for name in granted if name.endswith(("-changelog", "-log"))}
    assert own == set(CHANGELOGS)  # the processors' ACLs
    assert {acl.operation for acl in acls if acl.resource_name == STATE_TOPIC} == {
        Operation.READ,
        Operation.WRITE,
        Operation.DESCRIBE_CONFIGS,
    }


def test_a_store_cannot_name_a_changelog_and_be_unlogged() -> None:
    with pytest.raises(ValueError, match="unlogged store has no changelog"):
        StoreSpec("x", STORES[0].serde, logged=False, changelog=STATE_TOPIC)


def test_a_changelog_header_needs_the_topic_it_rides_on() -> None:
    with pytest.raises(ValueError, match="changelog header needs the topic it rides on"):
        StoreSpec("x", STORES[0].serde, changelog_header="h")


# A store name as a string literal outside its declaration, with why it is not one: (path, literal) -> reason.
NOT_STORE_NAMES = {
    ("processors/logic/account_table.py", "jobs"): "the AccountState field",
    ("processors/logic/codec.py", "jobs"): "the AccountState field",
    ("processors/wire.py", "jobs"): "the AccountState Avro field",
    ("simulator/commands.py", "accounts"): "the simulator's --accounts option",
    ("simulator/simulate.py", "accounts"): "the simulator's account count in its summary",
    ("connector/run.py", "accounts"): "the demo's --accounts option",
    ("bench/processor_bench.py", "dedupe"): "a RocksDB micro-benchmark of one store of its own",
    ("bench/restore_bench.py", "dedupe"): "a restore benchmark of a changelog of its own",
}
PACKAGES = ("common", "schemas", "gateway", "processors", "simulator", "operate", "connector", "bench", "chaos")
DECLARATION = "processors/logic/stores.py"


def _literals(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if value in NAMES or any(value.endswith((f"-{name}-changelog", f"-{name}-log")) for name in NAMES):
                found.add(value)
    return found


def test_no_module_but_the_declaration_spells_a_store_name() -> None:
    spelled = {
        (path.relative_to(ROOT).as_posix(), literal)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.relative_to(ROOT).as_posix() != DECLARATION
        for literal in _literals(path)
    }
    assert spelled - NOT_STORE_NAMES.keys() == set()
    assert _literals(ROOT / DECLARATION) == set(NAMES)
