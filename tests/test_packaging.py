"""The wheel a user installs: the product's packages only, typed, with the data files the code reads, honest
metadata; and the lock files `make lock` writes. tests/wheel_check.py (make wheel-test) installs that wheel in
fresh virtualenvs on CPython 3.11-3.13 and runs the unit tests against it."""

from __future__ import annotations

import ast
import email
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = {"common", "connector", "gateway", "operate", "processors", "schemas", "simulator"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    # The dev venv's setuptools, no build isolation: nothing is downloaded. The pure-Python wheel (setup.py's
    # PINWHEEL_COMPILE=0): the compiled one holds the same files and the extensions beside them (the Dockerfile's).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env={**os.environ, "PINWHEEL_COMPILE": "0"},
    )
    (path,) = out.glob("pinwheel_kafka_connector-*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_the_wheel_holds_the_product_packages_each_typed(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == PRODUCT  # not bench, chaos nor tests: their imports need the dev extra
    for package in PRODUCT:
        assert f"{package}/py.typed" in names, package


def test_every_module_of_the_product_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    on_disk = {
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk <= set(wheel.namelist())


def test_the_data_files_the_code_reads_are_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    schemas = {str(p.relative_to(ROOT)) for p in (ROOT / "schemas" / "avro").rglob("*.avsc")}
    assert schemas
    assert schemas <= names  # schemas/store.py reads them through importlib.resources
    assert "simulator/data/pinwheel-sandbox-capture.jsonl" in names  # simulator/traffic.py
    # Every file a product module opens next to itself is one of those.
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for match in re.finditer(r'Path\(__file__\)\.parent / "(\w+)" / "([^"]+)"', text):
                assert f"{path.parent.relative_to(ROOT)}/{match[1]}/{match[2]}" in names, path


def test_no_product_module_imports_a_dev_package() -> None:
    """import-linter holds bench and chaos above everything; tests is not a package of the project at all."""
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    assert module.split(".")[0] not in {"bench", "chaos", "tests"}, (path, module)


def test_the_metadata_is_complete(metadata: Message) -> None:
    assert metadata["Name"] == "pinwheel-kafka-connector"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Author"] or metadata["Author-email"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "## " in str(metadata.get_payload())  # the README as the long description
    classifiers = metadata.get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
    assert metadata.get_all("License-File") == ["LICENSE"]


def _requirements(metadata: Message, name: str) -> list[Requirement]:
    return [r for r in map(Requirement, metadata.get_all("Requires-Dist") or []) if r.name == name]


def _runtime(metadata: Message, name: str) -> Requirement:
    """The requirement on `name` of a plain install (no extra)."""
    (requirement,) = [r for r in _requirements(metadata, name) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return requirement


def test_cavro_is_an_extra_that_installs_nothing_where_it_has_no_wheel(metadata: Message) -> None:
    cavro = _requirements(metadata, "cavro")
    assert all(r.marker is not None and not r.marker.evaluate({"extra": ""}) for r in cavro)  # not of a plain install
    (speed,) = [r for r in cavro if r.marker is not None and "speed" in str(r.marker)]
    assert speed.marker is not None
    assert speed.marker.evaluate({"extra": "speed", "python_full_version": "3.12.1", "python_version": "3.12"})
    assert not speed.marker.evaluate({"extra": "speed", "python_full_version": "3.13.0", "python_version": "3.13"})
    assert "speed" in (metadata.get_all("Provides-Extra") or [])


@pytest.mark.parametrize(
    ("name", "below"),
    [
        (
            "uvicorn",
            "0.55",
        ),  # gateway/connections.py subclasses HttpToolsProtocol (tests/gateway/test_uvicorn_shape.py)
        ("httptools", "0.10"),  # gateway/connections.py drives uvicorn's parser
        ("aiokafka", "0.15"),  # common/kafka_stop.py, common/isr_watch.py reach into the producer and the client
    ],
)
def test_libraries_whose_internals_we_use_are_bounded_below_their_next_minor(
    metadata: Message, name: str, below: str
) -> None:
    requirement = _runtime(metadata, name)
    assert f"<{below}" in str(requirement.specifier), requirement
    assert not requirement.specifier.contains(below)


def test_every_runtime_dependency_has_an_upper_bound_but_the_stable_ones() -> None:
    """A library that breaks its API in a minor release (0.x) must not reach users unreviewed."""
    unbounded = {
        Requirement(r).name for r in PYPROJECT["project"]["dependencies"] if "<" not in str(Requirement(r).specifier)
    }
    assert unbounded <= {"cryptography", "sniffio"}  # stable APIs we use plainly


def _pins(text: str) -> dict[str, str]:
    return {m[1].lower().replace("_", "-"): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


def test_the_lock_pins_every_runtime_dependency_with_hashes_at_the_dev_venvs_versions() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = _pins(lock)
    for requirement in [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["speed"]]:
        assert Requirement(requirement).name.lower() in pinned, requirement
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 1)[1] if lock.startswith("#") else lock)
    for entry in entries:
        if entry.strip() and not entry.lstrip().startswith("#"):
            assert "--hash=sha256:" in entry, entry.splitlines()[0]
    # Runtime and dev are tested together: the same versions.
    dev = _pins((ROOT / "constraints.txt").read_text())
    assert {name: dev.get(name) for name in pinned} == pinned
    # No dev tool in the runtime's lock.
    assert not {"pytest", "mypy", "ruff", "hypothesis", "testcontainers", "uv", "matplotlib"} & set(pinned)
