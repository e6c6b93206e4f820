"""Every topic the connector reads or writes: the contract's (configured in `schemas/topics.py`) and the
processors' changelogs, one per logged store of `processors.logic.stores.STORES`: the store's own, named by
`schemas.catalog.changelog_topic`, or the contract topic its spec names (`StoreSpec.changelog`: the accounts
store's is `pinwheel.account_state.v1`, provisioned, shared and written as a contract topic, never as a changelog
of the application). (An unlogged store has none: the timers, derived on restore. A deployment from before they
were unlogged keeps a `<application_id>-timers-changelog` topic that nothing reads or writes any more; one from
before the accounts store restored from the state topic keeps a `<application_id>-accounts-changelog`, likewise.)
"""

from __future__ import annotations

from common.topics import TopicSettings, TopicSpec
from processors.logic.stores import STORES
from schemas.catalog import changelog_topic
from schemas.topics import topic_specs


def changelog_topics(application_id: str) -> dict[str, str]:
    """Store name → its changelog topic, for every logged store of `STORES` (in its order): what a restore reads."""
    return {spec.name: spec.changelog or changelog_topic(application_id, spec.name) for spec in STORES if spec.logged}


def own_changelog_topics(application_id: str) -> dict[str, str]:
    """Store name → its changelog topic, for the logged stores whose changelog is the application's own (not a
    contract topic): what is provisioned, granted and deleted (`processor reset`) as the application's."""
    own = (spec.name for spec in STORES if spec.logged and spec.changelog is None)
    return {name: changelog_topic(application_id, name) for name in own}


def all_topics(settings: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the connector reads or writes (the changelogs of `settings.processor_application_id`)."""
    s = settings or TopicSettings()
    return topic_specs(s, own_changelog_topics(s.processor_application_id).values())
