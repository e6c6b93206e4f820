"""docker-compose.yml, the Dockerfile and docs/configuration.md checked against the code, without a Docker engine:
every variable they set is one the code reads, the ports agree, and the configuration table is the one the
settings classes generate. tests/compose/ runs the same files for real (make compose-test)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import env_names
from connector.cli import build_parser
from connector.config_docs import configuration_markdown, settings_classes
from connector.local_kafka import LocalKafkaSettings
from tests.generated_docs import embedded

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
    assert "healthcheck" in services["kafka"]
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()  # the gateway's and the processors' /livez


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


def test_ports_match_the_settings_and_are_published_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway_env = services["gateway"]["environment"]
    # PUBLISH_ADDRESS (the way to let Pinwheel in) publishes the webhook port alone; the admin listener, the
    # processors' health ports and Kafka's unauthenticated listener stay on loopback unless their own variable
    # says otherwise.
    assert services["gateway"]["ports"] == [
        f"${{PUBLISH_ADDRESS:-127.0.0.1}}:${{PUBLISH_GATEWAY_PORT:-8443}}:{gateway_env['GATEWAY_PORT']}",
        f"${{METRICS_PUBLISH_ADDRESS:-127.0.0.1}}:${{PUBLISH_GATEWAY_ADMIN_PORT:-8082}}:{gateway_env['GATEWAY_ADMIN_PORT']}",
    ]
    assert gateway_env["GATEWAY_ADMIN_HOST"] == "0.0.0.0"  # inside the container: reachable through the mapping
    processor_env = services["processor"]["environment"]
    # No fixed host port: every instance of a scaled service gets its own.
    assert services["processor"]["ports"] == [
        f"${{METRICS_PUBLISH_ADDRESS:-127.0.0.1}}::{processor_env['PROCESSOR_HEALTH_PORT']}"
    ]
    assert processor_env["PROCESSOR_HEALTH_HOST"] == "0.0.0.0"  # reachable from outside the container
    # The processors' changelogs are named after the application id the topics job created them for.
    assert services["topics"]["environment"]["PROCESSOR_APPLICATION_ID"] == processor_env["PROCESSOR_APPLICATION_ID"]
    assert services["kafka"]["ports"] == ["${KAFKA_PUBLISH_ADDRESS:-127.0.0.1}:${PUBLISH_KAFKA_PORT:-9092}:9092"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert sum("PUBLISH_ADDRESS:-" in port and "{PUBLISH_ADDRESS" in port for port in published) == 1


def test_scaled_processors_get_their_own_instance_id_and_state(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    assert "PROCESSOR_INSTANCE_ID" not in processor["environment"]
    assert "PROCESSOR_INSTANCE_ID=$${PROCESSOR_INSTANCE_ID:-$$HOSTNAME}" in " ".join(processor["entrypoint"])
    assert "volumes" not in processor  # local state is a cache of the changelogs, per container


def test_grace_periods_outlast_the_shutdown_timeouts(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def seconds(value: str) -> float:
        assert value.endswith("s")
        return float(value[:-1])

    gateway, processor = services["gateway"], services["processor"]
    assert seconds(gateway["stop_grace_period"]) > float(gateway["environment"]["GATEWAY_SHUTDOWN_TIMEOUT_S"]) + 10
    assert seconds(processor["stop_grace_period"]) > float(processor["environment"]["PROCESSOR_COMMIT_TIMEOUT_S"])


def test_the_secret_comes_from_a_file_and_kafka_data_from_the_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = services["gateway"]
    assert "GATEWAY_SECRETS" not in gateway["environment"]
    assert gateway["environment"]["GATEWAY_SECRETS_FILE"] == "/run/secrets/pinwheel_api_secret"
    assert gateway["secrets"][0] == "pinwheel_api_secret"
    # The Kafka client's files as optional compose secrets: /dev/null unless the host file is named, and the
    # variable that points the client at one passed through only when set (never set empty). The cluster's CA is
    # shared; the identity (user name, password, client certificate and key) is each service's own, at the same
    # path in every container.
    assert compose["secrets"]["kafka_ssl_ca"]["file"] == "${KAFKA_SSL_CA_SECRET:-/dev/null}"
    identity = ("kafka_sasl_password", "kafka_ssl_cert", "kafka_ssl_key")
    for name in APP_SERVICES:
        mounted = {(s, s) if isinstance(s, str) else (s["source"], s["target"]) for s in services[name]["secrets"]}
        assert ("kafka_ssl_ca", "kafka_ssl_ca") in mounted, name
        for target in identity:
            source = f"{name}_{target}"
            assert (source, target) in mounted, (name, target)
            assert compose["secrets"][source]["file"] == f"${{{source.upper()}_SECRET:-/dev/null}}"
        env = services[name]["environment"]
        for variable in ("KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE"):
            assert variable in env, (name, variable)
            assert env[variable] is None, (name, variable)  # `VAR:` passes the host's value through, if any
        assert "KAFKA_SASL_PASSWORD" not in env, name  # a password in the environment: never
    # Each service its own principal, by default the one `pinwheel-connector acls` grants (User:pinwheel-<component>).
    usernames = {name: services[name]["environment"]["KAFKA_SASL_USERNAME"] for name in APP_SERVICES}
    assert usernames == {
        "topics": "${TOPICS_KAFKA_SASL_USERNAME:-pinwheel-topics}",
        "gateway": "${GATEWAY_KAFKA_SASL_USERNAME:-pinwheel-gateway}",
        "processor": "${PROCESSOR_KAFKA_SASL_USERNAME:-pinwheel-processors}",
    }
    kafka = services["kafka"]
    assert kafka["volumes"] == [f"kafka-data:{kafka['environment']['KAFKA_LOG_DIRS']}"]
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "pinwheel-api-secret"} <= set(dockerignore)


def _default(value: str) -> str:
    """The default of a `${VARIABLE:-default}` value (compose interpolation), or the value itself."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return match[1] if match else value


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg])", size.lower())
    assert match, size
    return int(match[1]) * 1024 ** "kmg".index(match[2]) * 1024


