"""One configuration table for every service, generated from the settings classes themselves, and one
way to report a bad setting: the environment variable and the reason.

The README embeds the output of `pinwheel-connector config`; a test fails when the two drift apart.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from connector.settings import KafkaSettings, LocalKafkaSettings
from connector.topics import TopicSettings


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    from connector.local_registry import LocalRegistrySettings
    from connector.run import RunSettings
    from gateway.settings import GatewaySettings
    from processors.runtime.settings import ProcessorSettings
    from schemas.settings import SchemaSettings
    from simulator.settings import SimulatorSettings
    from simulator.webhooks import PinwheelApiSettings

    return [
        ("Kafka connection (every service)", KafkaSettings),
        ("Gateway", GatewaySettings),
        ("Processors", ProcessorSettings),
        ("Schemas and wire format", SchemaSettings),
        ("Topics (`pinwheel-connector topics`)", TopicSettings),
        ("Local broker (`make kafka`, tests, `make run`)", LocalKafkaSettings),
        ("Local schema registry (`pinwheel-connector registry`, tests)", LocalRegistrySettings),
        ("Simulator (`pinwheel-connector simulate`)", SimulatorSettings),
        ("`make run` (`pinwheel-connector run`)", RunSettings),
        ("Pinwheel API (`pinwheel-connector webhooks`)", PinwheelApiSettings),
    ]


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> the environment variable that sets it."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names[name] = alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper()
    return names


def settings_problems(exc: ValidationError) -> list[str] | None:
    """`VARIABLE: reason` per problem when `exc` comes from one of the settings classes, else None.

    The input values are left out: they may be secrets.
    """
    classes = {cls.__name__: cls for _, cls in settings_classes()}
    cls = classes.get(exc.title)
    if cls is None:
        return None
    names = env_names(cls)
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{names.get(field, field.upper())}: {error['msg']}")
    return problems


def settings_error_text(exc: ValidationError) -> str | None:
    """The one message every command prints for invalid settings (None: not a settings error)."""
    problems = settings_problems(exc)
    return None if problems is None else "\n  ".join(["invalid configuration:", *problems])


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
