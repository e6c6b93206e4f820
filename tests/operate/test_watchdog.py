"""The subscription watchdog: its judgement (pure), then the service against the local fake of Pinwheel's API over
real HTTP, scraped as Prometheus would."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.ports import free_port
from operate.subscription import assess, normalise_url, required_events
from operate.watchdog import WatchdogSettings, WatchdogState, serve
from operate.webhooks import PinwheelApiSettings
from processors.logic.readiness import parse_rule
from schemas import catalog
from tests.operate.pinwheel_api_fake import API_SECRET, FakePinwheelApi

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "https://hooks.lender.example/webhooks/pinwheel"
REQUIRED = required_events(parse_rule(catalog.DEFAULT_READINESS_RULE).event_types)
ALL_NEEDED = sorted(REQUIRED)

# -- judgement -------------------------------------------------------------------------------------------------


def hook(hook_id: str, url: str = GATEWAY, status: str = "active", events: list[str] = ALL_NEEDED) -> dict[str, object]:
    return {"id": hook_id, "url": url, "status": status, "enabled_events": events, "version": "2023-11-22"}


def test_the_needed_events_are_the_account_events_and_the_readiness_rules() -> None:
    assert {
        "account.added",
        "account.monitoring_status.updated",
        "income.added",
        "employment.added",
        "paystubs.thirty_days_synced",
    } == REQUIRED
    assert required_events(["identity.added"], ["shifts.added"]) >= {"identity.added", "shifts.added"}


def test_urls_compare_as_pinwheel_may_echo_them() -> None:
    assert normalise_url("HTTPS://Hooks.Lender.Example:443/webhooks/pinwheel/") == normalise_url(GATEWAY)
    assert normalise_url("https://hooks.lender.example:8443/webhooks/pinwheel") != normalise_url(GATEWAY)
    assert normalise_url("https://hooks.lender.example/webhooks/other") != normalise_url(GATEWAY)


def test_without_an_id_the_active_webhook_pointing_at_the_gateway_is_watched() -> None:
    hooks = [hook("elsewhere", url="https://old.example/x"), hook("p", status="paused"), hook("a")]
    report = assess(hooks, gateway_url=GATEWAY, webhook_id=None, required=REQUIRED)
    assert (report.found, report.webhook_id, report.status, report.url_matches) == (True, "a", "active", True)
    assert report.missing_events == frozenset()
    assert report.webhooks_seen == 3
    # None points at the gateway: not found, and every needed event is missing.
    report = assess(hooks[:1], gateway_url=GATEWAY, webhook_id=None, required=REQUIRED)
    assert (report.found, report.url_matches, report.missing_events) == (False, False, REQUIRED)


def test_with_an_id_a_re_pointed_webhook_and_missing_events_are_told() -> None:
    hooks = [
        hook("w1", url="https://someone-else.example/hook", events=["account.added", "income.added", "bill.added"])
    ]
    report = assess(hooks, gateway_url=GATEWAY, webhook_id="w1", required=REQUIRED)
    assert (report.found, report.url_matches) == (True, False)
    assert report.missing_events == {
        "account.monitoring_status.updated",
        "employment.added",
        "paystubs.thirty_days_synced",
    }
    assert assess(hooks, gateway_url=GATEWAY, webhook_id="w2", required=REQUIRED).found is False


# -- the service against the fake API --------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakePinwheelApi]:
    fake = FakePinwheelApi().start()
    yield fake
    fake.stop()


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Running:
    def __init__(self, port: int, state: WatchdogState) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.state = state

    async def after_next_check(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Metrics once a check newer than now has finished."""
        seen = sum(self.state.checks.values())
        deadline = time.monotonic() + 30
        while sum(self.state.checks.values()) <= seen:
            assert time.monotonic() < deadline, "no check within 30 s"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(timeout=5) as http:
            return scrape((await http.get(self.base + "/metrics")).text)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as http:
            return await http.get(self.base + path)


