"""common/logs.py: the JSON line every service writes, and the rate limit on Kafka client warnings."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from common import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging configured as a service does, into a buffer; the previous handlers restored afterwards."""
    names = ["", "testsvc", "connector", "uvicorn", "uvicorn.error", "aiokafka", "kafka", "asyncio"]
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level) for name in names}
    propagate = {name: logging.getLogger(name).propagate for name in names}
    stream = io.StringIO()
    logs.configure("INFO", ["testsvc"], stream=stream)
    yield stream
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate[name]


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_keys_are_the_usual_ones_and_extra_fields_follow(captured: io.StringIO) -> None:
    logging.getLogger("testsvc.part").info("started %s", "now", extra={"partition": 3})
    [line] = lines(captured)
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert line["level"] == "info"
    assert line["logger"] == "testsvc.part"
    assert line["message"] == "started now"
    assert line["partition"] == 3
    assert str(line["timestamp"]).endswith("+00:00")
    assert not {"msg", "ts"} & set(line)


def test_uvicorns_color_message_is_dropped(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra={"color_message": "\x1b[1m7"})
    [line] = lines(captured)
    assert line["message"] == "Started server process [7]"
    assert "color_message" not in line


def test_a_traceback_stays_inside_the_json_line_without_exception_messages(captured: io.StringIO) -> None:
    def parse(secret: str) -> None:
        try:
            int(secret)
        except ValueError as exc:
            raise RuntimeError(f"could not parse {secret}") from exc

    try:
        parse("-".join(["ssn", "123", "45", "6789"]))  # (the source line does not quote it)
    except RuntimeError:
        logging.getLogger("testsvc").exception("failed")
    text = captured.getvalue()
    assert text.count("\n") == 1  # one line, the traceback inside it
    [line] = lines(captured)
    assert line["exc_type"] == "RuntimeError"
    trace = str(line["exc_info"])
    assert trace.startswith("Traceback (most recent call last):")
    assert "in parse" in trace  # the frames
    assert "int(secret)" in trace  # and their source lines
    assert trace.index("ValueError") < trace.index("RuntimeError")  # the cause first, as Python prints it
    assert "ssn-123" not in text  # exception messages may quote data: never logged


def test_other_libraries_log_json_too(captured: io.StringIO) -> None:
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    logging.getLogger("some.library").warning("careful")
    logging.getLogger("some.library").info("chatter")  # below the root's WARNING
    assert [(line["logger"], line["message"]) for line in lines(captured)] == [
        ("asyncio", "Task exception was never retrieved"),
        ("some.library", "careful"),
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_client_warnings_are_rate_limited_per_template_with_a_suppressed_count() -> None:
    clock = FakeClock()
    limit = logs.ClientRateLimit(interval_s=60, clock=clock)
    template = "Unable connect to node with id %s: %s"
    shown = []
    for second in range(150):  # 10 retries a second during a 150 s outage
        clock.now = 1000.0 + second
        for node in range(10):
            r = record("aiokafka.conn", template, node, "refused")
            if limit.filter(r):
                shown.append((second, getattr(r, "suppressed", 0)))
    # the first, then one per minute, each saying how many were held back since the last one shown
    assert shown == [(0, 0), (60, 599), (120, 599)]
    # another template of the same logger has its own budget; so has another logger
    assert limit.filter(record("aiokafka.conn", "Connection closed"))
    assert limit.filter(record("aiokafka.producer.sender", template, 1, "refused"))


def test_another_error_class_is_another_kind_of_warning() -> None:
    limit = logs.ClientRateLimit(interval_s=60, clock=FakeClock())
    template = "Got error produce response on topic-partition %s, retrying. Error: %s"

    class NotEnoughReplicasError(Exception):
        pass

    class NotLeaderForPartitionError(Exception):
        pass

    shown = [
        limit.filter(record("aiokafka.producer.sender", template, partition, error))
        for error in (NotEnoughReplicasError, NotLeaderForPartitionError)
        for partition in range(6)
    ]
    assert shown == [True, False, False, False, False, False] * 2
    # an exception instance counts by its class, not its message
    connect = "Unable connect to node with id %s: %s"
    assert limit.filter(record("aiokafka", connect, 1, OSError("refused 127.0.0.1:9092")))
    assert not limit.filter(record("aiokafka", connect, 2, OSError("refused 127.0.0.1:9093")))
    assert limit.filter(record("aiokafka", connect, 1, TimeoutError()))


def test_rate_limit_leaves_our_own_loggers_alone() -> None:
    limit = logs.ClientRateLimit(interval_s=60, clock=FakeClock())
    assert all(limit.filter(record("processors.runtime.engine", "task restart")) for _ in range(100))
    assert all(limit.filter(record("kafkaesque", "not a client")) for _ in range(5))


def test_configure_rate_limits_the_kafka_clients(captured: io.StringIO) -> None:
    for _ in range(500):
        logging.getLogger("aiokafka.cluster").warning("Unable to update metadata from %s", [1])
    [line] = lines(captured)
    assert line["message"] == "Unable to update metadata from [1]"


def test_uvicorn_log_config_writes_the_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import logging.config

    names = ["", "svc2", "connector", "uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka", "kafka"]
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    try:
        logging.config.dictConfig(logs.uvicorn_log_config("INFO", ["svc2"]))
        logging.getLogger("svc2").info("hello", extra={"color_message": "x"})
        for _ in range(50):
            logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
        logging.getLogger("aiokafka.conn").info("below WARNING")
    finally:
        for n, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
    got = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in got] == [
        ("svc2", "hello"),
        ("aiokafka.conn", "Unable connect to node with id 1"),
    ]
    assert "color_message" not in got[0]
