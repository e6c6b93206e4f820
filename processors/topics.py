"""Every topic the connector reads or writes: the contract's (configured in `schemas/topics.py`) and the
processors' changelogs, one per logged store of `processors.logic.stores.STORES`: the store's own, named by
`schemas.catalog.changelog_topic` (an expiring store's is a log kept by time: `entry_log_topic`), or the contract
topic its spec names (`StoreSpec.changelog`: the accounts store's is `pinwheel.account_state.v1`, provisioned,
shared and written as a contract topic, never as a changelog of the application). (An unlogged store has none: the
timers, derived on restore. A deployment from before they were unlogged keeps a `<application_id>-timers-changelog`
topic that nothing reads or writes any more; one from before the accounts store restored from the state topic
keeps a `<application_id>-accounts-changelog`, and one from before the dedupe store's log a
`<application_id>-dedupe-changelog` (`processor migrate` carries its entries over), likewise.)
"""

from __future__ import annotations

from common.topics import TopicSettings, TopicSpec
from processors.logic.stores import STORES
from schemas.catalog import changelog_topic, entry_log_topic
from schemas.topics import topic_specs


def changelog_topics(application_id: str) -> dict[str, str]:
    """Store name → its changelog topic, for every logged store of `STORES` (in its order): what a restore reads."""
    return {
        spec.name: spec.changelog or (entry_log_topic if spec.expiring else changelog_topic)(application_id, spec.name)
        for spec in STORES
        if spec.logged
    }


def own_changelog_topics(application_id: str) -> dict[str, str]:
    """Store name → its changelog topic, for the logged stores whose changelog is the application's own (not a
    contract topic): what is provisioned, granted and deleted (`processor reset`) as the application's."""
    own = {spec.name for spec in STORES if spec.logged and spec.changelog is None}
    return {name: topic for name, topic in changelog_topics(application_id).items() if name in own}


def entry_log_topics(application_id: str) -> list[str]:
    """The application's own changelogs kept by time retention (`StoreSpec.expiring`), not by compaction."""
    return [entry_log_topic(application_id, spec.name) for spec in STORES if spec.expiring]


def all_topics(settings: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the connector reads or writes (the changelogs of `settings.processor_application_id`)."""
    s = settings or TopicSettings()
    app = s.processor_application_id
    logs = entry_log_topics(app)
    compacted = [topic for topic in own_changelog_topics(app).values() if topic not in logs]
    return topic_specs(s, compacted, logs)
