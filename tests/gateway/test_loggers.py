"""Every gateway module logs under its own name (`logging.getLogger(__name__)`), so a JSON line's `logger` says
which module wrote it (five modules once all logged as `gateway.publisher`)."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import gateway


def test_each_gateway_module_logs_under_its_module_name() -> None:
    names: dict[str, str] = {}
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name == "gateway.__main__":
            continue
        module = importlib.import_module(info.name)
        loggers = [value for value in vars(module).values() if isinstance(value, logging.Logger)]
        for logger in loggers:
            assert logger.name == info.name, f"{info.name} logs as {logger.name}"
            names[info.name] = logger.name
    assert {"gateway.app", "gateway.publisher", "gateway.connections"} <= set(names)
