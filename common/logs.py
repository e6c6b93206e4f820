"""Structured JSON logs, one object per line, for every service.

Keys as other Python services name them: `timestamp`, `level`, `logger`, `message`, then `pid` and the
fields callers pass in `extra`. Callers pass only ids, codes and timings in `extra`; bodies, secrets and
payroll data are never handed to a logger. An exception is logged as `exc_type` and `exc_info`, its
traceback inside the same JSON line: the stack (file, line, function, source) and the exception types
of the chain, never the exception messages (they can quote data).

Kafka client libraries repeat the same warning for every retry (thousands of lines a minute while a
broker is down): `ClientRateLimit` lets the first of a kind through and then at most one per interval,
carrying how many were suppressed in between.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Fields other libraries add that mean nothing in JSON (uvicorn's ANSI-coloured copy of the message).
_DROPPED = frozenset({"color_message"})
# The loggers of the Kafka clients, whose repeated warnings are rate-limited.
CLIENT_LOGGERS = ("aiokafka", "kafka")


def format_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    """The traceback of `exc` and of its causes/contexts: stack frames and exception types, no messages."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines: list[str] = []
    for link in reversed(chain):
        frames = traceback.extract_tb(tb if link is exc else link.__traceback__)
        if frames:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_list(frames))
        kind = type(link)
        lines.append(
            f"{kind.__module__}.{kind.__qualname__}\n" if kind.__module__ != "builtins" else f"{kind.__qualname__}\n"
        )
    return "".join(lines).rstrip("\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # tells the workers of one service apart
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc_type"] = type(record.exc_info[1]).__name__
            entry["exc_info"] = format_traceback(record.exc_info[1], record.exc_info[2])
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


class ClientRateLimit(logging.Filter):
    """Lets the first record of each kind through, then at most one per `interval_s`; a kind is the logger, the
    message template and the error classes among its arguments (partitions, nodes and addresses do not count).

    Applies to the Kafka clients' loggers only (`CLIENT_LOGGERS`); a record let through after others were
    held back carries `suppressed`, how many similar records were dropped since the last one shown.
    """

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}  # key -> (last shown at, suppressed since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in CLIENT_LOGGERS:
            return True
        key = (record.name, str(record.msg), *_error_kinds(record.args))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.suppressed = seen[1]
        if len(self._seen) > 10_000:  # templates are few; this only bounds a misbehaving library
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


def _error_kinds(args: object) -> tuple[str, ...]:
    """The error classes among a record's arguments: another kind of error is another kind of warning."""
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else ()
    return tuple(
        value.__name__ if isinstance(value, type) else type(value).__name__
        for value in values
        if (isinstance(value, type) and issubclass(value, BaseException)) or isinstance(value, BaseException)
    )


def configure(level: str = "INFO", loggers: Iterable[str] = (), stream: Any = None) -> None:
    """JSON lines on stderr: the named loggers (and uvicorn's) at `level`, the Kafka clients at WARNING or
    above and rate-limited, everything else (the root logger: asyncio, libraries) at WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ClientRateLimit())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    for name in (*loggers, "common", "connector", "uvicorn", "uvicorn.error", *CLIENT_LOGGERS):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level if name not in CLIENT_LOGGERS else max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(level: str, loggers: Iterable[str] = ()) -> dict[str, Any]:
    """uvicorn's dictConfig (for services whose workers uvicorn spawns): the same lines as `configure`."""
    ours = {
        name: {"handlers": ["stderr"], "level": level, "propagate": False} for name in (*loggers, "common", "connector")
    }
    client_level = logging.getLevelName(max(logging.getLevelName(level), logging.WARNING))
    clients = {name: {"handlers": ["stderr"], "level": client_level, "propagate": False} for name in CLIENT_LOGGERS}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "common.logs.JsonFormatter"}},
        "filters": {"client_rate_limit": {"()": "common.logs.ClientRateLimit"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["client_rate_limit"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            **clients,
            **ours,
        },
    }
