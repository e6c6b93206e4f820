"""The processors' hot path compiled to C extensions with mypyc; everything else is in pyproject.toml.

The modules in COMPILED run for every event the processors handle: the account pipeline and its logic, the wire
encoding of its outputs, the envelope it reads, the local stores' write path. mypyc compiles them from the same
type-checked source (mypy --strict) and each keeps its `.py` beside its extension: the same behaviour, about a
quarter less CPU per event (docs/benchmarks.md, "Compiled with mypyc").

PINWHEEL_COMPILE picks the build: 1 compiles (a C compiler and Python's headers needed; `make install` and the
Dockerfile), 0 builds the pure-Python package (one wheel for every Python; `make wheel-test`), unset compiles
where a compiler and the headers are found and says so when it does not.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

# The one list of compiled modules. tests/conftest.py refuses to run beside an extension older than its source.
COMPILED = [
    "processors/logic/account_table.py",
    "processors/logic/codec.py",
    "processors/logic/events.py",
    "processors/logic/join.py",
    "processors/logic/keys.py",
    "processors/logic/outputs.py",
    "processors/logic/processor.py",
    "processors/logic/timers.py",
    "processors/logic/timeutil.py",
    "processors/pipeline.py",
    "processors/wire.py",
    "processors/runtime/state.py",
    "schemas/envelope.py",
]


def _can_compile() -> str | None:
    """Why this machine cannot compile the extensions, or None."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(os.environ.get("CC", compiler)) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h; Debian: python3-dev)"
    return None


def _compile() -> bool:
    choice = os.environ.get("PINWHEEL_COMPILE", "")
    if choice not in ("", "0", "1"):
        sys.exit(f"PINWHEEL_COMPILE: must be 0 or 1, not {choice!r}")
    if choice:
        return choice == "1"
    missing = _can_compile()
    if missing is not None:
        print(f"pinwheel-kafka-connector: {missing}: building the pure-Python package (slower)", file=sys.stderr)
    return missing is None


if _compile():
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3", group_name="common.hot_path"))
else:
    setup()
