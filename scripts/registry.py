"""A real schema registry for tests: Apicurio Registry with its Confluent-compatible API.

Apicurio publishes `io.apicurio:apicurio-registry-app` on Maven Central as a plain, not yet
"augmented" Quarkus jar, so it cannot be started from its dependencies alone. `fetch` therefore
builds it the way Apicurio's own storage modules do: a tiny Maven project that depends on the app,
unpacks the `io.apicurio` jars into its classes and runs `quarkus-maven-plugin:build`, which leaves
a runnable jar and its `lib/` in `.cache/registry/<version>/lib` (re-used when present). Only
`mvn` talks to the network, and only to Maven Central. The registry is then started with `java`
on a free 127.0.0.1 port, with its in-memory (H2) storage.

Version: 2.1.5.Final, the newest that builds from what Maven Central serves here. 3.3.3 and
2.6.13.Final need `apicurio-registry-schema-util-provider` versions that are not served, 3.3.2 and
3.0.9 their parent POM, and 2.3.1/2.4.2.Final the `apicurio-common-app-components-*-deployment`
Quarkus extension artifacts; every 2.x also needs `org.everit.json.schema` (never on Central: it is
excluded, which only affects JSON Schema artifacts). 2.1.5 serves the Confluent API as
`/apis/ccompat/v6`: the same paths the Confluent client uses for v7 (`/subjects`, `/schemas/ids/N`,
`/schemas/ids/N/versions`), so the client is pointed at :attr:`Registry.ccompat_url`.

Run by hand::

    python scripts/registry.py fetch             # build the registry into the cache
    python scripts/registry.py start [--port N]  # start in the background, print the ccompat URL
    python scripts/registry.py status
    python scripts/registry.py stop

Every failure (no Java, `mvn` failing, a port in use, a registry that never answers) is a
:class:`RegistryError` with a one-line message; the command line prints it and exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, by hand
from scripts.processes import (
    ToolError,
    alive,
    check_port_free,
    die_with_parent,
    free_port,
    mvn_command,
    mvn_reason,
    require_tool,
)

REGISTRY_VERSION = "2.1.5.Final"
QUARKUS_VERSION = "2.2.3.Final"  # the Quarkus that apicurio-registry-app 2.1.5.Final is built on
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
CCOMPAT_PATH = "/apis/ccompat/v6"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("LAZARUS_REGISTRY_CACHE", REPO_ROOT / ".cache" / "registry"))
DEFAULT_STATE = DEFAULT_CACHE / "run"
RUNNER = "registry-runner.jar"
START_TIMEOUT_S = 120.0
REGISTRY_JVM = ("-Xms64m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

# Runtime settings: loopback only, in-memory H2 (the default of the prod profile, stated here so
# it never depends on it), few connections (the default pool opens 20 at start).
REGISTRY_SETTINGS = {
    "quarkus.http.host": "127.0.0.1",
    "quarkus.datasource.jdbc.url": "jdbc:h2:mem:registry_db",
    "quarkus.datasource.jdbc.initial-size": "2",
    "quarkus.datasource.jdbc.min-size": "2",
    "quarkus.datasource.jdbc.max-size": "10",
    "registry.auth.enabled": "false",
}

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.lazarus</groupId>
  <artifactId>test-registry</artifactId>
  <version>1</version>
  <packaging>jar</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-bom</artifactId>
        <version>{quarkus}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.apicurio</groupId>
      <artifactId>apicurio-registry-app</artifactId>
      <version>{registry}</version>
      <exclusions>
        <!-- not on Maven Central; only JSON Schema validation uses it -->
        <exclusion>
          <groupId>com.github.everit-org.json-schema</groupId>
          <artifactId>org.everit.json.schema</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <!-- the app's classes must be the project's own for Quarkus to index them as beans -->
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{dependency_plugin}</version>
        <executions>
          <execution>
            <id>unpack-app</id>
            <phase>process-classes</phase>
            <goals><goal>unpack-dependencies</goal></goals>
            <configuration>
              <includeGroupIds>io.apicurio</includeGroupIds>
              <includeTypes>jar</includeTypes>
              <outputDirectory>${{project.build.directory}}/classes</outputDirectory>
              <overWriteReleases>false</overWriteReleases>
            </configuration>
          </execution>
        </executions>
      </plugin>
      <plugin>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-maven-plugin</artifactId>
        <version>{quarkus}</version>
        <executions>
          <execution>
            <goals><goal>build</goal></goals>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""


class RegistryError(ToolError):
    """The registry could not be fetched, started or stopped. The message is one readable line."""


def _say(message: str) -> None:
    print(f"registry: {message}", file=sys.stderr, flush=True)


def fetch_app(cache: Path = DEFAULT_CACHE, version: str = REGISTRY_VERSION) -> Path:
    """Return the folder holding the runnable registry, building it with `mvn` when not cached."""
    lib = cache / version / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = require_tool(
        "mvn", "Maven fetches and builds the registry from Maven Central", RegistryError
    )
    build = cache / version / "build"
    shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(lib, ignore_errors=True)
    build.mkdir(parents=True)
    pom = build / "pom.xml"
    pom.write_text(
        POM.format(
            registry=version, quarkus=QUARKUS_VERSION, dependency_plugin=DEPENDENCY_PLUGIN_VERSION
        )
    )
    command = mvn_command(mvn, str(pom))
    command += ["-DskipTests", "-Dquarkus.package.type=legacy-jar", "package"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RegistryError(
            f"mvn failed building apicurio-registry-app {version}: {mvn_reason(result.stdout)}"
        )
    target = build / "target"
    runner = target / "test-registry-1-runner.jar"
    if not runner.exists() or not (target / "lib").is_dir():
        raise RegistryError(f"mvn ran but {target} holds no runnable registry")
    lib.mkdir(parents=True)
    shutil.move(str(runner), lib / RUNNER)  # its manifest names its jars as lib/NAME
    shutil.move(str(target / "lib"), lib / "lib")
    shutil.rmtree(target, ignore_errors=True)
    size = sum(p.stat().st_size for p in lib.rglob("*.jar"))
    marker.write_text(version)
    _say(
        f"built Apicurio Registry {version} in {time.monotonic() - started:.1f}s "
        f"({size / 2**20:.0f} MiB of jars)"
    )
    return lib


class Registry:
    """One Apicurio Registry process with in-memory storage; its output in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        lib: Path | None = None,
        tie_to_parent: bool = True,
    ) -> None:
        if port:
            check_port_free(port, RegistryError)
        self.workdir = workdir
        self.port = port or free_port()
        self.tie_to_parent = tie_to_parent
        self._lib = lib
        self.pid: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """The Confluent-compatible API: what `SchemaRegistryClient(url=...)` takes."""
        return self.url + CCOMPAT_PATH

    @property
    def log_file(self) -> Path:
        return self.workdir / "registry.out"

    def lib(self) -> Path:
        if self._lib is None:
            self._lib = fetch_app()
        return self._lib

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start the registry and wait until its API answers; return the start-up time (not
        counting a first `fetch_app`, which may take minutes)."""
        runner = self.lib() / RUNNER
        java = require_tool("java", "the registry runs on Java 17", RegistryError)
        started = time.monotonic()
        check_port_free(self.port, RegistryError)
        settings = {**REGISTRY_SETTINGS, "quarkus.http.port": str(self.port)}
        command = [
            java,
            *REGISTRY_JVM,
            *(f"-D{k}={v}" for k, v in settings.items()),
            "-jar",
            str(runner),
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if self.tie_to_parent else None,
            start_new_session=not self.tie_to_parent,
        )
        out.close()
        self.pid = self.process.pid
        self._wait_ready(started + timeout)
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    def _wait_ready(self, deadline: float) -> None:
        probe = self.ccompat_url + "/subjects"
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RegistryError(
                    f"registry exited with code {self.process.returncode} during start-up: "
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        self.kill()
        raise RegistryError(f"registry did not answer on {probe} in time: {self.log_tail()}")

    def log_tail(self) -> str:
        if not self.log_file.exists():
            return "no log output"
        lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if " ERROR " in ln or "Exception" in ln]
        return (errors or lines or ["no log output"])[-1][:300]

    def stop(self, timeout: float = 20.0) -> None:
        """Stop cleanly (SIGTERM); SIGKILL if it does not exit in time."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the registry."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not self._wait_exit(pid, timeout) and sig != signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.process = None
        self.pid = None

    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:
                    return True
            elif not alive(pid):
                return True
            time.sleep(0.1)
        return False

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"workdir": str(self.workdir), "port": self.port, "pid": self.pid})
        )

    @classmethod
    def load(cls, path: Path) -> Registry:
        if not path.exists():
            raise RegistryError(f"no registry state at {path}: run `start` first")
        data = json.loads(path.read_text())
        registry = cls.__new__(cls)
        registry.workdir = Path(data["workdir"])
        registry.port = int(data["port"])
        registry.pid = data["pid"]
        registry.tie_to_parent = False
        registry._lib = None
        registry.process = None
        registry.startup_seconds = None
        return registry


