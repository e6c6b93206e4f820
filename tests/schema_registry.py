"""The real schema registry the tests run against, picked in order:

1. `SCHEMA_REGISTRY_URL` from the environment (a Confluent-compatible registry someone already runs);
2. the local Apicurio Registry (connector.local_registry), started on free ports for this test session.

Only the local one can be stopped and restarted by the outage tests (`registry.local`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from connector.local_registry import LocalRegistry, local_registry_on_free_port


@dataclass
class Registry:
    url: str
    kind: Literal["env", "local"]
    local: LocalRegistry | None = None


@contextlib.contextmanager
def select_registry() -> Iterator[Registry]:
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    if url:
        yield Registry(url, "env")
        return
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-registry-test-"))
    registry = local_registry_on_free_port(data_dir)
    try:
        registry.start()
        yield Registry(registry.url, "local", registry)
    finally:
        registry.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
