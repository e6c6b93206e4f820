"""The key-value stores the logic works through, declared once (``STORES``), and an in-memory implementation.

The runtime backs each store with RocksDB and, unless the store is declared ``logged=False``, a changelog
topic: its own (compacted, or for an ``expiring`` store a time-retained log of the entries each transaction put:
the dedupe store's), or the output topic its spec names (``changelog``: the accounts store's is the state
topic, restored through the pipeline's codec; the jobs store's is the same topic, each account's jobs in a header
of its state records); values cross the local boundary with the serdes of
``processors.logic.codec``. Keys are ``str`` (UTF-8 on the wire). Only the timers store needs ordered
iteration, and it is declared explicitly. The timers store is not logged: it is derived, on restore, from the
stores that own the timers (``processors.logic.timers``).

``STORES`` is the one declaration of the stores: the pipeline's store views, the changelog topics (their names
by ``schemas.catalog.changelog_topic`` or ``changelog``; one per logged store), their provisioning, restore,
``processor reset`` and the ACLs are all derived from it. ``Stores`` is its typed face for the logic; its
fields are checked against ``STORES`` at import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Generic, Protocol, TypeVar, cast, get_origin, get_type_hints, runtime_checkable

from processors.logic.account_table import AccountState
from processors.logic.codec import ACCOUNT_JOBS_SERDE, ACCOUNT_STATE_SERDE, INT_SERDE, Serde
from processors.logic.join import AccountJobs
from schemas.catalog import ACCOUNT_STATE_TOPIC

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One state store: its name (also its changelog's, ``<application_id>-<name>-changelog``, unless
    ``changelog`` names another topic), the serde of its values, whether the pipeline keeps decoded values
    between commits (``cached``: for costly values on hot keys), whether the logic iterates it in key order
    (``ordered``: ``range``) and whether it has a changelog (``logged``; an unlogged store lives in the local
    store only, committed with the task's transactions, and is derived again on restore from the logged stores:
    ``processors.logic.timers``).

    ``changelog``: an output topic of the pipeline that *is* the store's changelog (as Kafka Streams reuses a
    source topic): every write of the store is also a record the pipeline writes there, with the same key, in
    the task's partition, so nothing else is written for it; the restore reads it back through the pipeline's
    codec. None: the store has a changelog of its own, ``<application_id>-<name>-changelog``.

    ``changelog_header``: with ``changelog``, the store's values travel in this header of the topic's records,
    whose values are another store's (the jobs of an account ride on its state records): the same keys, and
    the header's value is the store's value in its serde's bytes. Every record of that topic carries the header
    when the store has a value for its key, so compaction keeps the latest with the record; a record without it
    says nothing of the store, a tombstone deletes the key in both.

    ``expiring``: the store's entries leave it by time only (the logic deletes each when its timer is due, and
    never otherwise). Its changelog is then a log of its own, ``<application_id>-<name>-log``, kept by time
    retention instead of compaction: each transaction writes one record holding every entry it put
    (``processors.runtime.entrylog``), and a delete writes nothing, so an entry costs a share of one record and
    no tombstone. A restore brings back every entry the log still holds; those already due are expired again
    by their derived timers."""

    name: str
    serde: Serde[Any]
    cached: bool = False
    ordered: bool = False
    logged: bool = True
    changelog: str | None = None
    changelog_header: str | None = None
    expiring: bool = False

    def __post_init__(self) -> None:
        if self.cached and self.ordered:
            raise ValueError(f"store {self.name}: a cached store cannot be iterated in order")
        if self.changelog is not None and not self.logged:
            raise ValueError(f"store {self.name}: an unlogged store has no changelog")
        if self.changelog_header is not None and self.changelog is None:
            raise ValueError(f"store {self.name}: a changelog header needs the topic it rides on (changelog)")
        if self.expiring and (self.changelog is not None or not self.logged):
            raise ValueError(f"store {self.name}: an expiring store is logged to a log of its own")


#: The header of the state topic's records that carries the account's jobs (``StoreSpec.changelog_header``).
JOBS_HEADER: Final = "pinwheel_jobs"

DEDUPE: Final = "dedupe"
JOBS: Final = "jobs"
ACCOUNTS: Final = "accounts"
TIMERS: Final = "timers"