def test_kafka_restarts_and_every_log_rotates(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["restart"] == "unless-stopped"
    for name in ("gateway", "processor"):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["topics"]["restart"] == "no"  # a job: it ends
    for name, service in services.items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert _bytes(_default(logging["options"]["max-size"])) <= _bytes("100m"), name
        assert 1 <= int(_default(logging["options"]["max-file"])) <= 10, name


def test_every_service_has_a_memory_limit_above_what_it_was_measured_to_use(compose: dict[str, Any]) -> None:
    """Measured peaks (docs/operations.md, "Compose: memory, logs and kept state"), with room to spare."""
    # The processor's: 78 MiB measured plus the ~370 MiB its RocksDB memtables reach for 6 partitions.
    measured_peak = {"kafka": "803m", "gateway": "201m", "processor": "450m", "topics": "104m"}
    services = compose["services"]
    for name, peak in measured_peak.items():
        limit = _bytes(_default(services[name]["mem_limit"]))
        assert limit >= 1.5 * _bytes(peak), name
        assert f"${{{name.upper()}_MEM_LIMIT:-" in services[name]["mem_limit"], name  # the operator's to raise
    # Kafka's heap is fixed and the limit leaves the JVM room beyond it (metaspace, threads, direct buffers).
    heap = re.search(r"-Xmx(\d+[kmg])", _default(services["kafka"]["environment"]["KAFKA_HEAP_OPTS"]))
    assert heap is not None
    assert _bytes(_default(services["kafka"]["mem_limit"])) >= _bytes(heap[1]) + _bytes("384m")


def test_the_state_override_keeps_one_processors_state_in_a_volume(compose: dict[str, Any]) -> None:
    """docker/processor-state.yml: the processors' state directory in a named volume, a stable instance id, and a
    fixed container name, so `--scale` fails rather than have two instances share one state directory."""
    override = yaml.safe_load((ROOT / "docker" / "processor-state.yml").read_text())
    assert set(override["services"]) == {"processor"}
    processor = override["services"]["processor"]
    state_dir = compose["services"]["processor"]["environment"]["PROCESSOR_STATE_DIR"]
    assert processor["volumes"] == [f"processor-state:{state_dir}"]
    assert set(override["volumes"]) == {"processor-state"}
    assert _default(processor["environment"]["PROCESSOR_INSTANCE_ID"])  # not the container id: it survives
    assert "container_name" in processor
    # The image has the directory, owned by the container's user: a new named volume takes that owner.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"mkdir -p {state_dir} && chown -R connector /data" in dockerfile


def test_the_network_override_adds_the_kafka_network_to_the_app_services_only() -> None:
    """docker/kafka-network.yml (a Kafka in another Docker network): the project's own network is kept, the external
    one is named by KAFKA_NETWORK and required, never created nor removed by compose."""
    override = yaml.safe_load((ROOT / "docker" / "kafka-network.yml").read_text())
    assert set(override["services"]) == set(APP_SERVICES)
    for name in APP_SERVICES:
        assert override["services"][name] == {"networks": ["default", "kafka"]}, name
    network = override["networks"]["kafka"]
    assert network["external"] is True
    assert network["name"].startswith("${KAFKA_NETWORK:?")


def test_kafka_matches_the_local_broker(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"${{KAFKA_IMAGE:-apache/kafka:{LocalKafkaSettings.model_fields['version'].default}}}"
    env = kafka["environment"]
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    internal = re.search(r"INTERNAL://kafka:(\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
    assert internal is not None
    for name in APP_SERVICES:
        assert f"kafka:{internal.group(1)}" in compose["services"][name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"localhost:{internal.group(1)}" in str(kafka["healthcheck"]["test"])  # whatever the published port


def test_dockerfile_copies_the_runtime_packages_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # Every package the wheel holds (the benches, chaos runs and tests are not among them).
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    runtime = [name.rstrip("*") for name in packaged]
    assert set(runtime) == {"common", "connector", "gateway", "processors", "schemas", "simulator", "operate"}
    for package in runtime:
        assert f"COPY {package} ./{package}" in dockerfile
    for package in ("bench", "chaos", "tests"):
        assert f"COPY {package}" not in dockerfile
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert 'ENTRYPOINT ["pinwheel-connector"]' in dockerfile


def test_dockerfile_installs_the_locked_dependencies_then_the_wheel_alone() -> None:
    """The image runs exactly the versions the lock names, each file's hash checked (`make lock` writes it), and
    the dependency layer is rebuilt only when the lock changes: it comes before the connector's wheel."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile.rsplit("\nFROM ", 1)[1]  # the runtime stage
    install_lock = "pip install --no-cache-dir -q --require-hashes -r /tmp/requirements.lock"
    install_wheel = "pip install --no-cache-dir -q --no-index --no-deps /wheels/app/*.whl"
    assert "COPY requirements.lock /tmp/requirements.lock" in final
    assert install_lock in final
    assert install_wheel in final
    assert final.index("COPY requirements.lock") < final.index(install_lock) < final.index("COPY --from=build")
    assert final.index("COPY --from=build") < final.index(install_wheel)
    # The dev venv's pins, dev tools included: the build stage takes its compiler's (mypy) from them, never the image.
    assert "constraints.txt" not in final
    assert "pip check" in final  # the lock satisfies every requirement the wheel declares
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert "requirements.lock" not in dockerignore


def test_configuration_table_is_current() -> None:
    """docs/configuration.md holds the table (the README links to it): the output of `pinwheel-connector config`."""
    assert embedded(ROOT / "docs" / "configuration.md", "config") == configuration_markdown(), (
        "regenerate with: pinwheel-connector config"
    )
