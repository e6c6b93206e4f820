"""Fixtures of the schemas tests (test data lives in schema_fixtures.py)."""

from __future__ import annotations

import pytest

from schemas.codec import Codec


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()
