"""A real mosquitto broker for tests: on 127.0.0.1, a free port, a config in a temp folder.

`Broker(folder).start()` runs Debian's /usr/sbin/mosquitto in the foreground of a child process;
`stop()` ends it (SIGTERM; retained messages are not persisted, as a broker that lost them),
`start()` again brings it back on the same port (clients reconnect). Optional: a password
(`users={"name": "secret"}`, anonymous clients refused) and TLS (`tls=TlsFiles.make(folder)`:
a throw-away CA and a server certificate for 127.0.0.1, made with the openssl command).
`Link(port)` is a path to it that a test can cut and mend unannounced (a network that goes away).

For test modules: the `broker` fixture (one broker per module: import it, `from tests.mosquitto
import broker`; tests keep apart by topic) and `Subscriber`, a real paho client that records
what arrives and waits for it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


class MosquittoUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate a client trusts
    cert: Path  # the broker's certificate (CN and subjectAltName 127.0.0.1)
    key: Path

    @classmethod
    def make(cls, folder: Path, days: int = 2) -> "TlsFiles":
        """`days`: how long the broker's certificate is valid from now (-1: it expired a day ago)."""
        if shutil.which("openssl") is None:
            raise MosquittoUnavailable("openssl is missing: install the openssl package")
        folder.mkdir(parents=True, exist_ok=True)
        files = cls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
        ca_key, csr, ext = folder / "ca.key", folder / "server.csr", folder / "ext.cnf"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for command in (
            ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", files.ca, "-days", "2", "-subj", "/CN=test CA"],
            ["openssl", "req", *ec, "-keyout", files.key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["openssl", "x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", files.cert, "-days", str(days), "-extfile", ext],
        ):
            done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise MosquittoUnavailable(f"openssl failed: {done.stderr.strip()[-300:]}")
        return files


class Broker:
    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls: TlsFiles | None = None):
        if not os.access(MOSQUITTO, os.X_OK):
            raise MosquittoUnavailable(f"{MOSQUITTO} is missing: install the mosquitto package (make test does)")
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} {HOST}", "persistence false", f"log_dest file {self.log}",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 f"user {getpass.getuser()}"]  # as root, stay root (no switch to `mosquitto`)
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        if users:
            passwords = folder / "passwords"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password],
                               check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "Broker":
        """Start (or start again, on the same port) and return once it accepts connections."""
        assert not self.running, "the broker is already running"
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                log = self.log.read_text()[-500:] if self.log.exists() else ""
                raise MosquittoUnavailable(f"mosquitto exited with {self.process.returncode}: {err.strip()} {log}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise MosquittoUnavailable(f"mosquitto did not listen on {HOST}:{self.port} within 10 s")

    def stop(self) -> None:
        """End it as a service manager would (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.stop()

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def broker_or_skip(folder: Path, **kwargs) -> Broker:
    """A Broker (not started); the test skips without mosquitto, and fails under CI."""
    try:
        return Broker(folder, **kwargs)
    except MosquittoUnavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the MQTT tests need mosquitto: {err}")
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One running broker for the module; a test that stops it starts it again. Killed at the end."""
    server = broker_or_skip(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    try:
        yield server
    finally:
        server.kill()



class Link:
    """A TCP path to a broker that can be cut without either end being told, as a Wi-Fi link that
    goes or a NAT that forgets the connection: while cut, the bytes of the connections it carries
    are read and dropped both ways, and a new connection is closed at once (the network is away);
    mended, new connections get through, and those it cut stay dead until their ends give up."""

    def __init__(self, port: int):
        self.target = port
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        self.cuts = 0  # a connection carries bytes while no cut came after it was made
        self.is_cut = False
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.server.accept()
            except OSError:
                return  # closed
            if self.is_cut:
                near.close()
                continue
            far = socket.create_connection((HOST, self.target))
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._carry, args=(src, dst, self.cuts), daemon=True).start()

    def _carry(self, src: socket.socket, dst: socket.socket, made: int) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self.cuts == made:
                try:
                    dst.sendall(data)
                except OSError:
                    break
        if self.cuts == made:  # an end closed its side: the other end is told, as over a working link
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def cut(self) -> None:
        self.cuts += 1
        self.is_cut = True

    def mend(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self.server.close()

WAIT = 10.0  # seconds at most for a message to arrive (they take milliseconds)


@dataclass
class Received:
    topic: str
    payload: str
    retain: bool

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records every message on `topics` (subscribed before it returns)."""

    def __init__(self, port, topics, username=None, password=None, ca=None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.sync_topic = f"test/sync/{uuid.uuid4().hex}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        if username:
            self.client.username_pw_set(username, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.subscribe([(t, 1) for t in [*topics, self.sync_topic]])
        self.client.loop_start()
        assert subscribed.wait(WAIT), "the subscription was not acknowledged"

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.messages.append(Received(message.topic, message.payload.decode(), bool(message.retain)))
            self.cond.notify_all()

    def wait_for(self, match, timeout=WAIT) -> Received:
        """The first message (so far or to come) that `match`es."""
        with self.cond:
            found: list[Received] = []
            ok = self.cond.wait_for(lambda: found.extend(m for m in self.messages if match(m)) or found, timeout)
        assert ok, f"no such message within {timeout} s; received: {[(m.topic, m.payload) for m in self.messages]}"
        return found[0]

    def on(self, topic, payload=None, timeout=WAIT) -> Received:
        return self.wait_for(lambda m: m.topic == topic and (payload is None or m.payload == payload), timeout)

    def sync(self) -> None:
        """Return once everything the broker queued for us before now has arrived (it keeps
        one client's messages in order)."""
        marker = uuid.uuid4().hex
        self.client.publish(self.sync_topic, marker, qos=1)
        self.on(self.sync_topic, marker)

    def topics(self, topic) -> list[Received]:
        with self.cond:
            return [m for m in self.messages if m.topic == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    """`subscribers(port, topics, ...)` -> a Subscriber, closed after the test."""
    made: list[Subscriber] = []

    def make(*args, **kwargs):
        made.append(Subscriber(*args, **kwargs))
        return made[-1]

    yield make
    for sub in made:
        sub.close()
