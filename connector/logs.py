"""Structured JSON logs, one object per line, for every service.

Callers pass only ids, codes and timings in `extra`; bodies, secrets and payroll data are never handed
to a logger, and exceptions are reduced to their type (messages and tracebacks can quote data).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # tells the workers of one service apart
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO", loggers: Iterable[str] = (), stream: Any = None) -> None:
    """JSON lines on stderr for the named loggers (and uvicorn's); aiokafka at WARNING or above."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (*loggers, "connector", "uvicorn", "uvicorn.error", "aiokafka"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level if name != "aiokafka" else max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(level: str, loggers: Iterable[str] = ()) -> dict[str, Any]:
    """uvicorn's dictConfig: the same JSON formatter, no access log (services write their own lines)."""
    ours = {name: {"handlers": ["stderr"], "level": level, "propagate": False} for name in (*loggers, "connector")}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "connector.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "aiokafka": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            **ours,
        },
    }