STORES: tuple[StoreSpec, ...] = (
    # event_id -> first received_at (epoch µs); expired by its timers: logged one record per transaction
    StoreSpec(DEDUPE, INT_SERDE, expiring=True),
    # account_key -> {event_type: join state}; its changelog is the state topic, a header of the account's records
    StoreSpec(JOBS, ACCOUNT_JOBS_SERDE, cached=True, changelog=ACCOUNT_STATE_TOPIC, changelog_header=JOBS_HEADER),
    # account_key -> AccountState; its changelog is the contract's state topic (processors/pipeline.py writes it)
    StoreSpec(ACCOUNTS, ACCOUNT_STATE_SERDE, cached=True, changelog=ACCOUNT_STATE_TOPIC),
    # "<due:016d>|<kind>|<target>" -> due, derived from dedupe and jobs on restore; "~clock" -> stream time
    StoreSpec(TIMERS, INT_SERDE, ordered=True, logged=False),
)
"""The processors' state stores, declared once."""

STORE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STORES)
#: The stores with a changelog topic, and those kept (and derived on restore) locally only.
LOGGED_STORE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STORES if spec.logged)
LOCAL_STORE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STORES if not spec.logged)
#: The stores whose changelog is a time-retained log of the entries put (``StoreSpec.expiring``).
EXPIRING_STORE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STORES if spec.expiring)
#: The stores whose changelog is an output topic the pipeline writes (``StoreSpec.changelog``).
OUTPUT_LOGGED_STORE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STORES if spec.changelog is not None)
#: The output topics that are a store's changelog (the state topic), each once: several stores may share one.
OUTPUT_LOGGED_TOPICS: tuple[str, ...] = tuple(dict.fromkeys(spec.changelog for spec in STORES if spec.changelog))


class KeyValueStore(Protocol[V]):
    def get(self, key: str) -> V | None: ...

    def put(self, key: str, value: V) -> None: ...

    def delete(self, key: str) -> None: ...


@runtime_checkable
class OrderedKeyValueStore(KeyValueStore[V], Protocol[V]):
    def range(self, start: str, end: str) -> Iterable[tuple[str, V]]:
        """Entries with ``start <= key < end`` in ascending byte order of the UTF-8 keys (RocksDB order).

        The logic never writes to the store while iterating; it materializes the due entries first.
        """
        ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores of one partition task, typed for the logic: one field per ``STORES`` entry, in its order, an
    ``OrderedKeyValueStore`` where the spec is ``ordered`` (checked at import: ``_check_stores``)."""

    dedupe: KeyValueStore[int]
    jobs: KeyValueStore[AccountJobs]
    accounts: KeyValueStore[AccountState]
    timers: OrderedKeyValueStore[int]

    @classmethod
    def of(cls, stores: Mapping[str, KeyValueStore[Any]]) -> Stores:
        """The stores by name (``STORE_NAMES``, each exactly once), an ``OrderedKeyValueStore`` where the spec is
        ``ordered``."""
        if set(stores) != set(STORE_NAMES):
            raise ValueError(f"expected the stores {list(STORE_NAMES)}, got {sorted(stores)}")
        unordered = [
            spec.name for spec in STORES if spec.ordered and not isinstance(stores[spec.name], OrderedKeyValueStore)
        ]
        if unordered:
            raise TypeError(f"the stores {unordered} are declared ordered but have no range")
        # Keyed by name, the mapping cannot tell mypy which field is ordered: the check above does.
        return cls(**cast("Mapping[str, Any]", stores))


def _check_stores() -> None:
    hints = get_type_hints(Stores)
    declared = [(f.name, get_origin(hints[f.name]) is OrderedKeyValueStore) for f in fields(Stores)]
    if declared != [(spec.name, spec.ordered) for spec in STORES]:
        raise TypeError(f"Stores fields {declared} do not match STORES")


_check_stores()


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


def in_memory_stores(*, serialized: bool = False) -> Stores:
    """Fresh in-memory stores; ``serialized=True`` stores bytes through the real serdes."""
    return Stores.of({spec.name: InMemoryStore(spec.serde if serialized else None) for spec in STORES})
