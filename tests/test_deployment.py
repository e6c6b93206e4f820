"""docker-compose.yml, the Dockerfile and the README cannot run here (no Docker engine), so they are
checked against the code: every variable they set is one the code reads, the ports agree, and the
README's configuration table is the one the settings classes generate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.cli import build_parser
from connector.config_docs import configuration_markdown, env_names, settings_classes
from connector.settings import LocalKafkaSettings

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("topics", "gateway", "processor")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _known_variables() -> set[str]:
    return {env for _, cls in settings_classes() for env in env_names(cls).values()}


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", *APP_SERVICES}
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("gateway", "processor"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert "healthcheck" in services["kafka"]


def test_app_environment_is_read_by_the_code(compose: dict[str, Any]) -> None:
    known = _known_variables()
    for name in APP_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name} sets variables no settings class reads: {sorted(unknown)}"


def test_commands_are_cli_subcommands(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in APP_SERVICES:
        command = compose["services"][name]["command"]
        parser.parse_args(command)  # exits (fails the test) on an unknown subcommand or flag


def test_ports_match_the_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway_env = services["gateway"]["environment"]
    assert services["gateway"]["ports"] == [f"{gateway_env['GATEWAY_PORT']}:{gateway_env['GATEWAY_PORT']}"]
    assert gateway_env["GATEWAY_PORT"] in str(services["gateway"]["healthcheck"]["test"])
    processor_env = services["processor"]["environment"]
    port = processor_env["PROCESSOR_HEALTH_PORT"]
    assert services["processor"]["ports"] == [f"{port}:{port}"]
    assert processor_env["PROCESSOR_HEALTH_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert port in str(services["processor"]["healthcheck"]["test"])
    # The processors' changelogs are named after the application id the topics job created them for.
    assert services["topics"]["environment"]["PROCESSOR_APPLICATION_ID"] == processor_env["PROCESSOR_APPLICATION_ID"]


def test_kafka_matches_the_local_broker(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{LocalKafkaSettings.model_fields['version'].default}"
    env = kafka["environment"]
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    internal = re.search(r"INTERNAL://kafka:(\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
    assert internal is not None
    for name in APP_SERVICES:
        assert f"kafka:{internal.group(1)}" in compose["services"][name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("connector", "gateway", "processors", "schemas", "simulator", "bench"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["pinwheel-connector"]' in dockerfile


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- config:begin -->\n", "<!-- config:end -->"
    assert begin in readme
    assert end in readme
    embedded = readme.split(begin, 1)[1].split(end, 1)[0]
    assert embedded == configuration_markdown(), "regenerate with: pinwheel-connector config"
