"""Every topic the connector reads or writes: the contract's (configured in `schemas/topics.py`) and the
processors' changelogs, one per logged store of `processors.logic.stores.STORES`, named by
`schemas.catalog.changelog_topic`. (An unlogged store has none: the timers, derived on restore. A deployment from
before they were unlogged keeps a `<application_id>-timers-changelog` topic that nothing reads or writes any more.)
"""

from __future__ import annotations

from common.topics import TopicSettings, TopicSpec
from processors.logic.stores import STORES
from schemas.catalog import changelog_topic
from schemas.topics import topic_specs


def changelog_topics(application_id: str) -> dict[str, str]:
    """Store name → its changelog topic, for every logged store of `STORES` (in its order)."""
    return {spec.name: changelog_topic(application_id, spec.name) for spec in STORES if spec.logged}


def all_topics(settings: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the connector reads or writes (the changelogs of `settings.processor_application_id`)."""
    s = settings or TopicSettings()
    return topic_specs(s, changelog_topics(s.processor_application_id).values())
