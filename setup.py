"""The processors' hot path compiled to C extensions with mypyc; everything else is in pyproject.toml.

The modules in COMPILED run for every event the processors handle: the account pipeline and its logic, the wire
encoding of its outputs, the codec and its plain Avro writer and reader, the envelope it reads and the event
catalog, the local stores' write path. mypyc compiles them from the same type-checked source (mypy --strict) and
each keeps its `.py` beside its extension: the same behaviour, about a quarter less CPU per event
(docs/benchmarks.md, "Compiled with mypyc").

PINWHEEL_COMPILE=1 compiles them: mypyc type-checks them first, so the build needs mypy and the runtime's
libraries installed beside a C compiler and Python's headers, with `pip install --no-build-isolation` (`make
install` and the Dockerfile do so). Otherwise (unset or 0) the package is pure Python: the same code, one wheel
for every Python, a quarter more CPU per event in the processors.
"""

from __future__ import annotations

import os
import sys

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
    "processors/logic/readiness.py",
    "processors/logic/timers.py",
    "processors/logic/timeutil.py",
    "processors/pipeline.py",
    "processors/wire.py",
    "processors/runtime/state.py",
    "schemas/catalog.py",
    "schemas/codec.py",
    "schemas/envelope.py",
    "schemas/plain_avro.py",
]


def _compile() -> bool:
    choice = os.environ.get("PINWHEEL_COMPILE", "0")
    if choice not in ("0", "1"):
        sys.exit(f"PINWHEEL_COMPILE: must be 0 or 1, not {choice!r}")
    return choice == "1"


if _compile():
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit("PINWHEEL_COMPILE=1 needs mypy and the runtime's libraries: pip install --no-build-isolation")

    setup(ext_modules=mypycify(COMPILED, opt_level="3", group_name="common.hot_path"))
else:
    setup()
