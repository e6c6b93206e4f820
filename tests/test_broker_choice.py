"""PINWHEEL_TEST_BROKER forces the broker fixture's branch (tests/kafka_broker.py); the default order is kept.

The "env" broker is PINWHEEL_TEST_BOOTSTRAP_SERVERS only: KAFKA_BOOTSTRAP_SERVERS (the services' setting, maybe a
real cluster in the developer's shell) never makes the tests create and delete topics there.
"""

from __future__ import annotations

import pytest

from tests.kafka_broker import _choice, docker_available

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)


def test_forced_choice_wins_and_a_bad_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PINWHEEL_TEST_BROKER", "local")
    assert _choice() == "local"
    monkeypatch.setenv("PINWHEEL_TEST_BROKER", "kubernetes")
    with pytest.raises(ValueError, match="PINWHEEL_TEST_BROKER must be one of env, docker, local"):
        _choice()


def test_unusable_forced_choices_fail_instead_of_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # not the tests' variable: still refused
    monkeypatch.setenv("PINWHEEL_TEST_BROKER", "env")
    with pytest.raises(ValueError, match="needs PINWHEEL_TEST_BOOTSTRAP_SERVERS"):
        _choice()
    monkeypatch.setenv("PINWHEEL_TEST_NO_DOCKER", "1")
    monkeypatch.setenv("PINWHEEL_TEST_BROKER", "docker")
    with pytest.raises(ValueError, match="no Docker engine answers"):
        _choice()


def test_default_order_env_then_docker_then_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINWHEEL_TEST_BROKER", raising=False)
    monkeypatch.setenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert _choice() == "env"
    monkeypatch.delenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS")
    monkeypatch.setenv("PINWHEEL_TEST_NO_DOCKER", "1")
    assert _choice() == "local"


def test_the_services_bootstrap_variable_never_picks_the_tests_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINWHEEL_TEST_BROKER", raising=False)
    monkeypatch.delenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("PINWHEEL_TEST_NO_DOCKER", "1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "production-kafka.example:9092")
    assert _choice() == "local"


@pytest.mark.kafka  # selected by `make test-docker`, where the engine runs
def test_an_engine_that_cannot_get_the_image_falls_back_to_the_local_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine answers, but the image is neither there nor pullable (offline, no registry): one line, then the
    local JVM broker, not an error in every Kafka test."""
    if not docker_available():
        pytest.skip("no Docker engine answers here (make test-docker starts one)")
    monkeypatch.delenv("PINWHEEL_TEST_BROKER", raising=False)
    monkeypatch.delenv("PINWHEEL_TEST_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("PINWHEEL_TEST_NO_DOCKER", raising=False)
    monkeypatch.setenv("PINWHEEL_TEST_KAFKA_IMAGE", "registry.invalid/pinwheel-test/kafka:0")
    assert _choice() == "local"
    said = capsys.readouterr().err
    assert "registry.invalid/pinwheel-test/kafka:0 cannot be pulled" in said
    assert "using the local JVM broker" in said
