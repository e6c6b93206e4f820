"""The shell of a benchmark: a private local broker (unless KAFKA_BOOTSTRAP_SERVERS), a scratch directory,
and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from common.ports import free_port
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings
from connector.run import stop_on_sigterm

T = TypeVar("T")


def run_with_broker(prefix: str, say: Callable[[str], None], bench: Callable[[str, Path], Coroutine[Any, Any, T]]) -> T:
    """`bench(bootstrap, work)` against KAFKA_BOOTSTRAP_SERVERS, or a broker of its own in `work`."""
    stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if not bootstrap:
            broker = LocalKafka(LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=work / "kafka"))
            bootstrap = broker.start()
        return asyncio.run(bench(bootstrap, work))
    except KeyboardInterrupt:
        say("interrupted: stopping what this bench started")
        sys.exit(130)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
