"""The chaos machinery end to end, small: the processor kill -9 loop with 30 accounts (under a minute).

Its own broker, gateway and processor subprocesses, the simulator, kill -9 every 2-4 s, `verify`: PASS (0 lost,
0 duplicated, the secret in no log) and nothing left running. The full-size runs are `make chaos` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.harness import Size
from chaos.scenarios import run_scenario

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(150)
def test_processor_kill_loop_small_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = Size(accounts=30, spread_s=12.0, pending_timeout_s=6.0, verify_wait_s=40.0, kill_every_s=(2.0, 4.0))
    result = run_scenario("processor_kill_loop", size, tmp_path / "processor_kill_loop")
    out = capsys.readouterr().out
    assert result.passed, f"{result.summary()}\n{result.failures}\n{out[-4000:]}"
    assert result.figures.kills >= 3
    assert result.figures.lost == result.figures.duplicated == 0
    assert result.figures.accepted == result.figures.deliveries > 0
    assert f"chaos processor_kill_loop: PASS lost=0 duplicated=0 accepted={result.figures.deliveries}/" in out
    assert len(result.pids) >= 2 + result.figures.kills  # broker, gateway, processor and every restart
    alive = [pid for pid in result.pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert not alive, f"processes left running: {alive}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
