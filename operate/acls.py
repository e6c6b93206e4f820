"""Least privilege: the exact Kafka ACLs each component needs, derived from the names the components use.

On a cluster with an authorizer and `allow.everyone.if.no.acl.found=false`, each component logs in as its own
principal and holds only the ACLs `component_acls` lists. The names come from their one home (the catalog, the
topic declarations, the processors' application id and transactional-id prefix, the topic lists the services
use), never restated, so a renamed or added topic changes the ACLs with it. `pinwheel-connector acls` prints
them as `kafka-acls` command lines or as JSON for confluent-kafka's `AclBinding`; docs/operations.md carries
`acl_table()` (tests/operate/test_acls.py keeps it current); tests/test_least_privilege.py runs every component
on an authorizing broker with these ACLs, and with each one removed.

Kafka implies Describe from Read, Write and Delete (and DescribeConfigs from AlterConfigs), so Describe is listed
only where nothing implies it. No component needs a CLUSTER ACL on Kafka >= 3.0: an idempotent producer's
InitProducerId is allowed by Write on any topic (KIP-679) as well as by IdempotentWrite on the cluster, and
listing or describing topics is a metadata request, filtered by the topics' Describe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from common.topics import TopicSettings
from operate.acls_cli import COMPONENTS as COMPONENTS  # their home is the light argparse part (the CLI lists them)
from processors.logic.stores import OUTPUT_LOGGED_TOPICS
from processors.runtime.task import transactional_id_prefix
from processors.settings import ProcessorSettings
from processors.topics import all_topics, own_changelog_topics
from schemas import catalog


class ResourceType(StrEnum):
    """Values are the member names of `confluent_kafka.admin.ResourceType`."""

    TOPIC = "TOPIC"
    GROUP = "GROUP"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"
    CLUSTER = "CLUSTER"


class PatternType(StrEnum):
    """Values are the member names of `confluent_kafka.admin.ResourcePatternType`."""

    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Operation(StrEnum):
    """Values are the member names of `confluent_kafka.admin.AclOperation`."""

    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DELETE = "DELETE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"

    @property
    def tool_name(self) -> str:
        """The spelling of `kafka-acls --operation`: READ → Read, DESCRIBE_CONFIGS → DescribeConfigs."""
        return "".join(part.capitalize() for part in self.value.split("_"))


CLUSTER_NAME = "kafka-cluster"
_TOOL_RESOURCE = {
    ResourceType.TOPIC: "--topic",
    ResourceType.GROUP: "--group",
    ResourceType.TRANSACTIONAL_ID: "--transactional-id",
    ResourceType.CLUSTER: "--cluster",
}


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: `principal` may do `operation` on the resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation
    host: str = "*"
    permission: str = "ALLOW"

    def binding(self) -> dict[str, str]:
        """The keyword arguments of `confluent_kafka.admin.AclBinding`, enums as their member names."""
        return {
            "restype": self.resource_type.value,
            "name": self.resource_name,
            "resource_pattern_type": self.pattern_type.value,
            "principal": self.principal,
            "host": self.host,
            "operation": self.operation.value,
            "permission_type": self.permission,
        }


DESCRIPTIONS: Mapping[str, str] = {
    "gateway": "`pinwheel-connector gateway`: idempotent producer of the family and dead-letter topics; its "
    "min-ISR watch reads their configuration",
    "processors": "`pinwheel-connector processor`: consumer group, transactional producers (one per partition), "
    "changelog restore, lag monitor, min-ISR watch",
    "topics": "`pinwheel-connector topics create|check`: creates the missing topics, checks every one",
    "tail": "`pinwheel-connector tail`: reads any of our topics",
    "verify": "`pinwheel-connector verify`: reads the account updates",
    "deadletter-list": "`pinwheel-connector deadletter list`: reads the dead letters",
    "deadletter-show": "`pinwheel-connector deadletter show`: reads the dead letters",
    "deadletter-replay": "`pinwheel-connector deadletter replay`: reads the dead letters, writes the family "
    "topics (idempotent producer)",
    "processor-reset": "`pinwheel-connector processor reset`: deletes and recreates the changelogs, rewinds the group",
}


def default_principal(component: str) -> str:
    return f"User:pinwheel-{component}"


def _topics(principal: str, names: Iterable[str], *operations: Operation) -> list[Acl]:
    return [
        Acl(principal, ResourceType.TOPIC, name, PatternType.LITERAL, operation)
        for name in names
        for operation in operations
    ]


def component_acls(component: str, principal: str, application_id: str) -> list[Acl]:
    """The ACLs `component` needs when it logs in as `principal` (the processors' names use `application_id`)."""
    family = list(catalog.FAMILY_TOPICS.values())
    changelogs = list(own_changelog_topics(application_id).values())
    # The output topics that are also a store's changelog (the state topic): read back by the restore, and by a
    # reset, which writes a tombstone for each of its accounts.
    output_logged = list(OUTPUT_LOGGED_TOPICS)
    group = Acl(principal, ResourceType.GROUP, application_id, PatternType.LITERAL, Operation.READ)
    match component:
        case "gateway":
            return _topics(principal, catalog.GATEWAY_TOPICS, Operation.WRITE, Operation.DESCRIBE_CONFIGS)
        case "processors":
            # Read: the group's members (and the offsets a transaction commits, and the lag monitor's OffsetFetch).
            return [
                group,
                *_topics(principal, family, Operation.READ),
                *_topics(principal, changelogs, Operation.READ, Operation.WRITE, Operation.DESCRIBE_CONFIGS),
                *_topics(principal, catalog.OUTPUT_TOPICS, Operation.WRITE, Operation.DESCRIBE_CONFIGS),
                *_topics(principal, output_logged, Operation.READ),
                Acl(
                    principal,
                    ResourceType.TRANSACTIONAL_ID,
                    transactional_id_prefix(application_id),
                    PatternType.PREFIXED,
                    Operation.WRITE,
                ),
            ]
        case "topics":
            names = [spec.name for spec in all_topics(TopicSettings(processor_application_id=application_id))]
            return _topics(principal, names, Operation.CREATE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS)
        case "tail":
            return _topics(principal, catalog.DATA_TOPICS, Operation.READ)
        case "verify":
            return _topics(principal, [catalog.ACCOUNT_UPDATES_TOPIC], Operation.READ)
        case "deadletter-list" | "deadletter-show":
            return _topics(principal, [catalog.DEADLETTER_TOPIC], Operation.READ)
        case "deadletter-replay":
            return [
                *_topics(principal, [catalog.DEADLETTER_TOPIC], Operation.READ),
                *_topics(principal, family, Operation.WRITE),
            ]
        case "processor-reset":
            # The changelogs are deleted, then created anew: a created topic's configuration is not read back.
            return [
                group,
                *_topics(principal, family, Operation.READ),
                *_topics(principal, changelogs, Operation.DELETE, Operation.CREATE),
                *_topics(principal, output_logged, Operation.READ, Operation.WRITE),
            ]
    raise ValueError(f"unknown component {component!r}: one of {', '.join(COMPONENTS)}")


def acls(
    components: Sequence[str] = COMPONENTS,
    principals: Mapping[str, str] | None = None,
    application_id: str | None = None,
) -> dict[str, list[Acl]]:
    """Component → its ACLs, for `components` (each with its principal from `principals`, else the default)."""
    app_id = application_id or ProcessorSettings.model_fields["application_id"].default
    chosen = principals or {}
    return {c: component_acls(c, chosen.get(c) or default_principal(c), app_id) for c in components}


# -- rendering ------------------------------------------------------------------------------------------


def _grouped(entries: Iterable[Acl]) -> dict[tuple[str, ResourceType, str, PatternType], list[Operation]]:
    """(principal, resource) → its operations, in the order the entries list them."""
    grouped: dict[tuple[str, ResourceType, str, PatternType], list[Operation]] = {}
    for acl in entries:
        key = (acl.principal, acl.resource_type, acl.resource_name, acl.pattern_type)
        grouped.setdefault(key, []).append(acl.operation)
    return grouped


def kafka_acls_commands(by_component: Mapping[str, Sequence[Acl]]) -> str:
    """`kafka-acls --add` lines (Kafka 3.x and 4.x syntax), one per principal and resource, a comment per component.

    They run with the admin's connection in `admin.properties` against `$KAFKA_BOOTSTRAP_SERVERS`.
    """
    lines = []
    for component, entries in by_component.items():
        lines.append(f"# {component}: {DESCRIPTIONS[component]}")
        for (principal, rtype, name, pattern), operations in _grouped(entries).items():
            resource = "--cluster" if rtype is ResourceType.CLUSTER else f"{_TOOL_RESOURCE[rtype]} {name}"
            words = [
                'kafka-acls --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --command-config admin.properties --add',
                f"--allow-principal {principal}",
                *(f"--operation {op.tool_name}" for op in operations),
                resource,
            ]
            if pattern is PatternType.PREFIXED:
                words.append("--resource-pattern-type prefixed")
            lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def acls_json(by_component: Mapping[str, Sequence[Acl]]) -> str:
    """Every entry as `AclBinding` keyword arguments (a JSON list; a principal shared by components appears once)."""
    unique = dict.fromkeys(acl for entries in by_component.values() for acl in entries)
    return json.dumps([acl.binding() for acl in unique], indent=2) + "\n"


def acl_table(application_id: str | None = None) -> str:
    """The Markdown table of docs/operations.md: component → resource → operations, default principals."""
    lines = [
        "| component | principal | resource | operations |",
        "| --- | --- | --- | --- |",
    ]
    for component, entries in acls(application_id=application_id).items():
        for (principal, rtype, name, pattern), operations in _grouped(entries).items():
            shown = rtype.value if rtype is ResourceType.CLUSTER else f"{rtype.value} `{name}`"
            if pattern is PatternType.PREFIXED:
                shown += " (prefix)"
            ops = ", ".join(op.tool_name for op in operations)
            lines.append(f"| {component} | `{principal}` | {shown} | {ops} |")
    return "\n".join(lines) + "\n"


# -- the command ----------------------------------------------------------------------------------------


def acls_command(args: argparse.Namespace) -> int:
    application_id = args.application_id or ProcessorSettings().application_id
    chosen = acls(args.component or COMPONENTS, dict(args.principal), application_id)
    sys.stdout.write(acls_json(chosen) if args.format == "json" else kafka_acls_commands(chosen))
    return 0
