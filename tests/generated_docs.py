"""The generated parts of the docs: a table between `<!-- NAME:begin -->` and `<!-- NAME:end -->`, which a test
compares with the output of the code that generates it."""

from __future__ import annotations

from pathlib import Path


def embedded(doc: Path, name: str) -> str:
    """The text between the markers `name` in `doc` (each once)."""
    text = doc.read_text()
    begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
    assert text.count(begin) == 1, f"{doc.name}: expected one {begin.strip()}"
    assert text.count(end) == 1, f"{doc.name}: expected one {end}"
    return text.split(begin, 1)[1].split(end, 1)[0]
