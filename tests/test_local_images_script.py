"""`export $(docker/local-images.sh)` on a cold machine: while it builds every image, whatever the build tools
print (Maven's colour codes, docker's image ids) goes to standard error; standard output carries the one line
`export` reads, and nothing else.

The real script runs its cold path (no image exists under a throwaway prefix) with docker, mmdebstrap and mvn
replaced on PATH by noisy stand-ins that record their calls: the build tools' output is what is under test, not
the images (`make compose-test` builds those for real).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NOISY = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
printf '\\033[0m\\033[0m[INFO] %s says hello on stdout\\n' "$(basename "$0")"
if [[ "$(basename "$0")" == docker && "$1 $2" == "image inspect" ]]; then exit 1; fi  # cold: no image yet
exit 0
"""


def test_a_cold_build_prints_only_the_variables_on_stdout(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "mmdebstrap", "mvn"):
        (bin_dir / tool).write_text(NOISY)
        (bin_dir / tool).chmod(0o755)
    calls = tmp_path / "calls"
    prefix = f"throwaway-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "PINWHEEL_REBUILD_IMAGES"}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "CALLS": str(calls), "PINWHEEL_IMAGE_PREFIX": prefix,
            "PYTHON": sys.executable}  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "local-images.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    version = result.stdout.split("KAFKA_IMAGE=")[-1].split(":")[-1].strip()
    assert result.stdout == f"PYTHON_IMAGE={prefix}/python:3.11 KAFKA_IMAGE={prefix}/kafka:{version}\n"
    built = calls.read_text()
    for step in ("mmdebstrap", "docker import", f"-t {prefix}/python:3.11", f"-t {prefix}/kafka:{version}", "mvn"):
        assert step in built, built  # the cold path ran every build
    assert "says hello on stdout" in result.stderr  # the tools' output went to stderr
    # and the line works as `export` takes it
    exported = subprocess.run(
        ["bash", "-c", f'export {result.stdout.strip()} && echo "$PYTHON_IMAGE|$KAFKA_IMAGE"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert exported.stdout.strip() == f"{prefix}/python:3.11|{prefix}/kafka:{version}"
