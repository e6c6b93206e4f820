"""JSON text in and out: fast path with orjson, the standard library for what orjson refuses.

orjson rejects integers wider than 64 bits and NaN/Infinity, which Python's json (and so Pinwheel's
json.dumps) produces and accepts; falling back keeps such bodies instead of dead-lettering them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> str:
    # Standard json: exact for big ints and NaN (orjson would write NaN as null); only used for the
    # small unknown-field remainders and `other` payloads, not on the typed hot path.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
