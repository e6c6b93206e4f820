"""The documentation's generated tables: one configuration table for every service, generated from the settings
classes themselves, and the state stores' table, generated from their declaration (`STORES`).

docs/configuration.md embeds the output of `pinwheel-connector config`, docs/processing.md that of
`pinwheel-connector config --stores`; tests fail when they drift apart. A bad setting is reported by
`common.settings.settings_error_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from pydantic_settings import BaseSettings

from common.settings import KafkaSettings, env_names
from common.topics import TopicSettings
from connector.local_kafka import LocalKafkaSettings
from connector.local_registry import LocalRegistrySettings
from connector.run import RunSettings
from gateway.settings import GatewaySettings
from operate.watchdog import WatchdogSettings
from operate.webhooks import PinwheelApiSettings
from processors.logic.stores import STORES, StoreSpec
from processors.readiness import ReadinessSettings
from processors.settings import ProcessorSettings
from processors.topics import changelog_topics
from schemas.settings import SchemaSettings
from simulator.settings import SimulatorSettings


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    return [
        ("Kafka connection (every service)", KafkaSettings),
        ("Gateway", GatewaySettings),
        ("Processors", ProcessorSettings),
        ("Readiness (processors and watchdog)", ReadinessSettings),
        ("Schemas and wire format", SchemaSettings),
        ("Topics (`pinwheel-connector topics`)", TopicSettings),
        ("Local broker (`make kafka`, tests, `make run`)", LocalKafkaSettings),
        ("Local schema registry (`pinwheel-connector registry`, tests)", LocalRegistrySettings),
        ("Simulator (`pinwheel-connector simulate`)", SimulatorSettings),
        ("`make run` (`pinwheel-connector run`)", RunSettings),
        ("Pinwheel API (`pinwheel-connector webhooks`, `pinwheel-connector watchdog`)", PinwheelApiSettings),
        ("Subscription watchdog (`pinwheel-connector watchdog`)", WatchdogSettings),
    ]


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    if field.is_required():
        return "(required)"
    if field.default_factory is not None:
        return "(computed)" if name == "cache_dir" else "(empty)"
    if field.default is None:
        return "(empty)"
    return f"`{field.default}`"


def configuration_markdown() -> str:
    parts = []
    for title, cls in settings_classes():
        rows = [f"#### {title}", "", "| variable | default | description |", "| --- | --- | --- |"]
        for name, env in env_names(cls).items():
            description = (cls.model_fields[name].description or "").replace("|", "\\|")
            rows.append(f"| `{env}` | {_default(cls, name)} | {description} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"


def store_table_markdown(stores: Sequence[StoreSpec] = STORES) -> str:
    """One row per store, one column per field of its spec (a new field is a new column), its changelog topic
    (as `processors.topics.changelog_topics` names it, the spec's `changelog` field resolved) after its name."""
    names = [field.name for field in fields(type(stores[0]) if stores else StoreSpec) if field.name != "changelog"]
    changelogs = changelog_topics("<application_id>")
    columns = [names[0], "changelog topic", *names[1:]]
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for spec in stores:
        cells = [_cell(getattr(spec, name)) for name in names]
        changelog = changelogs.get(spec.name)
        cells.insert(1, "(none)" if changelog is None else f"`{changelog}`")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "(none)"
    name = getattr(value, "name", None)
    text = name if not isinstance(value, str) and isinstance(name, str) else value  # a serde, an enum: its name
    return f"`{text}`".replace("|", "\\|")
