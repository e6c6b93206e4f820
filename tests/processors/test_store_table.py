"""docs/processing.md's table of the state stores is generated from their declaration (`STORES`): the output of
`pinwheel-connector config --stores`, one column per field of `StoreSpec`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from connector.config_docs import store_table_markdown
from processors.logic.codec import INT_SERDE
from processors.logic.stores import STORES, StoreSpec
from processors.topics import changelog_topics
from tests.generated_docs import embedded

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_store_table_is_the_one_generated_from_stores() -> None:
    assert embedded(ROOT / "docs" / "processing.md", "stores") == store_table_markdown(), (
        "regenerate with: pinwheel-connector config --stores"
    )


def test_the_table_has_a_row_per_store_and_a_column_per_spec_field() -> None:
    header, rule, *rows = store_table_markdown().splitlines()
    names = [field.name for field in dataclasses.fields(StoreSpec) if field.name != "changelog"]  # the 2nd column
    columns = [names[0], "changelog topic", *names[1:]]
    assert header == "| " + " | ".join(columns) + " |"
    assert rule.count("---") == len(columns)
    changelogs = changelog_topics("<application_id>")
    cells = [row.removeprefix("| ").removesuffix(" |").split(" | ") for row in rows]
    assert len(cells) == len(STORES)
    for spec, row in zip(STORES, cells, strict=True):
        changelog = f"`{changelogs[spec.name]}`" if spec.name in changelogs else "(none)"
        assert row[:2] == [f"`{spec.name}`", changelog]
        if spec.changelog is not None:  # a topic of the contract, not the application's own
            assert changelog == f"`{spec.changelog}`"
        assert row[columns.index("serde")] == f"`{spec.serde.name}`"
        assert row[columns.index("cached")] == ("yes" if spec.cached else "no")
        assert row[columns.index("ordered")] == ("yes" if spec.ordered else "no")
        assert row[columns.index("logged")] == ("yes" if spec.logged else "no")


@dataclasses.dataclass(frozen=True, slots=True)
class _SpecWithMore(StoreSpec):
    retention_h: int | None = None


def test_a_field_added_to_the_spec_is_a_column_and_a_store_without_changelog_says_so() -> None:
    table = store_table_markdown([_SpecWithMore("scratch", INT_SERDE, retention_h=24, logged=False)])
    header, _, row = table.splitlines()
    assert header.endswith(" | logged | changelog_header | expiring | retention_h |")
    assert row.startswith("| `scratch` | (none) | `int` | ")  # not a store of STORES: no changelog
    assert row.endswith(" | no | (none) | no | `24` |")