def _state_file(name: str) -> Path:
    return DEFAULT_STATE / name / "state.json"


def _cmd_start(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if state.exists() and (running := Registry.load(state)).running():
        print(running.ccompat_url)
        _say("already running")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix=f"lazarus-registry-{args.name}-"))
    registry = Registry(workdir, port=args.port, tie_to_parent=False)
    seconds = registry.start()
    registry.save(state)
    _say(
        f"Apicurio Registry {REGISTRY_VERSION} up on {registry.url} in {seconds:.1f}s "
        f"(log: {registry.log_file})"
    )
    print(registry.ccompat_url)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if not state.exists():
        _say("not running")
        return 0
    registry = Registry.load(state)
    registry.stop()
    shutil.rmtree(registry.workdir, ignore_errors=True)
    state.unlink()
    _say("stopped")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if not state.exists():
        print("stopped")
        return 3
    registry = Registry.load(state)
    if registry.running():
        print(f"running on {registry.ccompat_url} (pid {registry.pid})")
        return 0
    print(f"not running (last on {registry.url})")
    return 3


def _cmd_fetch(_: argparse.Namespace) -> int:
    print(fetch_app())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A real schema registry (Apicurio) for Lazarus.")
    parser.add_argument(
        "--name", default="dev", help="which registry (state under .cache/registry/run)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start in the background and print the ccompat URL")
    start.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    for name in ("stop", "status", "fetch"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    commands = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "fetch": _cmd_fetch}
    try:
        return commands[args.command](args)
    except RegistryError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
