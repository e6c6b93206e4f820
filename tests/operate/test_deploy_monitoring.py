"""deploy/: the Grafana dashboard and the Prometheus rules use only metrics the services really export.

Every PromQL expression is parsed (promql-parser) and its metric names collected; the real gateway and the
real processors run against the test broker, get traffic that makes their labelled series appear (a
delivery, a 401, a gateway dead letter, a processor dead letter), the subscription watchdog checks the local
fake of Pinwheel's API, and their /metrics output is scraped.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from common.ports import free_port
from operate.watchdog import WatchdogSettings, serve
from operate.webhooks import PinwheelApiSettings
from schemas import catalog
from tests.gateway.gateway_helpers import OTHER_SECRET, event_body, signed_headers
from tests.operate.ops_helpers import ROOT, App
from tests.operate.pinwheel_api_fake import API_SECRET, FakePinwheelApi

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pinwheel-connector.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMETHEUS_MADE = {"up"}  # series Prometheus itself writes for every scrape target


def rule_exprs() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_exprs() -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found[f"{panel['title']}/{target['refId']}"] = target["expr"]
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def metric_names(expr: str) -> set[str]:
    # Grafana's interval variables are not PromQL; any duration stands in for them.
    node = promql_parser.parse(re.sub(r"\$__(rate_interval|interval|range)", "5m", expr))
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.update([node.name] if node.name else [])
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")
        for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or ():
            walk(child)

    walk(node)
    return names


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported(text: str) -> set[str]:
    """Series names in a /metrics text: those with samples, and those its # TYPE lines declare (a labelled
    counter that has not counted anything yet, such as producer errors, has no sample)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ()))
    return names


def test_every_expression_parses_and_names_metrics() -> None:
    exprs = {**rule_exprs(), **dashboard_exprs()}
    assert len(rule_exprs()) >= 10
    assert len(dashboard_exprs()) >= 20
    for where, expr in exprs.items():
        assert metric_names(expr), where  # the walker finds the selectors (it would pass vacuously otherwise)
    assert metric_names('sum(rate(a_total{x="1"}[5m])) / on() {__name__="b"} > bool -c') == {"a_total", "b", "c"}


def test_every_alert_has_a_runbook_in_operations_md() -> None:
    rules = yaml.safe_load(RULES.read_text())
    text = OPERATIONS.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("#")
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            path, _, anchor = url.partition("#")
            assert path == "docs/operations.md", rule["alert"]
            assert anchor in anchors, (rule["alert"], anchor)
            assert rule["alert"] in text, rule["alert"]


async def test_dashboard_and_rules_use_only_exported_metrics(
    app: App, start_gateway: Any, tls_pair: tuple[Path, Path]
) -> None:
    used = set().union(*(metric_names(e) for e in [*rule_exprs().values(), *dashboard_exprs().values()]))
    gateway = start_gateway()
    health_port, watchdog_port = free_port(), free_port()
    api = FakePinwheelApi().start()
    hook_url = "https://hooks.lender.example/webhooks/pinwheel"
    api.add(hook_url, ["account.added", "income.added"])
    stop_watchdog = asyncio.Event()
    watchdog = asyncio.create_task(
        serve(
            WatchdogSettings(gateway_url=hook_url, interval_s=1, health_port=watchdog_port),
            PinwheelApiSettings(base_url=api.url, secret=API_SECRET, timeout_s=3),
            frozenset({"account.added", "employment.added"}),
            stop_watchdog,
        )
    )
    async with (
        httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as https,
        httpx.AsyncClient(timeout=10) as http,
        app.running(health_port=health_port),
    ):
        good = event_body("employment.added", str(uuid.uuid4()))
        for body, headers in (
            (good, signed_headers(good)),
            (good, signed_headers(good, OTHER_SECRET)),  # 401 bad_signature
            (b"{not json", signed_headers(b"{not json")),  # gateway dead letter
        ):
            await https.post(gateway.webhook_url, content=body, headers=headers)
        producer = AIOKafkaProducer(bootstrap_servers=app.bootstrap)
        await producer.start()
        try:  # a record the processors cannot decode: a processor dead letter
            await producer.send_and_wait(catalog.FAMILY_TOPICS[catalog.Family.ACCOUNT], b"\x01junk", key=b"k")
        finally:
            await producer.stop()

        # Wait for the series the traffic creates (the lag monitor samples every 5 s, after the assignment).
        wanted = {
            "gateway_requests_total",
            "processor_dead_letters_total",
            "processor_consumer_lag",
            "watchdog_subscription_event_enabled",
        }
        names: set[str] = set()
        sampled: set[str] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                texts = [
                    (await https.get(gateway.admin_url + "/metrics")).text,
                    (await http.get(f"http://127.0.0.1:{health_port}/metrics")).text,
                    (await http.get(f"http://127.0.0.1:{watchdog_port}/metrics")).text,
                ]
            except httpx.ConnectError:  # the processor opens its port once its topics and schemas are checked
                await asyncio.sleep(1)
                continue
            names = set().union(*map(exported, texts))
            sampled = {s.name for text in texts for f in text_string_to_metric_families(text) for s in f.samples}
            if wanted <= sampled and used - PROMETHEUS_MADE <= names:
                break
            await asyncio.sleep(1)
    stop_watchdog.set()
    await asyncio.wait_for(watchdog, 20)
    api.stop()
    assert used - PROMETHEUS_MADE - names == set()
    assert wanted <= sampled
    # The series PinwheelGatewayUnauthorizedSpike counts, as the real gateway labels a refused delivery.
    assert 'gateway_requests_total{outcome="unauthorized",reason="bad_signature"} 1.0' in texts[0]
    assert {"gateway_spool_oldest_age_seconds", "processor_consumer_lag", "processor_task_restarts_total"} <= used
    assert {
        "watchdog_subscription_paused",
        "watchdog_subscription_event_enabled",
        "gateway_last_delivery_timestamp_seconds",
    } <= used


