"""JSON text in and out, exact for what Python's json (Pinwheel's serialiser) can produce.

Parsing uses pydantic-core's parser: faster than the standard library and, unlike orjson, exact for
integers wider than 64 bits (orjson silently turns them into floats) and accepting NaN/Infinity.
It rejects lone UTF-16 surrogate escapes, which Avro strings (UTF-8) could not carry anyway: such a
body becomes `invalid_json` and is dead-lettered whole instead of failing later at encode time.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

# pydantic-core stops at this depth of nested arrays/objects (measured: 200 levels parse, deeper do not).
MAX_DEPTH = 200


class TooDeepError(ValueError):
    """Well-formed or not, the text nests arrays/objects deeper than the parser goes."""


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises ValueError (TooDeepError past the nesting limit)."""
    try:
        return pydantic_core.from_json(data, allow_inf_nan=True)
    except ValueError as exc:
        if str(exc).startswith("recursion limit exceeded"):
            raise TooDeepError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        raise


def dumps(value: Any) -> str:
    # The standard library: exact for big ints and NaN (orjson would write NaN as null). It serialises
    # only the unknown-field remainders and `other` payloads, never the typed hot path.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
