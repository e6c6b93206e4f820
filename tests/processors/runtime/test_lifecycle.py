"""A task's lifecycle: the moves it makes, and that any other is refused."""

from __future__ import annotations

import pytest

from processors.runtime.lifecycle import IllegalTransition, Lifecycle, TaskPhase

CREATED, RESTORING, RUNNING = TaskPhase.CREATED, TaskPhase.RESTORING, TaskPhase.RUNNING
SUSPENDED, FAILED, CLOSED = TaskPhase.SUSPENDED, TaskPhase.FAILED, TaskPhase.CLOSED


@pytest.mark.parametrize(
    "path",
    [
        [RESTORING, RUNNING, SUSPENDED, CLOSED],  # revoked
        [RESTORING, RUNNING, FAILED, CLOSED],  # a commit failed
        [RESTORING, FAILED, CLOSED],  # the restore failed
        [FAILED, CLOSED],
        [RESTORING, RUNNING, CLOSED],
        [RESTORING, RUNNING, SUSPENDED, FAILED, CLOSED],
    ],
)
def test_the_lifecycles_moves(path: list[TaskPhase]) -> None:
    lifecycle = Lifecycle(3)
    for phase in path:
        lifecycle.move(phase)
    assert lifecycle.history == [CREATED, *path]


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], RUNNING),  # running without a restore
        ([RESTORING, RUNNING], RESTORING),
        ([RESTORING, RUNNING, SUSPENDED], RUNNING),  # a revoked task never runs again: a new one is built
        ([RESTORING, FAILED], RUNNING),
        ([CLOSED], CLOSED),  # closed twice
        ([CLOSED], RESTORING),
        ([RESTORING, RUNNING], CREATED),
    ],
)
def test_any_other_move_is_refused(path: list[TaskPhase], illegal: TaskPhase) -> None:
    lifecycle = Lifecycle(3)
    for phase in path:
        lifecycle.move(phase)
    with pytest.raises(IllegalTransition, match=f"task 3: {lifecycle.phase.value} -> {illegal.value}"):
        lifecycle.move(illegal)
    assert lifecycle.phase is (path[-1] if path else CREATED)
