"""A worker stops when its supervisor dies, as if the supervisor had sent it SIGTERM.

Without this, killing only the supervisor of several workers (SIGKILL, the OOM killer, a crash) leaves the
workers serving on the shared socket: they keep answering, but a new gateway cannot bind the port
(`Address already in use`) until someone finds and kills them. With it, each worker drains and stops as on
an ordinary SIGTERM (in-flight requests, producer flush, spool closed), so its spooled deliveries stay on
disk for the next gateway and the port is free once they are done.

Linux: the kernel sends the signal (`prctl(PR_SET_PDEATHSIG)`), even while the worker's event loop is busy.
Elsewhere: a daemon thread polls the parent pid. Either way the parent may already have died before the
worker asked, so the parent pid is checked once right after.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_INTERVAL_S = 1.0


def stop_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGTERM) -> str:
    """Arrange for `sig` to be delivered to this process once `parent_pid` (our parent) has died; deliver it at
    once if it is already gone. Returns how it is watched: `pdeathsig` or `poll`."""
    how = "pdeathsig" if _set_pdeathsig(sig) else "poll"
    if how == "poll":
        threading.Thread(target=_poll_parent, args=(parent_pid, sig), name="parent-watch", daemon=True).start()
    if parent_orphaned(parent_pid):  # it died before the kernel (or the thread) was watching
        _signal_self(parent_pid, sig)
    return how


def parent_orphaned(parent_pid: int) -> bool:
    """Our parent is no longer `parent_pid`: it died and we were re-parented (to init or a subreaper)."""
    return os.getppid() != parent_pid


def _set_pdeathsig(sig: signal.Signals) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no prctl in this libc: fall back to polling
        return False


def _poll_parent(parent_pid: int, sig: signal.Signals) -> None:
    stopped = threading.Event()  # never set: the thread lives as long as the process
    while not stopped.wait(POLL_INTERVAL_S):
        if parent_orphaned(parent_pid):
            _signal_self(parent_pid, sig)
            return


def _signal_self(parent_pid: int, sig: signal.Signals) -> None:
    log.warning("supervisor gone; stopping this worker", extra={"parent_pid": parent_pid, "signal": sig.name})
    os.kill(os.getpid(), sig)
