"""Text output shared by the benchmarks: markdown tables (pasted into docs/benchmarks.md) and percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank `p`th percentile (0 < p <= 100) of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