def selectors(expr: str) -> list[Any]:
    """Every vector selector of an expression (inside range selectors too)."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or ():
            walk(child)

    walk(promql_parser.parse(expr))
    return found


def test_unauthorized_spike_pages_on_the_refusals_a_real_delivery_gets() -> None:
    """Pinwheel never redelivers a 4XX: a 401 to a genuine delivery is an event lost, so the alert pages, counts
    exactly the refusals a genuine delivery can get (not a scanner's), and fires on a count as well as a share."""
    from gateway.signature import Reason

    rules = yaml.safe_load(RULES.read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "PinwheelGatewayUnauthorizedSpike")
    assert rule["labels"]["severity"] == "page"
    refused = [
        s
        for s in selectors(rule["expr"])
        if any(m.name == "outcome" and m.value == "unauthorized" for m in s.matchers.matchers)
    ]
    assert len(refused) == 2  # the count and the numerator of the share
    for selector in refused:
        (reason,) = [m for m in selector.matchers.matchers if m.name == "reason"]
        assert str(reason.op) == "MatchOp.Re"
        matched = {r.value for r in Reason if re.fullmatch(reason.value, r.value)}
        assert matched == {"bad_signature", "stale_timestamp", "unknown_webhook"}
    assert re.search(r"increase\(gateway_requests_total\{[^}]*\}\[\w+\]\)\)\s*>=\s*\d+\s*\n\s*and", rule["expr"])
    description = rule["annotations"]["description"]
    for words in ("4XX", "lost", "GATEWAY_SECRETS"):
        assert words in description


def runbook(title: str) -> str:
    text = OPERATIONS.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_no_text_claims_pinwheel_retries_a_refused_delivery() -> None:
    """Pinwheel redelivers on 5XX and network errors only: no doc or alert may promise a retry of a 401, or an
    API to resend events that Pinwheel's documentation does not have."""
    texts = {path.name: path.read_text() for path in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", RULES]}
    for name, text in texts.items():
        flat = " ".join(text.split())
        for claim in ("retried by Pinwheel", "Pinwheel gives up after 15 minutes", "from Pinwheel's dashboard"):
            assert claim not in flat, (name, claim)
    spike = " ".join(runbook("PinwheelGatewayUnauthorizedSpike").split())
    for words in ("a 4XX is final", "GATEWAY_SECRETS=<new>,<old>", "GATEWAY_SECRETS_FILE"):
        assert words in spike
    recovering = " ".join(runbook("Recovering events Pinwheel will not redeliver").split())
    assert "Pinwheel documents no API that lists or re-sends past webhook events" in recovering
