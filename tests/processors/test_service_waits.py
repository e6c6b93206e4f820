"""`pinwheel-connector processor` started before Kafka: it waits, says why on /readyz, and runs once Kafka answers;
given `KAFKA_STARTUP_TIMEOUT_S` it gives up with one line. Never a plain traceback, never an unclosed client."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from processors import pipeline
from processors.topics import all_topics
from tests.port_forward import PortForward
from tests.processors.test_service import processor_env, start_processor


def readyz(port: int) -> tuple[int, dict[str, object]] | None:
    with contextlib.suppress(httpx.TransportError):
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        return response.status_code, response.json()
    return None


def wait_for_answer(
    child: subprocess.Popen[str], port: int, accept: Callable[[int, dict[str, object]], bool], timeout_s: float
) -> tuple[int, dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline and child.poll() is None:
        last = readyz(port)
        if last is not None and accept(*last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"no such /readyz answer within {timeout_s}s (last: {last}, exit: {child.poll()})")


def stop(child: subprocess.Popen[str], timeout_s: float = 60) -> str:
    if child.poll() is None:
        child.terminate()
    try:
        _, err = child.communicate(timeout=timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return err


def assert_clean(err: str) -> list[dict[str, object]]:
    """Every line but the last one-liner is JSON; no plain traceback, no unclosed client."""
    assert "Traceback" not in err, err[-3000:]
    assert "Unclosed" not in err, err[-3000:]
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_the_processor_waits_for_kafka_and_runs_once_it_answers(
    bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app_id = unique("svc-wait")
    topics = all_topics(TopicSettings(processor_application_id=app_id))
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), topics))
    kafka_port, health_port = free_port(), free_port()
    child = start_processor(processor_env(f"127.0.0.1:{kafka_port}", app_id, tmp_path, health_port))
    forward = PortForward(kafka_port, bootstrap)
    try:
        status, body = wait_for_answer(child, health_port, lambda status, body: bool(body.get("reasons")), 30)
        assert status == 503
        assert body["status"] == "not_ready"
        [reason] = body["reasons"]
        assert str(reason).startswith("kafka unreachable: ConnectionRefusedError"), body
        time.sleep(2)  # a few attempts (0.5 s, 1 s, ...): one log line, the rest held back by the rate limit
        forward.start()  # Kafka appears on the port the processor was given
        status, body = wait_for_answer(child, health_port, lambda status, body: status == 200, 120)
        assert (body["status"], body["reasons"]) == ("ready", []), body
        # The same health shell as the gateway's (common/health.py): /livez with the uptime, /metrics.
        live = httpx.get(f"http://127.0.0.1:{health_port}/livez", timeout=2).json()
        assert live["status"] == "alive", live
        assert float(live["uptime_s"]) > 0, live
        metrics = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=2)
        assert metrics.headers["content-type"].startswith("text/plain"), metrics.headers
        assert "processor_ready_partitions " in metrics.text
        # Compiled (setup.py) when the tests' own pipeline is: the child runs from the same tree.
        compiled = not (pipeline.__file__ or "").endswith(".py")
        assert f"processor_compiled {float(compiled)}" in metrics.text, metrics.text
        err = stop(child)
    finally:
        stop(child)
        forward.stop()
    assert child.returncode == 0, err[-3000:]
    lines = assert_clean(err)
    waits = [line for line in lines if line["message"] == "waiting for kafka"]
    assert waits, err[-3000:]
    assert waits[0]["attempt"] == 1
    assert waits[0]["bootstrap_servers"] == f"127.0.0.1:{kafka_port}"
    assert len(waits) <= 2  # rate-limited: at most one line per 10 s
    messages = [line["message"] for line in lines]
    assert messages.index("kafka reachable") > messages.index("waiting for kafka")
    assert "task ready" in messages


def test_the_processor_gives_up_after_its_startup_timeout_with_one_line(
    unique: Callable[[str], str], tmp_path: Path
) -> None:
    kafka_port = free_port()
    env = processor_env(f"127.0.0.1:{kafka_port}", unique("svc-give-up"), tmp_path, free_port())
    env["KAFKA_STARTUP_TIMEOUT_S"] = "2"
    started = time.monotonic()
    child = start_processor(env)
    try:
        _, err = child.communicate(timeout=60)  # waiting forever would fail the test here
    finally:
        stop(child)
    elapsed = time.monotonic() - started
    assert child.returncode == 1, err[-3000:]
    assert elapsed < 30
    assert_clean(err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"processor: kafka: no answer from 127.0.0.1:{kafka_port} within 2 s"), last
    assert "ConnectionRefusedError" in last
    assert all(line.startswith("{") for line in err.strip().splitlines()[:-1]), err[-3000:]


def test_a_cluster_that_refuses_the_processor_ends_it_at_once_with_exit_2(
    bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    env = processor_env(bootstrap, unique("svc-refused"), tmp_path, free_port())
    env |= {  # SASL spoken to the session broker's plaintext listener: refused whatever the wait
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "processor",
        "KAFKA_SASL_PASSWORD": "never-shown",
    }
    child = start_processor(env)
    try:
        _, err = child.communicate(timeout=60)  # no KAFKA_STARTUP_TIMEOUT_S: only the refusal can end it
    finally:
        stop(child)
    assert child.returncode == 2, err[-3000:]
    assert_clean(err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("processor: kafka: SASL handshake refused: check KAFKA_SECURITY_PROTOCOL"), last
    assert "never-shown" not in err
