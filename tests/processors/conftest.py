"""Fixtures of the processors' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processors.pipeline_driver import PipelineDriver


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[PipelineDriver]:
    """The real pipeline (Engine, Task, AccountPipeline) over an in-memory broker, with its state in `tmp_path`."""
    d = PipelineDriver(tmp_path / "state")
    yield d
    d.close()
