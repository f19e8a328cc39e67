"""The sd_notify protocol against real AF_UNIX datagram sockets (a path and an abstract name)."""

import logging
import os
import socket
import time
import uuid

import pytest

from edge.service.notify import Notifier


class Listener:
    """A datagram socket bound where systemd's would be; `messages()` returns what arrived."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.5)

    def messages(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self):
        self.sock.close()


@pytest.fixture
def path_socket(tmp_path):
    path = tmp_path / "notify"
    listener = Listener(str(path))
    yield str(path), listener
    listener.close()


@pytest.fixture
def abstract_socket():
    name = f"semanticac-test-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    yield "@" + name, listener
    listener.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_each_message_is_one_datagram_of_key_value_lines(which, request):
    address, listener = request.getfixturevalue(which)
    notifier = Notifier(address)
    assert notifier.ready("listening\n to   urban")
    assert notifier.status("3 events")
    assert notifier.extend_timeout(900)
    assert notifier.stopping()
    assert listener.messages() == [
        "READY=1\nSTATUS=listening to urban",  # a status is one line
        "STATUS=3 events",
        "EXTEND_TIMEOUT_USEC=900000000",
        "STOPPING=1",
    ]


def test_a_reload_is_reloading_then_ready_and_never_stopping(path_socket):
    """serve starts again in place on SIGHUP: systemd must see a reload, not a stop."""
    address, listener = path_socket
    notifier = Notifier(address)
    assert notifier.reloading("reloading")
    assert not notifier.stopping("stopping: the run ends to start again")
    (message,) = listener.messages()
    fields = dict(line.split("=", 1) for line in message.split("\n"))
    assert fields["RELOADING"] == "1" and fields["STATUS"] == "reloading"
    assert abs(int(fields["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000


def test_a_reload_never_shortens_the_watchdog_and_a_stop_that_wins_it_is_said(path_socket):
    address, listener = path_socket
    notifier = Notifier(address, watchdog_usec=1_800_000_000)  # --watchdog-sec 1800
    notifier.reloading("reloading", 900.0)
    assert "WATCHDOG_USEC=1800000000" in listener.messages()[0].split("\n")
    assert notifier.stopping("stopping", after_reloading=True)
    assert listener.messages()[-1] == "STOPPING=1\nSTATUS=stopping"


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert not notifier.ready("x") and not notifier.watchdog()


def test_the_watchdog_follows_watchdog_usec_and_pid(path_socket):
    address, _ = path_socket
    mine = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 0.5  # four pings per period: systemd needs one
    other = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None and not other.watchdog()
    assert Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": address}).watchdog_interval is None


def test_watchdog_pings_are_spaced_a_quarter_period_apart(path_socket):
    address, listener = path_socket
    now = [0.0]
    notifier = Notifier(address, watchdog_usec=1_000_000, clock=lambda: now[0])
    sent = []
    for step in range(21):  # a heartbeat every 0.1 s for 2 s
        now[0] = step * 0.1
        if notifier.watchdog():
            sent.append(round(now[0], 1))
    assert sent == [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8]
    assert listener.messages() == ["WATCHDOG=1"] * len(sent)


def test_a_manager_that_is_gone_is_logged_once_and_never_raised(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="edge.service.notify"):
        assert not notifier.status("a")
        assert not notifier.status("b")
    assert len(caplog.records) == 1 and "nobody-listens" in caplog.text


def test_an_address_that_is_not_unix_turns_notifications_off(caplog):
    with caplog.at_level(logging.WARNING, logger="edge.service.notify"):
        notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled and "vsock:2:1234" in caplog.text
