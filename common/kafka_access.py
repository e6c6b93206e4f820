"""What the cluster lets this principal do with topics, asked before acting: one line naming what is refused.

On a cluster with an authorizer, a topic the principal may not describe is simply absent from a metadata
listing: "topic missing" would send the operator the wrong way. Per-topic error codes tell the two apart
(UNKNOWN_TOPIC_OR_PARTITION: missing; TOPIC_AUTHORIZATION_FAILED: not authorized), and a Metadata v8 request
with `include_topic_authorized_operations` says which operations the principal holds on each topic (Read,
Write, Delete, DescribeConfigs...), so a command that would delete, read or write checks all of it before it
changes anything. aiokafka stops at Metadata v5, so v8 is spelled here (non-flexible; its fields per the
Kafka protocol); a broker without it (< 2.3) gets v5 and no operations: then only Describe is checked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from common.kafka_errors import KafkaMisconfigured
from common.settings import KafkaSettings

UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
ACL_HINT = "grant the principal the ACLs `pinwheel-connector acls` prints (docs/operations.md)"


class TopicOp(enum.IntEnum):
    """Kafka's AclOperation codes: bit `code` of `topic_authorized_operations` is set when allowed."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10

    @property
    def tool_name(self) -> str:
        """As `kafka-acls --operation` spells it: DESCRIBE_CONFIGS -> DescribeConfigs."""
        return "".join(part.capitalize() for part in self.name.split("_"))


class _MetadataResponse_v8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequest_v8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponse_v8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _AuthorizedTopicsRequest(Request[_MetadataRequest_v8]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[_MetadataRequest_v8]) -> _MetadataRequest_v8:
        return request_struct_class(self.topics, False, False, True)


@dataclass(frozen=True)
class TopicAccess:
    """One topic as this principal sees it."""

    name: str
    error_code: int  # 0, UNKNOWN_TOPIC_OR_PARTITION (missing), TOPIC_AUTHORIZATION_FAILED (may not describe)...
    partitions: int
    operations: frozenset[TopicOp] | None  # None: the broker did not say (no Metadata v8)

    @property
    def missing(self) -> bool:
        return self.error_code == UNKNOWN_TOPIC_OR_PARTITION

    @property
    def hidden(self) -> bool:
        """Not authorized to describe: whether it exists is not ours to know."""
        return self.error_code == TOPIC_AUTHORIZATION_FAILED

    def allows(self, operation: TopicOp) -> bool:
        return self.operations is None or operation in self.operations


_IMPLY_DESCRIBE = frozenset({TopicOp.READ, TopicOp.WRITE, TopicOp.DELETE})


def _operations(bits: int) -> frozenset[TopicOp] | None:
    if bits == -(2**31):  # "not requested" / not computed
        return None
    return frozenset(op for op in TopicOp if bits & (1 << op.value))


def parse_access(topics: Iterable[Mapping[str, Any]]) -> dict[str, TopicAccess]:
    """Metadata response topics (`to_object()` form) -> name -> TopicAccess."""
    return {
        t["topic"]: TopicAccess(
            t["topic"],
            t["error_code"],
            len(t["partitions"]),
            _operations(t["topic_authorized_operations"]) if "topic_authorized_operations" in t else None,
        )
        for t in topics
    }


async def topic_access(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, TopicAccess]:
    """Each of `names` as the principal sees it (Metadata v8, or v5 without operations on an older broker)."""
    try:
        response = await admin._send_request(_AuthorizedTopicsRequest(list(names)))
    except NotImplementedError:  # no v8 on this broker
        return parse_access(await admin.describe_topics(list(names)))
    topics: list[dict[str, Any]] = response.to_object()["topics"]
    return parse_access(topics)


def not_authorized(operation: str, kind: str, names: Iterable[str]) -> KafkaMisconfigured:
    """The one-line refusal: `kafka: not authorized to <operation> <kind> <names> (grant ...)`."""
    listed = ", ".join(sorted(names))
    return KafkaMisconfigured(f"kafka: not authorized to {operation} {kind} {listed}: {ACL_HINT}")


def require(access: Mapping[str, TopicAccess], needs: Mapping[str, Iterable[TopicOp]]) -> list[str]:
    """Raise KafkaMisconfigured naming the first operation refused on some topic of `needs` (topic -> the
    operations it takes); return the topics that do not exist (the caller says what to do about them)."""
    for name, operations in needs.items():
        if access[name].hidden:  # named by what the caller needs: Read, Write and Delete imply Describe
            implying = [op for op in operations if op in _IMPLY_DESCRIBE] or [TopicOp.DESCRIBE]
            raise not_authorized("/".join(op.tool_name for op in implying), "topic", [name])
    refused: dict[TopicOp, list[str]] = {}
    for name, operations in needs.items():
        if access[name].error_code == 0:
            for op in operations:
                if not access[name].allows(op):
                    refused.setdefault(op, []).append(name)
    for op, names in sorted(refused.items()):
        raise not_authorized(op.tool_name, "topic" if len(names) == 1 else "topics", names)
    return [name for name in needs if access[name].missing]


async def check_topics(admin: AIOKafkaAdminClient, needs: Mapping[str, Iterable[TopicOp]]) -> list[str]:
    """`require` over a fresh `topic_access` of the topics of `needs`."""
    return require(await topic_access(admin, list(needs)), needs)


async def check_topics_of(kafka: KafkaSettings, needs: Mapping[str, Iterable[TopicOp]], purpose: str) -> list[str]:
    """`check_topics` with an admin client of its own (client id `<prefix>-<purpose>`), closed after."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id_prefix}-{purpose}")
    try:
        await admin.start()
        return await check_topics(admin, needs)
    finally:
        await admin.close()
