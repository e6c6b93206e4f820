"""`operate.acls` and `pinwheel-connector acls`: the names come from their one home, the JSON builds
confluent-kafka's AclBinding, the command lines are kafka-acls syntax, and docs/operations.md shows the model."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AclPermissionType

from common.topics import TopicSettings
from connector.cli import main
from operate.acls import COMPONENTS, acl_table, acls, default_principal
from processors.runtime.task import transactional_id
from processors.service import topic_needs
from processors.settings import ProcessorSettings
from processors.topics import all_topics, changelog_topics
from schemas import catalog
from tests.generated_docs import embedded
from tests.secure_kafka import acl_binding

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "pinwheel-connector")


def _by(component: str, app_id: str = "app-x") -> set[tuple[str, str, str, str]]:
    return {
        (a.resource_type.value, a.resource_name, a.pattern_type.value, a.operation.value)
        for a in acls([component], application_id=app_id)[component]
    }


def test_the_processors_acls_cover_every_topic_they_use_and_their_transactional_ids() -> None:
    got = _by("processors")
    needs = topic_needs(ProcessorSettings(application_id="app-x"))  # what the processor checks at start
    assert {name for rtype, name, _, _ in got if rtype == "TOPIC"} == set(needs)
    for name, operations in needs.items():
        assert {op.name for op in operations} <= {op for _, granted, _, op in got if granted == name}, name
    assert ("GROUP", "app-x", "LITERAL", "READ") in got
    (prefix,) = [name for rtype, name, pattern, _ in got if rtype == "TRANSACTIONAL_ID" and pattern == "PREFIXED"]
    assert transactional_id("app-x", 7).startswith(prefix)
    assert not transactional_id("app-xy", 7).startswith(prefix)  # another application's ids are not granted
    for changelog in changelog_topics("app-x").values():
        assert {op for _, name, _, op in got if name == changelog} == {"READ", "WRITE", "DESCRIBE_CONFIGS"}
    assert not any(rtype == "CLUSTER" for rtype, *_ in got)


def test_the_topics_job_may_create_exactly_the_declared_topics() -> None:
    declared = {spec.name for spec in all_topics(TopicSettings(processor_application_id="app-x"))}
    got = _by("topics")
    assert {name for _, name, _, op in got if op == "CREATE"} == declared
    assert {op for *_, op in got} == {"CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"}


def test_read_only_commands_read_only() -> None:
    for component in ("tail", "verify", "deadletter-list", "deadletter-show"):
        assert {op for *_, op in _by(component)} == {"READ"}, component
    assert _by("verify") == {("TOPIC", catalog.ACCOUNT_UPDATES_TOPIC, "LITERAL", "READ")}


def test_json_objects_are_aclbinding_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acls", "--format", "json", "--principal", "gateway=User:gw", "--application-id", "app-x"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries
    for entry in entries:
        binding = acl_binding(entry)
        assert binding.permission_type is AclPermissionType.ALLOW
        assert binding.host == "*"
    principals = {e["principal"] for e in entries}
    assert "User:gw" in principals
    assert default_principal("gateway") not in principals
    assert principals == {"User:gw", *(default_principal(c) for c in COMPONENTS if c != "gateway")}
    assert len(entries) == len({json.dumps(e, sort_keys=True) for e in entries})


def test_command_lines_are_kafka_acls_add_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acls", "--component", "processors", "--application-id", "app-x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# processors: ")
    allowed = {"--bootstrap-server", "--command-config", "--add", "--allow-principal", "--operation", "--topic",
               "--group", "--transactional-id", "--cluster", "--resource-pattern-type"}  # fmt: skip
    operations = {"Read", "Write", "Create", "Delete", "Describe", "DescribeConfigs", "IdempotentWrite"}
    for line in lines[1:]:
        words = shlex.split(line)
        assert words[0] == "kafka-acls"
        assert {w for w in words if w.startswith("--")} <= allowed, line
        assert words.count("--add") == 1
        assert words[words.index("--allow-principal") + 1] == "User:pinwheel-processors"
        ops = [words[i + 1] for i, w in enumerate(words) if w == "--operation"]
        assert ops
        assert set(ops) <= operations
    prefixed = [line for line in lines if "--resource-pattern-type prefixed" in line]
    assert prefixed == [line for line in lines if "--transactional-id app-x-" in line]


def test_a_bad_principal_or_component_exits_2_naming_it() -> None:
    for args in (["--principal", "gateway"], ["--principal", "nobody=User:x"], ["--component", "nobody"]):
        result = subprocess.run([CLI, "acls", *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
        assert args[0] in result.stderr


def test_the_operations_doc_table_is_the_model() -> None:
    assert embedded(ROOT / "docs" / "operations.md", "acls") == acl_table(), "regenerate with operate.acls.acl_table()"
