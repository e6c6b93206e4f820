"""The Avro schemas shipped in `schemas/avro/`: every kept version, parsed once, with fingerprints.

Files are named `<RecordName>.v<N>.avsc`; each is self-contained (named types defined inline at first
use) so an old version never changes meaning when a shared type evolves. The highest N is the current
(reader and writer) schema; older versions stay for decoding old data and for the evolution test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.catalog import (
    ACCOUNT_READINESS_TOPIC,
    ACCOUNT_STATE_TOPIC,
    ACCOUNT_UPDATES_TOPIC,
    DEADLETTER_TOPIC,
    FAMILY_TOPICS,
    Family,
)

_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")

FAMILY_RECORDS: Mapping[Family, str] = MappingProxyType(
    {
        Family.ACCOUNT: "pinwheel.AccountEvent",
        Family.DIRECT_DEPOSIT: "pinwheel.DirectDepositEvent",
        Family.INCOME_EMPLOYMENT: "pinwheel.IncomeEmploymentEvent",
        Family.PAYSTUBS: "pinwheel.PaystubsEvent",
        Family.SHIFTS: "pinwheel.ShiftsEvent",
        Family.OTHER: "pinwheel.OtherEvent",
    }
)
TOPIC_RECORDS: Mapping[str, str] = MappingProxyType(
    {
        **{FAMILY_TOPICS[family]: record for family, record in FAMILY_RECORDS.items()},
        ACCOUNT_UPDATES_TOPIC: "pinwheel.AccountUpdate",
        ACCOUNT_STATE_TOPIC: "pinwheel.AccountState",
        ACCOUNT_READINESS_TOPIC: "pinwheel.AccountReadiness",
        DEADLETTER_TOPIC: "pinwheel.DeadLetter",
    }
)
"""Topic → full name of its value record."""


def parse(schema: Any) -> dict[str, Any]:
    # A fresh named-type table per schema: two versions may define the same name differently.
    return cast(dict[str, Any], parse_schema(schema, named_schemas={}))


def crc64_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian as single-object encoding writes it."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    fullname: str
    version: int
    file_name: str
    text: str = field(repr=False)
    """The .avsc file text (what is registered with a schema registry)."""
    raw: dict[str, Any] = field(repr=False, compare=False)
    parsed: dict[str, Any] = field(repr=False, compare=False)
    fingerprint: bytes = field(repr=False)


class SchemaStore:
    def __init__(self, versions: list[SchemaVersion]):
        by_name: dict[str, list[SchemaVersion]] = {}
        for item in sorted(versions, key=lambda v: (v.fullname, v.version)):
            by_name.setdefault(item.fullname, []).append(item)
        self._by_name = by_name
        self._by_fingerprint = {item.fingerprint: item for item in versions}

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, fullname: str) -> list[SchemaVersion]:
        """All kept versions, oldest first."""
        return list(self._by_name[fullname])

    def current(self, fullname: str) -> SchemaVersion:
        return self._by_name[fullname][-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

    def all_versions(self) -> list[SchemaVersion]:
        return [item for name in self.names for item in self._by_name[name]]


def load_version(file_name: str, text: str) -> SchemaVersion:
    match = _FILE_NAME.match(file_name)
    if match is None:
        raise ValueError(f"{file_name}: expected <RecordName>.v<N>.avsc")
    raw = json.loads(text)
    parsed = parse(raw)
    fullname = parsed["name"]
    if fullname.rsplit(".", 1)[-1] != match["name"]:
        raise ValueError(f"{file_name}: file name does not match record {fullname}")
    return SchemaVersion(
        fullname=fullname,
        version=int(match["version"]),
        file_name=file_name,
        text=text,
        raw=raw,
        parsed=parsed,
        fingerprint=crc64_fingerprint(parsed),
    )


@cache
def load_store() -> SchemaStore:
    """Every .avsc shipped as package data (read once per process)."""
    root = resources.files("schemas") / "avro"
    versions = [
        load_version(entry.name, entry.read_text(encoding="utf-8"))
        for entry in root.iterdir()
        if entry.name.endswith(".avsc")
    ]
    return SchemaStore(versions)
