"""The key-value stores the logic works through, and an in-memory implementation.

The runtime backs each store with RocksDB and a compacted changelog topic; values cross that boundary with
the serdes of ``processors.logic.codec``. Keys are ``str`` (UTF-8 on the wire). Only the timers store needs
ordered iteration, and it is declared explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from processors.logic.account_table import AccountState
from processors.logic.codec import ACCOUNT_STATE_SERDE, INT_SERDE, JOB_STATE_SERDE, Serde
from processors.logic.join import JobState

V = TypeVar("V")


class KeyValueStore(Protocol[V]):
    def get(self, key: str) -> V | None: ...

    def put(self, key: str, value: V) -> None: ...

    def delete(self, key: str) -> None: ...


class OrderedKeyValueStore(KeyValueStore[V], Protocol[V]):
    def range(self, start: str, end: str) -> Iterable[tuple[str, V]]:
        """Entries with ``start <= key < end`` in ascending byte order of the UTF-8 keys (RocksDB order).

        The logic never writes to the store while iterating; it materializes the due entries first.
        """
        ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The four stores of one partition task; their field names are ``schemas.catalog.STORE_NAMES``."""

    dedupe: KeyValueStore[int]  # event_id -> first received_at (epoch µs)
    jobs: KeyValueStore[JobState]  # "<account_key>|<event_type>" -> join state
    accounts: KeyValueStore[AccountState]  # account_key -> AccountState
    timers: OrderedKeyValueStore[int]  # "<due:016d>|<kind>|<target>" -> due; "~clock" -> stream time


class InMemoryStore(Generic[V]):
    """Dict-backed store for tests and the simulator.

    With a ``serde`` it keeps bytes, like the real store, so every read decodes a fresh value: a test then
    catches state mutated after ``put`` and values that do not survive serialization.
    """

    def __init__(self, serde: Serde[V] | None = None) -> None:
        self._serde = serde
        self._data: dict[str, object] = {}

    def get(self, key: str) -> V | None:
        raw = self._data.get(key)
        if raw is None:
            return None
        if self._serde is not None:
            assert isinstance(raw, bytes)
            return self._serde.from_bytes(raw)
        return raw  # type: ignore[return-value]  # stored as V when there is no serde

    def put(self, key: str, value: V) -> None:
        self._data[key] = value if self._serde is None else self._serde.to_bytes(value)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def range(self, start: str, end: str) -> Iterator[tuple[str, V]]:
        for key in sorted(k for k in self._data if start <= k < end):
            value = self.get(key)
            assert value is not None
            yield key, value

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[str]:
        return sorted(self._data)

    def raw_items(self) -> dict[str, object]:
        """A copy of the stored values (bytes when a serde is set): the changelog, as a test sees it."""
        return dict(self._data)


def in_memory_stores(*, serialized: bool = False) -> Stores:
    """Fresh in-memory stores; ``serialized=True`` stores bytes through the real serdes."""
    if serialized:
        return Stores(
            dedupe=InMemoryStore(INT_SERDE),
            jobs=InMemoryStore(JOB_STATE_SERDE),
            accounts=InMemoryStore(ACCOUNT_STATE_SERDE),
            timers=InMemoryStore(INT_SERDE),
        )
    return Stores(InMemoryStore(), InMemoryStore(), InMemoryStore(), InMemoryStore())
