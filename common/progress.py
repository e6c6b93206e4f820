"""A small dependency-free progress bar on stderr.

On a terminal it redraws one line (`\\r`); otherwise (CI, a pipe) it prints a plain line every few seconds.
`println` prints a line above the bar without garbling it (used by `make run` to show updates).
"""

from __future__ import annotations

import sys
import time
from typing import IO


class ProgressBar:
    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: IO[str] | None = None,
        width: int = 28,
        min_interval_s: float = 0.1,
        plain_interval_s: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s if self.tty else plain_interval_s
        self.done = 0
        self.note = ""
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def render(self) -> str:
        fraction = 1.0 if self.total == 0 else min(self.done / self.total, 1.0)
        filled = int(fraction * self.width)
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%} {rate:6.1f}/s {elapsed:5.1f}s"
        return f"{text} {self.note}".rstrip()

    def update(self, advance: int = 1, note: str | None = None) -> None:
        self.done += advance
        if note is not None:
            self.note = note
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval_s or self.done >= self.total:
            self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        self._last_draw = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.render())
            self._drawn = True
        else:
            self.stream.write(self.render() + "\n")
        self.stream.flush()

    def println(self, line: str, out: IO[str] | None = None) -> None:
        """Print `line` (to `out`, default stdout) above the bar, then redraw the bar."""
        target = out if out is not None else sys.stdout
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        target.write(line + "\n")
        target.flush()
        if self.tty and self._drawn:
            self.stream.write(self.render())
            self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.render() + "\n")
        else:
            self.stream.write(self.render() + "\n")
        self.stream.flush()
        self._drawn = False
