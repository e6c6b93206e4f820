"""Are the topics a service writes under `min.insync.replicas`? A cheap background check for /readyz.

A partition with fewer in-sync replicas than its topic's `min.insync.replicas` refuses acks=all writes
and transactional commits (NotEnoughReplicas): the gateway then spools or answers 503, the processors
stall. `IsrWatch` asks the cluster every `interval_s` seconds in the background (one metadata request,
and one describe_configs for the topics' `min.insync.replicas`), never per request, and keeps the
answer for /readyz (`readiness()`) and a Prometheus gauge `<prefix>_partitions_under_min_isr{topic}`.

The metadata alone can lie: with most of a KRaft cluster down, the survivor answers from its last image
(no controller quorum is left to record a shrunk ISR or a new leader), and even with a quorum an ISR
shrinks only after the broker's session times out. So each check also asks every broker that leads or
follows a partition we write for its API versions, with a short deadline (`PROBE_TIMEOUT_S`): a replica
whose broker does not answer is not counted as in sync, a leader that does not answer is no leader, and
/readyz names those brokers. Two of three nodes killed: "under" within one check, not ~30 s of "ok".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.admin import ApiVersionRequest
from prometheus_client import CollectorRegistry, Gauge

from common.kafka_access import TOPIC_AUTHORIZATION_FAILED, TopicOp, not_authorized
from common.kafka_errors import Kind, classify_kafka_error
from common.settings import KafkaSettings
from common.topics import MIN_ISR

log = logging.getLogger("common.isr_watch")

#: How long a broker has to answer a check's ApiVersions request before its replicas count as out of sync.
PROBE_TIMEOUT_S = 3.0


def under_min_isr(
    described: Sequence[Mapping[str, Any]], min_isr: Mapping[str, int], silent: frozenset[int] = frozenset()
) -> dict[str, list[int]]:
    """Topic → its partitions with fewer in-sync replicas than the topic's min.insync.replicas (or no leader),
    not counting the replicas on the `silent` brokers (those that did not answer: the metadata may be stale)."""
    under: dict[str, list[int]] = {}
    for topic in described:
        name = topic["topic"]
        if name not in min_isr or topic["error_code"] != 0:
            continue
        short = sorted(
            p["partition"]
            for p in topic["partitions"]
            if p["leader"] < 0 or p["leader"] in silent or len(set(p["isr"]) - silent) < min_isr[name]
        )
        if short:
            under[name] = short
    return under


def replica_brokers(described: Sequence[Mapping[str, Any]]) -> set[int]:
    """The brokers that lead or follow (in sync) a partition of the described topics."""
    return {
        node
        for topic in described
        if topic["error_code"] == 0
        for p in topic["partitions"]
        for node in (p["leader"], *p["isr"])
        if node >= 0
    }


class IsrWatch:
    """The latest answer to "which partitions I write are under min ISR?", refreshed in the background."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        metric_prefix: str,
        registry: CollectorRegistry | None = None,
        interval_s: float = 10.0,
    ) -> None:
        self.kafka = kafka
        self.topics = list(topics)
        self.interval_s = interval_s
        self.under: dict[str, list[int]] = {}
        self.min_isr: dict[str, int] = {}
        self.error: str | None = "not checked yet"
        self.silent: frozenset[int] = frozenset()  # brokers of our replicas that did not answer the last check
        self.checked_at: float | None = None
        self.gauge = Gauge(
            f"{metric_prefix}_partitions_under_min_isr",
            "Partitions of a topic this service writes with fewer in-sync replicas than min.insync.replicas.",
            ["topic"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="isr-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_admin()

    def readiness(self) -> dict[str, Any]:
        """Fields for /readyz: `min_isr` is ok | under | unknown, with the partitions and a reason."""
        if self.error is not None:
            return {"min_isr": "unknown", "min_isr_reason": f"cannot check the in-sync replicas: {self.error}"}
        if not self.under:
            return {"min_isr": "ok"}
        listing = "; ".join(
            f"{topic} partitions {parts} (min.insync.replicas {self.min_isr.get(topic)})"
            for topic, parts in sorted(self.under.items())
        )
        silent = f" (brokers {sorted(self.silent)} do not answer)" if self.silent else ""
        return {
            "min_isr": "under",
            "under_min_isr": self.under,
            "min_isr_reason": f"fewer in-sync replicas than min.insync.replicas{silent}, writes are refused: {listing}",
        }

    async def check(self) -> dict[str, list[int]]:
        """One check now (the background loop calls it); raises when the cluster does not answer."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self.kafka.client_kwargs(), client_id=f"{self.kafka.client_id_prefix}-isr")
            try:
                await admin.start()
            except BaseException:
                await admin.close()  # a failed start leaves the client's connections to close
                raise
            self._admin = admin
        described = await self._admin.describe_topics(self.topics)
        present = [t["topic"] for t in described if t["error_code"] == 0]
        # A topic the principal may not describe, or whose configuration it may not read, is not checked: said so.
        problems = []
        if hidden := sorted(t["topic"] for t in described if t["error_code"] == TOPIC_AUTHORIZATION_FAILED):
            problems.append(str(not_authorized(TopicOp.DESCRIBE.tool_name, "topic", hidden)))
        if set(present) - set(self.min_isr):  # configs change rarely: read them for topics not seen yet
            found, refused = await self._min_isr(present)
            self.min_isr |= found
            if refused:
                problems.append(str(not_authorized(TopicOp.DESCRIBE_CONFIGS.tool_name, "topic", refused)))
        brokers = sorted(replica_brokers(described))
        answers = await asyncio.gather(*(self._answers(node) for node in brokers))
        silent = frozenset(node for node, answered in zip(brokers, answers, strict=True) if not answered)
        under = under_min_isr(described, self.min_isr, silent)
        for topic in present:
            self.gauge.labels(topic=topic).set(len(under.get(topic, [])))
        if under != self.under or silent != self.silent:
            log.warning("partitions under min.insync.replicas" if under else "every partition back at min ISR",
                        extra={"under_min_isr": under, "silent_brokers": sorted(silent)})  # fmt: skip
        error = "; ".join(problems) or None
        if error is not None and error != self.error:
            log.warning("cannot check the in-sync replicas", extra={"error": error})
        self.under, self.silent, self.error, self.checked_at = under, silent, error, time.monotonic()
        return under

    async def _answers(self, node_id: int) -> bool:
        """The broker answers a request now (the cheapest: its API versions), within PROBE_TIMEOUT_S."""
        assert self._admin is not None
        client = self._admin._client
        timeout_s = min(PROBE_TIMEOUT_S, self.kafka.request_timeout_ms / 1000)
        try:
            await asyncio.wait_for(client.send(node_id, ApiVersionRequest()), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def _min_isr(self, topics: list[str]) -> tuple[dict[str, int], list[str]]:
        """Topic -> its min.insync.replicas, and the topics whose configuration the principal may not read."""
        assert self._admin is not None
        responses = await self._admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={MIN_ISR: None}) for name in topics]
        )
        found: dict[str, int] = {}
        refused: list[str] = []
        for response in responses:
            for resource in response.resources:  # (error_code, error_message, type, name, entries)
                if resource[0] == TOPIC_AUTHORIZATION_FAILED:
                    refused.append(resource[3])
                for entry in resource[4]:
                    if entry[0] == MIN_ISR and entry[1] is not None:
                        found[resource[3]] = int(entry[1])
        return found, sorted(refused)

    async def refresh(self) -> None:
        """One check; a failure (cluster unreachable, a node gone) leaves the answer unknown until the next."""
        try:
            await asyncio.wait_for(self.check(), self.interval_s + self.kafka.request_timeout_ms / 1000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = classify_kafka_error(exc)
            self.error = verdict.reason if verdict.kind is not Kind.OTHER else type(exc).__name__
            await self._close_admin()  # the next check starts from the bootstrap servers again

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
