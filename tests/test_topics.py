"""Topics as code against the real broker: idempotent creation and loud mismatches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from connector.settings import KafkaSettings
from connector.topics import TopicMismatchError, TopicSpec, all_topics, check_copartitioning, ensure_topics


@pytest.fixture
async def cleanup(bootstrap: str) -> AsyncIterator[list[str]]:
    names: list[str] = []
    yield names
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if doomed := [n for n in names if n in existing]:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def _specs(unique: Callable[[str], str], partitions: tuple[int, int] = (3, 3)) -> list[TopicSpec]:
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(unique("family-a"), partitions[0], {"cleanup.policy": "delete", "retention.ms": "86400000"}, "g"),
        TopicSpec(unique("changelog-a"), partitions[1], compact, "g"),
    ]


async def test_creation_is_idempotent(bootstrap: str, unique: Callable[[str], str], cleanup: list[str]) -> None:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    specs = _specs(unique)
    cleanup.extend(s.name for s in specs)
    first = await ensure_topics(settings, specs)
    assert sorted(first) == sorted(f"created {s.name} ({s.partitions} partitions)" for s in specs)
    second = await ensure_topics(settings, specs)
    assert sorted(second) == sorted(f"ok {s.name}" for s in specs)
    assert await ensure_topics(settings, specs, create=False) == second


async def test_partition_count_mismatch_is_refused(
    bootstrap: str, unique: Callable[[str], str], cleanup: list[str]
) -> None:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    specs = _specs(unique)
    cleanup.extend(s.name for s in specs)
    # Someone created the changelog by hand with another partition count.
    await ensure_topics(settings, [TopicSpec(specs[1].name, 2, specs[1].config, "g")])
    with pytest.raises(TopicMismatchError) as error:
        await ensure_topics(settings, specs)
    message = str(error.value)
    assert f"{specs[1].name}: 2 partitions, declared 3" in message
    assert "must be co-partitioned" in message
    assert f"{specs[1].name}=2" in message
    assert f"{specs[0].name}=3" in message


async def test_config_mismatch_is_refused(bootstrap: str, unique: Callable[[str], str], cleanup: list[str]) -> None:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    spec = TopicSpec(unique("state"), 1, {"cleanup.policy": "compact"})
    cleanup.append(spec.name)
    await ensure_topics(settings, [TopicSpec(spec.name, 1, {"cleanup.policy": "delete"})])
    with pytest.raises(TopicMismatchError, match=r"cleanup.policy=delete, declared compact"):
        await ensure_topics(settings, [spec])


async def test_check_only_reports_missing_topics(bootstrap: str, unique: Callable[[str], str]) -> None:
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    with pytest.raises(TopicMismatchError, match="topics are missing"):
        await ensure_topics(settings, _specs(unique), create=False)


def test_copartitioning_groups_checked_before_creation() -> None:
    specs = [
        TopicSpec("a", 6, copartition_group="g"),
        TopicSpec("b", 4, copartition_group="g"),
        TopicSpec("c", 1),
    ]
    assert check_copartitioning(specs, {}) != []
    assert check_copartitioning(specs, {"b": 6}) == []


def test_declared_topics_are_consistent() -> None:
    specs = all_topics()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert check_copartitioning(specs, {}) == []
    assert {"pinwheel.account.v1", "pinwheel.other.v1", "pinwheel.account_updates.v1"} <= set(names)
    state = next(s for s in specs if s.name == "pinwheel.account_state.v1")
    assert state.config["cleanup.policy"] == "compact"
