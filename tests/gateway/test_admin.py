"""The admin listener's readiness rule with several workers (gateway.admin.aggregate), on reports as the
workers write them; tests/gateway/test_workers.py checks it against a real supervisor and a killed worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.health import ServiceReadiness
from gateway.admin import STALE_AFTER_S, aggregate, read_report, remove_report, write_report

NOW = 1_000_000.0


def report(status: str = "ready", **fields: Any) -> dict[str, Any]:
    body = {
        "status": status,
        "kafka": "up",
        "schemas": "resolved",
        "spooling": False,
        "spool_records": 0,
        "spool_bytes": 0,
        "spool_max_bytes": 1024,
        "min_isr": "ok",
        "reported_at": NOW - 0.5,
    }
    return body | fields


def status_and_reasons(readiness: ServiceReadiness) -> tuple[str, list[str]]:
    body = readiness.body()
    return body["status"], body["reasons"]


def test_ready_only_when_every_running_worker_reported_ready_recently() -> None:
    assert status_and_reasons(aggregate({1: report(), 2: report()}, 2, NOW)) == ("ready", [])
    unready = report("not_ready", reasons=["spool disk full"])
    assert status_and_reasons(aggregate({1: report(), 2: unready}, 2, NOW)) == (
        "not_ready",
        ["worker 2: spool disk full"],
    )
    # a new worker, not reported yet
    assert status_and_reasons(aggregate({1: report(), 2: None}, 2, NOW)) == ("not_ready", ["worker 2: no report yet"])
    # the supervisor runs fewer than expected
    assert status_and_reasons(aggregate({1: report()}, 2, NOW)) == ("not_ready", ["1 of 2 workers running"])
    stale = report(reported_at=NOW - STALE_AFTER_S - 0.1)  # a stuck worker's last word
    body = aggregate({1: report(), 2: stale}, 2, NOW).body()
    assert (body["status"], body["workers_ready"]) == ("not_ready", 1)
    assert body["reasons"] == [f"worker 2: no report for {STALE_AFTER_S + 0.1:.1f} s"]
    assert [w["status"] for w in body["per_worker"]] == ["ready", "stale_report"]


def test_figures_summed_and_the_worst_state_reported() -> None:
    body = aggregate(
        {
            1: report(spool_records=3, spool_bytes=300, spooling=True, kafka="down", schemas="waiting_for_registry"),
            2: report(spool_records=4, spool_bytes=400, min_isr="under", min_isr_reason="t partitions [0]"),
        },
        2,
        NOW,
    ).body()
    assert (body["spool_records"], body["spool_bytes"], body["spool_max_bytes"]) == (7, 700, 1024)
    assert (body["kafka"], body["spooling"], body["schemas"]) == ("down", True, "waiting_for_registry")
    assert (body["min_isr"], body["min_isr_reason"]) == ("under", "t partitions [0]")


def test_reports_round_trip_through_the_directory(tmp_path: Path) -> None:
    write_report(tmp_path, 42, {"status": "ready"}, NOW)
    assert read_report(tmp_path, 42) == {"status": "ready", "pid": 42, "reported_at": NOW}
    assert [p.name for p in tmp_path.iterdir()] == ["42.json"]  # written via a scratch file, renamed
    remove_report(tmp_path, 42)
    assert read_report(tmp_path, 42) is None
    (tmp_path / "7.json").write_text("{half")
    assert read_report(tmp_path, 7) is None  # unreadable reads as no report: not ready
