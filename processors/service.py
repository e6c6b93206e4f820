"""`pinwheel-connector processor`: the account pipeline as a service, with health and metrics.

/livez answers while the loop runs; /readyz once every assigned partition is restored and running;
/metrics is Prometheus text (the endpoints of common/health.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from common import gc_tuning, logs
from common.backoff import Backoff
from common.health import ServiceReadiness, livez_route, metrics_route, readyz_route, registry_exposition
from common.isr_watch import IsrWatch
from common.kafka_access import TopicAccess, TopicOp, topic_access
from common.kafka_access import check_topics as check_access
from common.kafka_errors import KafkaMisconfigured, KafkaUnreachable, Kind, Verdict, classify_kafka_error
from common.kafka_wait import wait_for_kafka
from common.settings import KafkaSettings
from processors import pipeline
from processors.lag import LagMonitor
from processors.logic.readiness import ReadinessRule
from processors.logic.stores import (
    EXPIRING_STORE_NAMES,
    LOCAL_STORE_NAMES,
    OUTPUT_LOGGED_STORE_NAMES,
    OUTPUT_LOGGED_TOPICS,
)
from processors.pipeline import AccountPipeline, PipelineCounters, state_topic_translation, timers_derivation
from processors.readiness import ReadinessSettings
from processors.runtime.engine import Engine, EngineStats, MissingTopicsError
from processors.runtime.task import TaskContext, TaskProcessor
from processors.settings import ProcessorSettings
from processors.topics import changelog_topics, entry_log_topics
from schemas import catalog
from schemas.catalog import OUTPUT_TOPICS
from schemas.codec import Codec, build_codec, keep_registered
from schemas.confluent import RegistryError, RegistryUnavailable
from schemas.settings import SchemaSettings
from schemas.topics import DEADLETTER_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES

log = logging.getLogger("processors")


MISSING_TOPICS_HINT = (
    "create them with `pinwheel-connector topics create` "
    "(run with the same PROCESSOR_APPLICATION_ID, which names the changelog topics)"
)


def topic_needs(settings: ProcessorSettings) -> dict[str, tuple[TopicOp, ...]]:
    """Every topic the account pipeline uses and what it does with it: reads the families, restores (reads) and
    writes the changelogs, writes the outputs (DescribeConfigs, for /readyz's min-ISR watch, is not required)."""
    needs: dict[str, tuple[TopicOp, ...]] = {
        **dict.fromkeys(catalog.FAMILY_TOPICS.values(), (TopicOp.READ,)),
        **dict.fromkeys(OUTPUT_TOPICS, (TopicOp.WRITE,)),
    }
    for changelog in changelog_topics(settings.application_id).values():  # the state topic among them
        needs[changelog] = (TopicOp.READ, TopicOp.WRITE)
    return needs


async def check_topics(settings: ProcessorSettings, kafka: KafkaSettings) -> None:
    """Raise MissingTopicsError naming every missing topic (a run without them only logs errors forever), and
    KafkaMisconfigured naming a topic the principal may not describe, read or write as the pipeline must:
    such a run would fail at its first commit, after minutes of restoring, or hide the topic as "missing";
    KafkaMisconfigured too when the state topic is not partitioned as the family topics (`partition_mismatch`), or
    when a store's time-retained log keeps less than the store needs (`log_retention_refusal`; checked where the
    principal may describe the topic's configuration)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id_prefix}-processor-check")
    access: Mapping[str, TopicAccess] = {}
    logs: dict[str, dict[str, str | None]] = {}
    try:
        await admin.start()
        missing = await check_access(admin, topic_needs(settings))
        if not missing:
            access = await topic_access(admin, [*catalog.FAMILY_TOPICS.values(), *OUTPUT_LOGGED_TOPICS])
            logs = await _topic_configs(admin, entry_log_topics(settings.application_id))
    finally:
        await admin.close()
    if missing:
        raise MissingTopicsError(missing, MISSING_TOPICS_HINT)
    if refusal := partition_mismatch({name: a.partitions for name, a in access.items()}):
        raise KafkaMisconfigured(refusal)
    for topic, configs in logs.items():
        if refusal := log_retention_refusal(topic, configs, settings.dedupe_retention_h):
            raise KafkaMisconfigured(refusal)


async def _topic_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str | None]]:
    """Topic -> its cleanup.policy and retention.ms, for the topics whose configuration the principal may read."""
    if not topics:
        return {}
    wanted = {"cleanup.policy": None, "retention.ms": None}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(wanted)) for name in topics]
    )
    found: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for resource in response.resources:  # (error_code, error_message, type, name, entries)
            if resource[0] == 0:
                found[resource[3]] = {entry[0]: entry[1] for entry in resource[4] if entry[0] in wanted}
            else:
                log.warning("topic configuration not readable", extra={"topic": resource[3], "error": resource[0]})
    return found


def log_retention_refusal(topic: str, configs: Mapping[str, str | None], dedupe_retention_h: float) -> str | None:
    """Why the dedupe store's log (`StoreSpec.expiring`) cannot back it, or None: the log must keep every record
    at least as long as the store keeps an entry (else a restore forgets event ids still remembered, and lets
    their duplicates through), and never compact it (its records have no key)."""
    policy = configs.get("cleanup.policy") or "delete"
    if "compact" in policy.split(","):
        return f"{topic} has cleanup.policy={policy}: it is a log kept by time, set cleanup.policy=delete"
    retention = configs.get("retention.ms")
    if retention is None or int(retention) < 0:
        return None
    if int(retention) < dedupe_retention_h * 3_600_000:
        return (
            f"{topic} keeps records for retention.ms={retention} ({int(retention) / 3_600_000:g} h), less than "
            f"PROCESSOR_DEDUPE_RETENTION_H ({dedupe_retention_h:g} h): raise its retention.ms (or "
            "TOPICS_RETENTION_DAYS when creating it), or lower PROCESSOR_DEDUPE_RETENTION_H"
        )
    return None


def partition_mismatch(partitions: Mapping[str, int]) -> str | None:
    """Why the pipeline cannot run on these topics (name -> partition count), or None: a store's changelog that
    is an output topic (the state topic) must have the family topics' partition count, since partition p of it is
    what the restore of task p reads. A topic the connector did not create (a user's, pre-created) may differ."""
    families = {name: partitions[name] for name in catalog.FAMILY_TOPICS.values() if name in partitions}
    if not families:
        return None
    family, count = max(families.items(), key=lambda item: item[1])
    for topic in OUTPUT_LOGGED_TOPICS:
        if topic in partitions and partitions[topic] != count:
            return (
                f"{topic} has {partitions[topic]} partitions but {family} has {count}: the accounts store is "
                f"restored from partition p of {topic} for input partition p, so both must have the same count "
                f"(recreate {topic} with {count} partitions, or the family topics with {partitions[topic]})"
            )
    return None


def build_engine(
    settings: ProcessorSettings,
    kafka: KafkaSettings,
    schema: SchemaSettings,
    counters: PipelineCounters,
    codec: Codec | None = None,
    readiness: ReadinessRule | None = None,
) -> Engine:
    """The engine of the account pipeline; ``readiness``: the rule judged (``READINESS_RULE``), None for none."""
    codec = codec or build_codec(schema)
    config = settings.logic_config(readiness)

    def factory(ctx: TaskContext) -> TaskProcessor:
        return AccountPipeline(ctx, codec, config, counters)

    async def schemas_ready(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        # With a registry: our writer ids first (at start), then the writer schemas of the records about to
        # be decoded. A registry outage raises RegistryUnavailable: the engine puts the batch back.
        await codec.prepare(OUTPUT_TOPICS)
        await codec.resolve(record.value for record in records)

    return Engine(
        settings,
        kafka,
        list(catalog.FAMILY_TOPICS.values()),
        changelog_topics(settings.application_id),
        factory,
        output_topics=OUTPUT_TOPICS,
        missing_topics_hint=MISSING_TOPICS_HINT,
        before_batch=schemas_ready if codec.registry is not None else None,
        retriable=(RegistryUnavailable,),
        max_fetch_bytes=MAX_MESSAGE_BYTES,
        max_request_bytes=DEADLETTER_MAX_MESSAGE_BYTES,
        local_stores=LOCAL_STORE_NAMES,
        derive=timers_derivation(config),
        output_logged=OUTPUT_LOGGED_STORE_NAMES,
        translate=state_topic_translation(codec),
        expiring=EXPIRING_STORE_NAMES,
    )


def hot_path_compiled() -> bool:
    """Whether the pipeline runs as mypyc's extensions (setup.py) rather than as its Python source."""
    return not (pipeline.__file__ or "").endswith(".py")


class _EngineCollector(Collector):
    """Reads the engine's and pipeline's counters at scrape time (nothing on the hot path)."""

    def __init__(self, engine: Engine, counters: PipelineCounters, lag: LagMonitor | None = None) -> None:
        self.engine = engine
        self.counters = counters
        self.lag = lag

    def collect(self):  # type: ignore[no-untyped-def]
        stats = self.engine.stats
        for name, help_text, value in (
            ("processor_records_processed", "Input records processed (including later-aborted work).", stats.processed),
            ("processor_records_committed", "Input records covered by committed transactions.", stats.committed),
            ("processor_commits", "Committed task transactions.", stats.commits),
            ("processor_task_restarts", "Tasks rebuilt from Kafka after a failed commit.", stats.task_restarts),
            ("processor_restored_records", "Changelog records restored into local stores.", stats.restored_records),
            ("processor_rebalances", "Consumer group rebalances seen.", stats.rebalances),
            (
                "processor_batch_retries",
                "Batches put back (transaction abandoned, retried after a back-off) because a dependency such as "
                "the schema registry failed.",
                stats.retries,
            ),
            (
                "processor_partitions_passed_over",
                "Times a task went on without an input partition that had nothing fetched for "
                "PROCESSOR_MAX_TASK_IDLE_MS (its other partitions then go out of event-time order).",
                stats.passed_over,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        outputs = CounterMetricFamily("processor_outputs", "Records emitted, by kind.", labels=["kind"])
        for kind, count in self.counters.outputs.items():
            outputs.add_metric([kind], count)
        yield outputs
        dead = CounterMetricFamily("processor_dead_letters", "Dead letters, by reason.", labels=["reason"])
        for reason, count in self.counters.dead_letters.items():
            dead.add_metric([reason], count)
        yield dead
        logic = CounterMetricFamily("processor_logic_events", "Logic outcomes (duplicate, ...).", labels=["kind"])
        for kind, count in self.counters.logic.items():
            logic.add_metric([kind], count)
        yield logic
        yield GaugeMetricFamily(
            "processor_waiting_on_dependency",
            "1 while work waits on a failed dependency (Kafka unreachable, the schema registry), else 0.",
            value=int(stats.waiting is not None),
        )
        yield GaugeMetricFamily("processor_assigned_partitions", "Partitions assigned.", value=len(stats.assigned))
        yield GaugeMetricFamily(
            "processor_compiled",
            "1 when the pipeline runs compiled by mypyc (setup.py), 0 when it runs as Python source (slower).",
            value=int(hot_path_compiled()),
        )
        yield GaugeMetricFamily(
            "processor_ready_partitions", "Partitions restored and running.", value=len(stats.ready)
        )
        if self.lag is not None:
            yield from _lag_metrics(self.lag)


def _lag_metrics(monitor: LagMonitor) -> Iterator[GaugeMetricFamily]:
    labels = ["topic", "partition"]
    lag = GaugeMetricFamily(
        "processor_consumer_lag", "Records of an assigned input partition after the committed offset.", labels=labels
    )
    age = GaugeMetricFamily(
        "processor_oldest_unprocessed_age_seconds",
        "Age (since the gateway received it) of the first record after the committed offset; 0 when caught up.",
        labels=labels,
    )
    for item in monitor.lags:
        lag.add_metric([item.topic, str(item.partition)], item.lag)
        age.add_metric([item.topic, str(item.partition)], item.oldest_age_s)
    yield lag
    yield age
    sampled = 0.0 if monitor.sampled_at is None else monitor.clock() - monitor.sampled_at
    yield GaugeMetricFamily(
        "processor_lag_sample_age_seconds", "Time since the lag figures were last measured.", value=sampled
    )


def output_topics(engine: Engine) -> list[str]:
    """Every topic the processors write: their outputs and their changelogs."""
    return list(dict.fromkeys([*OUTPUT_TOPICS, *engine.changelogs.values()]))


def not_ready_reason(stats: EngineStats) -> str:
    """Why /readyz says not ready: the dependency waited on (Kafka unreachable, the registry), else the partitions."""
    if stats.waiting is not None:
        return stats.waiting
    if not stats.assigned:
        return "no partitions assigned yet (joining the consumer group)"
    return f"partitions restoring: {sorted(stats.assigned - stats.ready)}"


def service_readiness(stats: EngineStats, min_isr: Mapping[str, object]) -> ServiceReadiness:
    """Ready once every assigned partition is restored and running; the details name the partitions, the min-ISR
    watch's answer and the dependency waited on."""
    ready = bool(stats.assigned) and stats.assigned <= stats.ready
    details: dict[str, object] = {"assigned": sorted(stats.assigned), "running": sorted(stats.ready), **min_isr}
    if stats.waiting is not None:
        details["waiting_on"] = stats.waiting
    return ServiceReadiness([] if ready else [not_ready_reason(stats)], details)


def health_app(engine: Engine, counters: PipelineCounters, started: float, lag: LagMonitor | None = None) -> FastAPI:
    registry = CollectorRegistry()
    registry.register(_EngineCollector(engine, counters, lag))
    # /readyz says when a topic the processors write is under min.insync.replicas (checked in the background)
    isr = IsrWatch(engine.kafka, output_topics(engine), metric_prefix="processor", registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await isr.start()
        try:
            yield
        finally:
            await isr.stop()

    app = FastAPI(title="pinwheel processor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.router.routes.extend(
        [
            livez_route(started),
            readyz_route(lambda: service_readiness(engine.stats, isr.readiness())),
            metrics_route(registry_exposition(registry)),
        ]
    )
    return app


async def serve(
    settings: ProcessorSettings,
    kafka: KafkaSettings | None = None,
    schema: SchemaSettings | None = None,
    stop: asyncio.Event | None = None,
    readiness: ReadinessSettings | None = None,
) -> None:
    kafka = kafka or KafkaSettings()
    counters = PipelineCounters()
    schema = schema or SchemaSettings()
    rule = (readiness or ReadinessSettings()).parsed()
    codec = build_codec(schema)
    engine = build_engine(settings, kafka, schema, counters, codec, rule)
    watcher = asyncio.create_task(keep_registered(codec, schema.registry_recheck_s))
    try:
        await serve_engine(
            settings, engine, counters, stop or asyncio.Event(), before=lambda: check_topics(settings, kafka)
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await codec.close()


async def run_when_reachable(
    engine: Engine, stop: asyncio.Event, before: Callable[[], Awaitable[None]] | None = None
) -> None:
    """`before()` then `engine.run(stop)`, each time Kafka answers: at start, and again whenever a run ends because
    the cluster became unreachable. While waiting, `engine.stats.waiting` says why (/readyz).

    Raises KafkaUnreachable after `KAFKA_STARTUP_TIMEOUT_S` of waiting, KafkaMisconfigured as soon as the cluster
    refuses us (authentication, authorization, TLS); anything else propagates as it is."""

    def waiting(verdict: Verdict) -> None:
        engine.stats.waiting = verdict.reason

    backoff = Backoff()  # between runs that fail although the probe passes (metadata not served yet, ...)
    while not stop.is_set():
        if not await wait_for_kafka(engine.kafka, timeout_s=engine.kafka.startup_timeout_s, stop=stop, on_wait=waiting):
            return
        engine.stats.waiting = None
        started = time.monotonic()
        try:
            if before is not None:
                await before()
            await engine.run(stop)
            return
        except KafkaMisconfigured:  # its line names what was refused
            raise
        except Exception as exc:
            verdict = classify_kafka_error(exc)
            if verdict.kind is Kind.MISCONFIGURED:
                raise KafkaMisconfigured(f"kafka: {verdict.reason}") from None
            if verdict.kind is Kind.OTHER:
                raise
            engine.stats.waiting = verdict.reason
            if time.monotonic() - started > backoff.cap_s:
                backoff.attempts = 0
            delay = backoff.next_delay()
            log.warning("kafka lost: waiting for it", extra={"error": verdict.reason, "retry_in_s": round(delay, 2)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def serve_engine(
    settings: ProcessorSettings,
    engine: Engine,
    counters: PipelineCounters,
    stop: asyncio.Event,
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `engine` until `stop`, with the health and metrics endpoints from the start: while the processor waits
    for Kafka (`run_when_reachable`), /readyz says so."""
    server = None
    health_task = None
    lag_task = None
    lag_stop = asyncio.Event()
    if settings.health_port:
        lag = LagMonitor(engine.kafka, settings.application_id, engine.input_topics, lambda: set(engine.stats.assigned))
        lag_task = asyncio.create_task(lag.run(lag_stop))
        config = uvicorn.Config(
            health_app(engine, counters, time.monotonic(), lag),
            host=settings.health_host,
            port=settings.health_port,
            log_config=None,  # logging is configured already; a dictConfig here would reset our loggers
            access_log=False,
        )
        server = uvicorn.Server(config)
        # uvicorn captures SIGINT/SIGTERM while it serves and re-raises them when it stops, which
        # reaches the handlers `run_until_signal` installed: the engine then commits and stops.
        health_task = asyncio.create_task(server.serve())
    log.info(
        "processor starting",
        extra={
            "application_id": settings.application_id,
            "instance": settings.instance_id,
            "kafka": engine.kafka.describe(),
            "compiled": hot_path_compiled(),
        },
    )
    try:
        await run_when_reachable(engine, stop, before)
    finally:
        lag_stop.set()
        if lag_task is not None:
            with contextlib.suppress(Exception):
                await lag_task
        if server is not None and health_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await health_task
        log.info("processor stopped", extra={"committed": engine.stats.committed})


def run_until_signal(settings: ProcessorSettings, serve_until: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Logging configured, then `serve_until(stop)` with `stop` set by SIGINT/SIGTERM."""
    logs.configure(settings.log_level, ["processors"])
    gc_tuning.tune_for_throughput()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(stop)

    asyncio.run(main())


def run(settings: ProcessorSettings | None = None) -> None:
    """Run until SIGINT/SIGTERM; the open transactions are committed before exit.

    Every end is one line: a refusal by the cluster or the registry exits 2 (fix the configuration), Kafka
    unreachable for `KAFKA_STARTUP_TIMEOUT_S` exits 1, a crash is one JSON log record and exits 1.
    MissingTopicsError and a bad setting (ValidationError) are the caller's to report."""
    config = settings or ProcessorSettings()
    readiness = ReadinessSettings()  # a bad READINESS_RULE exits 2 before anything starts
    try:
        run_until_signal(config, lambda stop: serve(config, stop=stop, readiness=readiness))
    except RegistryError as exc:  # lookup-only and a schema missing, or a schema the registry refuses
        print(f"processor: schema registry: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KafkaMisconfigured as exc:
        print(f"processor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KafkaUnreachable as exc:
        print(f"processor: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except (MissingTopicsError, ValidationError):  # the caller's to report (one line; a bad setting exits 2)
        raise
    except Exception as exc:
        log.critical("processor crashed", exc_info=exc)
        raise SystemExit(1) from None
