"""A task's lifecycle as a type: its phases and the only moves between them.

    created ──> restoring ──> running ──> suspended ──> closed
       │            │            │            │           ▲
       └────────────┴────────────┴────────────┴─> failed ─┘   (and any phase but closed ──> closed)

created:   its producer started (the previous owner fenced), its state opened; nothing restored yet.
restoring: its stores are brought up to the end of their changelogs.
running:   its processor built; it processes, punctuates and commits.
suspended: its partitions revoked and its work committed; it is closed next.
failed:    a commit or start failed; its uncommitted work is thrown away as it closes.
closed:    its producer stopped and its state closed; it never runs again (a new task is built instead).
"""

from __future__ import annotations

from enum import Enum


class TaskPhase(Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    SUSPENDED = "suspended"
    FAILED = "failed"
    CLOSED = "closed"


_MOVES: dict[TaskPhase, frozenset[TaskPhase]] = {
    TaskPhase.CREATED: frozenset({TaskPhase.RESTORING, TaskPhase.FAILED, TaskPhase.CLOSED}),
    TaskPhase.RESTORING: frozenset({TaskPhase.RUNNING, TaskPhase.FAILED, TaskPhase.CLOSED}),
    TaskPhase.RUNNING: frozenset({TaskPhase.SUSPENDED, TaskPhase.FAILED, TaskPhase.CLOSED}),
    TaskPhase.SUSPENDED: frozenset({TaskPhase.FAILED, TaskPhase.CLOSED}),
    TaskPhase.FAILED: frozenset({TaskPhase.CLOSED}),
    TaskPhase.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A task was asked to move where its lifecycle does not go (a bug in the runtime)."""


class Lifecycle:
    """The phase of one task; `move` checks every transition."""

    __slots__ = ("history", "partition", "phase")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.phase = TaskPhase.CREATED
        self.history = [TaskPhase.CREATED]  # every phase it was in, in order (a handful: tasks move rarely)

    def move(self, to: TaskPhase) -> None:
        if to not in _MOVES[self.phase]:
            raise IllegalTransition(f"task {self.partition}: {self.phase.value} -> {to.value}")
        self.phase = to
        self.history.append(to)

    def __repr__(self) -> str:
        return f"Lifecycle({self.partition}, {self.phase.value})"
