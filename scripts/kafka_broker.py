"""A real, single-node Apache Kafka broker (KRaft) for tests, benchmarks and development.

The broker is the official one: ``org.apache.kafka:kafka_2.13`` and its runtime dependencies are
fetched from Maven Central with ``mvn`` into a cache folder (re-used when present), storage is
formatted in a work folder, and one combined broker+controller is started with ``java`` on
127.0.0.1. Nothing is downloaded any other way.

Run by hand::

    python scripts/kafka_broker.py fetch             # fetch the jars into the cache
    python scripts/kafka_broker.py start [--port N] [--sasl]  # background; prints the bootstrap
    python scripts/kafka_broker.py status
    python scripts/kafka_broker.py restart           # same ports, same data
    python scripts/kafka_broker.py stop

Tests use :class:`Broker` directly (see ``tests/conftest.py``). Every failure of the script itself
(no Java, ``mvn`` failing, a port in use, a broker that never answers) is a :class:`BrokerError`
with a one-line message; the command line prints it and exits non-zero.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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

KAFKA_VERSION = os.environ.get("LAZARUS_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"  # the log4j2 version Kafka 4.1 itself resolves
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("LAZARUS_KAFKA_CACHE", REPO_ROOT / ".cache" / "kafka"))
DEFAULT_STATE = REPO_ROOT / ".cache" / "broker"
START_TIMEOUT_S = 90.0
BROKER_JVM = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.lazarus</groupId>
  <artifactId>test-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- the SLF4J 1.x binding: without it the broker runs but logs nothing -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""

# Settings that make a single node work (replication factors of 1 for the internal topics, or
# groups and transactions hang waiting for a coordinator) and keep tests fast (short group
# session minimums for both group protocols, no initial rebalance delay, quick cleanup of
# transactions whose producer died, one partition for internal topics, a small cleaner buffer).
SERVER_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "100",
    "group.consumer.heartbeat.interval.ms": "500",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "log.cleaner.dedupe.buffer.size": "4194304",
    "log.cleaner.backoff.ms": "1000",
    "num.network.threads": "2",
    "num.io.threads": "4",
}


# The SASL profile (`Broker(sasl=True)`): a second listener, SASL_PLAINTEXT with SCRAM-SHA-512, for
# clients; ACLs enforced by KRaft's StandardAuthorizer. The PLAINTEXT listener stays the cluster's
# internal one (inter-broker, controller, test set-up) and its ANONYMOUS principal is a super user,
# as is ADMIN_USER (created at format time with the storage tool's own --add-scram).
SCRAM = "SCRAM-SHA-512"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret"
SASL_SETTINGS = {
    "sasl.enabled.mechanisms": SCRAM,
    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    ),
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
    "allow.everyone.if.no.acl.found": "false",
}


class BrokerError(ToolError):
    """The broker could not be fetched, started or stopped. The message is one readable line."""


def _say(message: str) -> None:
    print(f"kafka-broker: {message}", file=sys.stderr, flush=True)


def fetch_jars(cache: Path = DEFAULT_CACHE, version: str = KAFKA_VERSION) -> Path:
    """Return the folder holding the broker's jars, fetching them with `mvn` when not cached."""
    lib = cache / version / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = require_tool("mvn", "Maven fetches the broker jars from Maven Central", BrokerError)
    work = cache / version
    work.mkdir(parents=True, exist_ok=True)
    pom = work / "pom.xml"
    pom.write_text(POM.format(kafka=version, log4j=LOG4J_VERSION))
    if lib.exists():
        shutil.rmtree(lib)
    command = mvn_command(mvn, str(pom))
    command += [
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={lib}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mvn failed fetching kafka_2.13 {version}: {mvn_reason(result.stdout)}")
    jars = list(lib.glob("*.jar"))
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise BrokerError(f"mvn ran but {lib} holds no kafka_2.13 jar")
    marker.write_text(version)
    _say(f"fetched {len(jars)} jars for Kafka {version} in {time.monotonic() - started:.1f}s")
    return lib


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, URL-safe base64, no padding,
    and, as Kafka's own `Uuid.randomUuid` ensures, never starting with "-" (the storage tool's
    argument parser would take it for an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class BrokerState:
    """What identifies a broker on disk, so a later command can find, restart or stop it."""

    workdir: str
    port: int
    controller_port: int
    cluster_id: str
    pid: int | None = None
    sasl_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class Broker:
    """One broker+controller process, its storage and logs in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        controller_port: int = 0,
        extra: dict[str, str] | None = None,
        lib: Path | None = None,
        tie_to_parent: bool = True,
        sasl: bool = False,
    ) -> None:
        self.workdir = workdir
        self.extra = extra or {}
        self.tie_to_parent = tie_to_parent
        self._lib = lib
        for p in (port, controller_port):
            if p:
                check_port_free(p, BrokerError)
        self.state = BrokerState(
            workdir=str(workdir),
            port=port or free_port(),
            controller_port=controller_port or free_port(),
            cluster_id=new_cluster_id(),
            sasl_port=free_port() if sasl else None,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return self.state.bootstrap

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT (SCRAM-SHA-512) listener of the SASL profile."""
        if self.state.sasl_port is None:
            raise BrokerError("this broker was started without the SASL profile")
        return f"127.0.0.1:{self.state.sasl_port}"

    def sasl_conf(self, user: str, password: str) -> dict[str, str]:
        """librdkafka properties of a client that logs in as `user` on the SASL listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM,
            "sasl.username": user,
            "sasl.password": password,
        }

    def add_user(self, user: str, password: str, timeout: float = 30.0) -> None:
        """Create (or change) a SCRAM-SHA-512 user, through the admin API; ready when it can log
        in (credentials reach the listener through the metadata log)."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=timeout)
        probe = AdminClient({**self.sasl_conf(user, password), "log_level": "0"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if probe.list_topics(timeout=2.0).brokers:
                    return
            time.sleep(0.2)
        raise BrokerError(f"SCRAM user {user} cannot log in after {timeout:.0f}s")

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    def lib(self) -> Path:
        if self._lib is None:
            self._lib = fetch_jars()
        return self._lib

    def _write_config(self) -> Path:
        s = self.state
        settings = dict(SERVER_SETTINGS)
        settings.update(
            {
                "controller.quorum.voters": f"1@127.0.0.1:{s.controller_port}",
                "listeners": f"PLAINTEXT://127.0.0.1:{s.port},"
                f"CONTROLLER://127.0.0.1:{s.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.port}",
                "log.dirs": str(self.workdir / "data"),
            }
        )
        if s.sasl_port is not None:
            sasl = f"SASL_PLAINTEXT://127.0.0.1:{s.sasl_port}"
            settings["listeners"] += f",{sasl}"
            settings["advertised.listeners"] += f",{sasl}"
            settings["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            settings.update(SASL_SETTINGS)
        settings.update(self.extra)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(logs=self.workdir / "logs"))
        return config

    def _java(self, main: str, *args: str, jvm: tuple[str, ...]) -> list[str]:
        java = require_tool("java", "Kafka 4.x runs on Java 17+", BrokerError)
        logs = self.workdir / "logs"
        return [
            java,
            *jvm,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            f"{self.lib()}/*",
            main,
            *args,
        ]

    def _format(self, config: Path) -> None:
        if (self.workdir / "data" / "meta.properties").exists():
            return
        command = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.state.cluster_id,
            "-c",
            str(config),
            "--ignore-formatted",
            *self._scram_admin(),
            jvm=("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"),
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise BrokerError(f"formatting KRaft storage failed: {' '.join(tail)[:300]}")

    def _scram_admin(self) -> list[str]:
        if self.state.sasl_port is None:
            return []
        return ["--add-scram", f"{SCRAM}=[name={ADMIN_USER},password={ADMIN_PASSWORD}]"]

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start the broker and wait until it answers; return the start-up time in seconds."""
        started = time.monotonic()
        for p in (self.state.port, self.state.controller_port, self.state.sasl_port):
            if p is not None:
                check_port_free(p, BrokerError)
        config = self._write_config()
        self._format(config)
        command = self._java("kafka.Kafka", str(config), jvm=BROKER_JVM)
        out = open(self.workdir / "logs" / "broker.out", "ab")  # noqa: SIM115 - owned by child
        self.process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if self.tie_to_parent else None,
            start_new_session=not self.tie_to_parent,
        )
        out.close()
        self.state.pid = self.process.pid
        self._wait_ready(started + timeout)
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": "0"})
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"broker exited with code {self.process.returncode} during start-up: "
                    f"{self.log_tail()}"
                )
            try:
                meta = admin.list_topics(timeout=1.0)
                if meta.brokers:
                    return
            except Exception:
                time.sleep(0.2)
        self.kill()
        raise BrokerError(f"broker did not answer on {self.bootstrap} in time: {self.log_tail()}")

    def log_tail(self) -> str:
        for name in ("broker.out", "server.log"):
            path = self.workdir / "logs" / name
            if path.exists():
                lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
                errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
                if errors or lines:
                    return (errors or lines)[-1][:300]
        return "no log output"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGTERM, controlled shutdown); SIGKILL if it does not exit in time."""
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            self.kill()
        self.process = None
        self.state.pid = None

    def kill(self) -> None:
        """SIGKILL the broker: a crash, for fault tests."""
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, 10.0)
        self.process = None
        self.state.pid = None

    def freeze(self) -> None:
        """SIGSTOP the broker: alive but silent, like a network partition (fault tests)."""
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a frozen broker (harmless on a running one)."""
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT_S) -> float:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def running(self) -> bool:
        pid = self._pid()
        return pid is not None and alive(pid)

    def _pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        return self.state.pid

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
        path.write_text(json.dumps(self.state.__dict__))

    @classmethod
    def load(cls, path: Path) -> Broker:
        if not path.exists():
            raise BrokerError(f"no broker state at {path}: run `start` first")
        data = json.loads(path.read_text())
        broker = cls.__new__(cls)
        broker.workdir = Path(data["workdir"])
        broker.extra = {}
        broker.tie_to_parent = False
        broker._lib = None
        broker.state = BrokerState(**data)
        broker.process = None
        broker.startup_seconds = None
        return broker


def _state_file(name: str) -> Path:
    return DEFAULT_STATE / name / "state.json"


def _cmd_start(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if state.exists() and Broker.load(state).running():
        print(Broker.load(state).bootstrap)
        _say("already running")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix=f"lazarus-kafka-{args.name}-"))
    broker = Broker(workdir, port=args.port, tie_to_parent=False, sasl=args.sasl)
    seconds = broker.start()
    state.parent.mkdir(parents=True, exist_ok=True)
    broker.save(state)
    _say(f"Kafka {KAFKA_VERSION} up on {broker.bootstrap} in {seconds:.1f}s (logs: {workdir}/logs)")
    if args.sasl:
        _say(f"SASL ({SCRAM}) on {broker.sasl_bootstrap}: user {ADMIN_USER}, ACLs enforced")
    print(broker.bootstrap)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if not state.exists():
        _say("not running")
        return 0
    broker = Broker.load(state)
    broker.stop()
    shutil.rmtree(broker.workdir, ignore_errors=True)
    state.unlink()
    _say("stopped")
    return 0


def _cmd_restart(args: argparse.Namespace) -> int:
    broker = Broker.load(_state_file(args.name))
    seconds = broker.restart()
    broker.save(_state_file(args.name))
    _say(f"restarted on {broker.bootstrap} in {seconds:.1f}s")
    print(broker.bootstrap)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _state_file(args.name)
    if not state.exists():
        print("stopped")
        return 3
    broker = Broker.load(state)
    if broker.running():
        print(f"running on {broker.bootstrap} (pid {broker.state.pid})")
        return 0
    print(f"not running (last on {broker.bootstrap})")
    return 3


def _cmd_fetch(_: argparse.Namespace) -> int:
    print(fetch_jars())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A real single-node Kafka broker for Lazarus.")
    parser.add_argument("--name", default="dev", help="which broker (state under .cache/broker)")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start in the background and print the bootstrap")
    start.add_argument("--port", type=int, default=0, help="listener port (default: a free one)")
    start.add_argument(
        "--sasl",
        action="store_true",
        help=f"the SASL profile: a {SCRAM} listener too, ACLs enforced, user {ADMIN_USER}",
    )
    for name in ("stop", "restart", "status", "fetch"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    commands = {
        "start": _cmd_start,
        "stop": _cmd_stop,
        "restart": _cmd_restart,
        "status": _cmd_status,
        "fetch": _cmd_fetch,
    }
    try:
        return commands[args.command](args)
    except BrokerError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
