"""`python -m tests.wheel_check [--python PATH]...` (make wheel-test): the wheel, installed as a user installs it,
passes the unit tests, on every CPython the package supports.

Per interpreter (default: each of CPython 3.11, 3.12 and 3.13 found on PATH or under pyenv's root), a fresh
virtualenv in var/wheel-check/<version>: the runtime dependencies from requirements.lock, every file's hash checked;
the wheel with --no-deps, then `pip check` (the lock satisfies what the wheel declares); the test tools of the dev
extra from constraints.txt. Then pytest on a copy of the repository *without* its packages (so every import of
`gateway`, `schemas`, ... is the installed wheel's, which the run checks first): the tests that need neither a
broker nor Docker, `-m "not kafka and not compose and not slow"`; tests/bench and tests/chaos are left out (bench/
and chaos/ are dev tools, not in the wheel), and so is tests/test_packaging.py (it checks the source tree that
built the wheel).

Exits 0 when every interpreter passed, 1 when one failed, 2 when none of them could be found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("common", "connector", "gateway", "operate", "processors", "schemas", "simulator")
NOT_PACKAGED = ("bench", "chaos")
VERSIONS = ("3.11", "3.12", "3.13")
# The dev extra's linters, plotting and locking tools: no unit test imports them.
NOT_TEST_TOOLS = {"ruff", "mypy", "types-pyyaml", "matplotlib", "import-linter", "uv", "setuptools"}
UNIT_TESTS = "not kafka and not compose and not slow"
# Checks of the source tree itself, not of the wheel: it builds the wheel this run installs and reads the lock files;
# the docs' commands, links and variables; the modules' source (the one declaration of the store names).
SOURCE_TREE_TESTS = ("tests/test_packaging.py", "tests/test_readme.py", "tests/processors/test_store_declaration.py")


def find_interpreters() -> list[Path]:
    """python3.X on PATH, else pyenv's newest 3.X (PYENV_ROOT or ~/.pyenv), for each supported X."""
    found: list[Path] = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in VERSIONS:
        on_path = shutil.which(f"python{version}")
        if on_path and subprocess.run([on_path, "-V"], capture_output=True).returncode == 0:  # not a pyenv shim
            found.append(Path(on_path))
            continue
        candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), key=lambda p: _release(p.parent.parent))
        if candidates:
            found.append(candidates[-1])
    return found


def _release(directory: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in directory.name.split("."))
    except ValueError:
        return (-1,)


def build_wheel(out: Path) -> Path:
    """The pure-Python wheel of this checkout (one for every Python: setup.py's PINWHEEL_COMPILE=0), built with the
    dev venv's setuptools (no build isolation: no download)."""
    shutil.rmtree(out, ignore_errors=True)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    _run([*pip_wheel, str(ROOT)], env={**os.environ, "PINWHEEL_COMPILE": "0"})
    (wheel,) = out.glob("pinwheel_kafka_connector-*.whl")
    return wheel


def test_tools() -> list[str]:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    return [req for req in dev if _name(req) not in NOT_TEST_TOOLS]


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower().replace("_", "-")


def copy_without_packages(dest: Path) -> None:
    """The repository's tests, docs, deployment files and pyproject.toml (pytest's settings), not its packages.

    The .avsc files come along as data: some tests decode with them, independently of the package's code (a
    `schemas/` directory without `__init__.py` never shadows the installed package)."""
    shutil.rmtree(dest, ignore_errors=True)
    ignored = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", *NOT_PACKAGED)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignored)
    shutil.copytree(ROOT / "schemas" / "avro", dest / "schemas" / "avro")
    for name in ("docs", "deploy", "docker"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignored)
    for name in ("pyproject.toml", "README.md", "Dockerfile", "docker-compose.yml", ".dockerignore"):
        shutil.copy2(ROOT / name, dest / name)


def check(python: Path, wheel: Path, work: Path, pytest_args: list[str]) -> bool:
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    ).stdout.strip()
    venv = work / version
    print(f"== {python} (CPython {version}): {venv}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    _run([str(python), "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")])
    _run([*pip, "--no-deps", str(wheel)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "check"])
    _run([*pip, "-c", str(ROOT / "constraints.txt"), *test_tools()])
    tree = work / f"tree-{version}"
    copy_without_packages(tree)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {', '.join(PRODUCT)}; print(schemas.__file__)"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if "site-packages" not in where:
        print(f"!! {version}: the packages are imported from {where}, not from the wheel", flush=True)
        return False
    encoders = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from schemas.codec import encoders; print(*encoders())"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"   packages from {Path(where).parent.parent}; encoders: {encoders}", flush=True)
    tests = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", UNIT_TESTS]
    tests += [f"--ignore={path}" for path in SOURCE_TREE_TESTS]
    result = subprocess.run([*tests, *pytest_args], cwd=tree, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return result.returncode == 0


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(command, check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.wheel_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", type=Path, action="append", help="an interpreter (repeatable; default: found)")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "wheel-check", help="venvs and copies")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    interpreters = args.python or find_interpreters()
    if not interpreters:
        print(f"wheel_check: no CPython {', '.join(VERSIONS)} found (PATH, pyenv)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.work / "dist")
    print(f"== {wheel.name}", flush=True)
    results = {str(python): check(python, wheel, args.work, args.pytest_args) for python in interpreters}
    for python, passed in results.items():
        print(f"{'passed' if passed else 'FAILED'}: {python}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