@pytest.fixture
async def watchdog(api: FakePinwheelApi, tmp_path: Path) -> AsyncIterator[tuple[Running, Path, str]]:
    secret_file = tmp_path / "pinwheel-api-secret"
    secret_file.write_text(API_SECRET + "\n")
    hook_id = api.add(GATEWAY, ALL_NEEDED)
    api.add("https://staging.lender.example/webhooks/pinwheel", ["income.added"])  # another webhook of the key
    port = free_port()
    settings = WatchdogSettings(gateway_url=GATEWAY, webhook_id=hook_id, interval_s=1, health_port=port)
    api_settings = PinwheelApiSettings(base_url=api.url, secret_file=secret_file, timeout_s=3)
    state = WatchdogState()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, api_settings, REQUIRED, stop, state))
    try:
        yield Running(port, state), secret_file, hook_id
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_status_url_and_events_as_metrics_and_what_each_alert_reads(
    api: FakePinwheelApi, watchdog: tuple[Running, Path, str]
) -> None:
    running, secret_file, hook_id = watchdog
    m = await running.after_next_check()
    assert value(m, "watchdog_check_success") == 1
    assert value(m, "watchdog_subscription_found") == 1
    assert (
        value(m, "watchdog_subscription_info", webhook_id=hook_id, url=GATEWAY, status="active", version="2023-11-22")
        == 1
    )
    assert value(m, "watchdog_subscription_active") == 1
    assert value(m, "watchdog_subscription_paused") == 0
    assert value(m, "watchdog_subscription_url_matches") == 1
    assert value(m, "watchdog_subscription_missing_events") == 0
    assert value(m, "watchdog_subscription_event_enabled", event_type="income.added", required="true") == 1
    assert value(m, "watchdog_max_silence_seconds") == 6 * 3600
    assert (await running.get("/readyz")).status_code == 200
    # The API was called as documented: the secret from the file, a Pinwheel-Version header.
    _, path, headers = api.app.state.calls[-1]
    assert path == "/v1/webhooks"
    assert headers["x-api-secret"] == API_SECRET
    assert headers["pinwheel-version"]

    api.pause(hook_id)  # 30 days of failed deliveries
    m = await running.after_next_check()
    assert (value(m, "watchdog_subscription_paused"), value(m, "watchdog_subscription_active")) == (1, 0)
    assert (
        value(m, "watchdog_subscription_info", webhook_id=hook_id, url=GATEWAY, status="paused", version="2023-11-22")
        == 1
    )

    api.hooks[hook_id] |= {"status": "active", "url": "https://new-gateway.lender.example/webhooks/pinwheel"}
    m = await running.after_next_check()
    assert (value(m, "watchdog_subscription_url_matches"), value(m, "watchdog_subscription_active")) == (0, 1)

    api.hooks[hook_id] |= {"url": GATEWAY, "enabled_events": ["account.added", "income.added", "shifts.added"]}
    m = await running.after_next_check()
    assert value(m, "watchdog_subscription_url_matches") == 1
    assert value(m, "watchdog_subscription_missing_events") == 3
    assert value(m, "watchdog_subscription_event_enabled", event_type="employment.added", required="true") == 0
    assert value(m, "watchdog_subscription_event_enabled", event_type="shifts.added", required="false") == 1

    del api.hooks[hook_id]
    m = await running.after_next_check()
    assert value(m, "watchdog_subscription_found") == 0
    assert value(m, "watchdog_subscription_missing_events") == len(REQUIRED)

    # A rotated secret file is read on the next check: the wrong one fails the check (and /readyz), the
    # last known subscription stays exported, and the secret is never in what the watchdog shows.
    secret_file.write_text("sk-wrong-rotation-0000\n")
    m = await running.after_next_check()
    assert value(m, "watchdog_check_success") == 0
    assert value(m, "watchdog_checks_total", result="error") is not None
    assert value(m, "watchdog_subscription_found") == 0
    readyz = await running.get("/readyz")
    assert readyz.status_code == 503
    assert "401" in readyz.json()["reasons"][0]
    metrics_text = (await running.get("/metrics")).text
    for secret in (API_SECRET, "sk-wrong-rotation-0000"):
        assert secret not in readyz.text
        assert secret not in metrics_text


def test_the_command_checks_the_api_and_serves_metrics(api: FakePinwheelApi, tmp_path: Path) -> None:
    """`pinwheel-connector watchdog` as an operator runs it: settings from the environment, stopped by SIGTERM."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(API_SECRET)
    api.add(GATEWAY, ALL_NEEDED)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "PINWHEEL_API_BASE_URL": api.url,
        "PINWHEEL_API_SECRET_FILE": str(secret_file),
        "WATCHDOG_GATEWAY_URL": GATEWAY,
        "WATCHDOG_HEALTH_PORT": str(port),
        "READINESS_RULE": "income.added",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "watchdog"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline and value(samples, "watchdog_subscription_found") is None:
            try:
                samples = scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.TransportError:
                time.sleep(0.2)
        assert value(samples, "watchdog_subscription_found") == 1
        assert value(samples, "watchdog_subscription_missing_events") == 0
        # The rule's events are what it requires: employment.added is no longer needed.
        assert (
            value(samples, "watchdog_subscription_event_enabled", event_type="employment.added", required="false") == 1
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert API_SECRET not in stderr
    assert '"watchdog starting"' in stderr


def test_no_secret_exits_2_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "WATCHDOG_GATEWAY_URL": GATEWAY}
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", "watchdog"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "watchdog: set PINWHEEL_API_SECRET (or PINWHEEL_API_SECRET_FILE) to your Pinwheel API secret"
    )
