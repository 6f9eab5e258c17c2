"""Helpers of the Python client's tests: the real collector binary, the real
broker (topics private to the test), and reading event ids off a topic."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Counter, Dict, Iterable, List, Optional

REPO = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def binary(name: str) -> Path:
    """A built mlwatch binary (scripts/python-test.sh builds them)."""
    env = os.environ.get("MLWATCH_" + name.upper().replace("-", "_").removeprefix("MLWATCH_") + "_BIN")
    path = Path(env) if env else TARGET / "debug" / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/python-test.sh (it builds it)")
    return path


def bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def topics(name: str) -> Dict[str, str]:
    """Topic names private to one test run."""
    suffix = f"{name}.{uuid.uuid4().hex[:10]}"
    return {"inference": f"pytest.inference.{suffix}", "labels": f"pytest.labels.{suffix}"}


def terminate(proc: "Optional[subprocess.Popen[bytes]]", grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (0 when no process)."""
    if proc is None:
        return 0
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Service:
    """A real mlwatch service binary as a child process, with a TOML config,
    ready once its admin port answers ``/readyz``."""

    def __init__(self, binary_name: str, tmp: Path, admin_port: int, config: str) -> None:
        self.binary_name = binary_name
        self.admin_port = admin_port
        self.config = tmp / f"{binary_name}-{admin_port}.toml"
        self.log = tmp / f"{binary_name}-{admin_port}.log"
        self.config.write_text(config)
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 60.0) -> "Service":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary(self.binary_name)), "--config", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary_name} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.binary_name} not ready within {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        terminate(self.proc, 30)
        self.proc = None


class Collector(Service):
    """`mlwatch-collector` on fixed loopback ports: HTTP p, gRPC p+1, admin p+2."""

    def __init__(self, tmp: Path, http_port: int, topic_names: Dict[str, str], extra: str = "") -> None:
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}"
        self.topics = topic_names
        super().__init__("mlwatch-collector", tmp, http_port + 2, f"""
[kafka]
bootstrap_servers = "{bootstrap()}"
[kafka.topics]
inference = "{topic_names['inference']}"
labels = "{topic_names['labels']}"
[http]
listen = "127.0.0.1:{http_port}"
[grpc]
listen = "127.0.0.1:{http_port + 1}"
[admin]
listen = "127.0.0.1:{http_port + 2}"
[log]
filter = "warn"
{extra}
""")

    def start(self, timeout: float = 60.0) -> "Collector":
        super().start(timeout)
        return self


class Analyzer(Service):
    """`mlwatch-analyzer` with topics, group, state topic and directories of its own;
    its API on the admin port."""

    def __init__(self, tmp: Path, admin_port: int, name: str) -> None:
        suffix = f"{name}.{uuid.uuid4().hex[:10]}"
        self.url = f"http://127.0.0.1:{admin_port}"
        topic = {k: f"pytest.{k}.{suffix}" for k in ("inference", "labels", "alerts", "actions", "deadletter", "profiles")}
        topic_lines = "\n".join(f'{k} = "{v}"' for k, v in topic.items())
        super().__init__("mlwatch-analyzer", tmp, admin_port, f"""
[kafka]
bootstrap_servers = "{bootstrap()}"
[kafka.topics]
{topic_lines}
[admin]
listen = "127.0.0.1:{admin_port}"
[analyzer]
group_id = "pytest-analyzer-{suffix}"
state_topic = "pytest.state.{suffix}"
[accuracy.join]
dir = "{tmp / 'join'}"
[drift]
profile_dir = "{tmp / 'profiles'}"
[log]
filter = "warn"
""")


def _varint(buf: bytes, i: int) -> tuple:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def event_id_of(value: bytes) -> str:
    """Field 1 (``event_id``) of an InferenceEvent / LabelEvent in protobuf."""
    i, found = 0, ""
    while i < len(value):
        key, i = _varint(value, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(value, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(value, i)
            if field == 1:
                found = value[i:i + n].decode()
            i += n
        else:
            raise ValueError(f"wire type {wire}")
    return found


def read_event_ids(topic: str, expected: int, timeout: float = 120.0, quiet: float = 3.0) -> Counter[str]:
    """Event ids on a topic, counted, read from the start until ``expected``
    messages arrived and ``quiet`` seconds more passed with no new one (so
    duplicates would show), or ``timeout``."""
    return collections.Counter(event_id_of(v) for v in read_values(topic, expected, timeout, quiet))


def read_values(topic: str, expected: int, timeout: float = 120.0, quiet: float = 3.0) -> List[bytes]:
    """The messages (protobuf bytes) on a topic, read as `read_event_ids` reads."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: PLC0415

    consumer = Consumer({
        "bootstrap.servers": bootstrap(),
        "group.id": f"pytest-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    # Every partition from its start, without a consumer group's rebalance.
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values: List[bytes] = []
    total = 0
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=10000, timeout=0.5)
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(str(m.error()))
                values.append(m.value())
                total += 1
            if msgs:
                last_new = time.monotonic()
            elif total >= expected and time.monotonic() - last_new >= quiet:
                break
    finally:
        consumer.close()
    return values


def exactly_once(ids: Counter[str], expected: Iterable[str]) -> List[str]:
    """Problems, if any: ids missing, duplicated or unexpected."""
    want = set(expected)
    problems = []
    missing = want - set(ids)
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {sorted(missing)[:3]}")
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        problems.append(f"{len(dup)} duplicated, e.g. {dup[:3]}")
    extra = set(ids) - want
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {sorted(extra)[:3]}")
    return problems


class App:
    """A FastAPI app served by uvicorn in a child process."""

    def __init__(self, app_dir: Path, module: str, port: int, env: Dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.cmd = [
            sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
        ]
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 60.0) -> "App":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/openapi.json")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"app not up within {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM (uvicorn shuts down, the middleware flushes the monitor); the exit code."""
        code = terminate(self.proc, 60)
        self.proc = None
        return code


def post_json(url: str, path: str, body: Any, conn: Optional[http.client.HTTPConnection] = None) -> tuple:
    """(status, headers, parsed body) of a JSON POST."""
    parsed = urllib.parse.urlsplit(url)
    own = conn is None
    c = conn or http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data) if data else None
    finally:
        if own:
            c.close()
