"""Fixtures of the connector tests: a loopback-only guard, fake DNS, topic reading.

Every connector test runs under `loopback_only`: a connection to anything
outside 127.0.0.0/8 and ::1 is refused and fails the test, so address-policy
tests prove that a refused host was never contacted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterator

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from newswatch import topics
from newswatch.config import Settings
from tests.connectors.servers import FeedServer


@contextlib.contextmanager
def loopback_guard() -> Iterator[list[object]]:
    """Refuse (and record) every connection attempt to a non-loopback address while open."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: object) -> bool:
        if not isinstance(address, tuple):
            return True  # Unix sockets
        host = str(address[0]).split("%", 1)[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(self: socket.socket, address: object) -> None:
        if not allowed(address):
            attempts.append(address)
            raise PermissionError(f"test guard: connection to {address} refused")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not allowed(address):
            attempts.append(address)
            raise PermissionError(f"test guard: connection to {address} refused")
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield attempts


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[list[object]]:
    """Refuse (and report) every connection attempt to a non-loopback address."""
    with loopback_guard() as attempts:
        yield attempts
    assert not attempts, f"connections to non-loopback addresses were attempted: {attempts}"


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name -> addresses answered by `socket.getaddrinfo` (other names resolve normally).

    Names under ``.test`` cannot exist (RFC 6761), so this stands in for DNS
    answers that no real resolver may give.
    """
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:
        if isinstance(host, str) and host in table:
            answers = []
            for ip in table[host]:
                v6 = ipaddress.ip_address(ip).version == 6
                family = socket.AF_INET6 if v6 else socket.AF_INET
                sockaddr = (ip, port, 0, 0) if v6 else (ip, port)
                answers.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return answers
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def read_topic() -> Callable[[Settings, str], list[ConsumerRecord]]:
    """A function returning every record of a topic, from the beginning to its end now."""

    def read(settings: Settings, topic: str, timeout: float = 30.0) -> list[ConsumerRecord]:
        return topics.read_topic(settings.bootstrap_servers, topic, timeout)

    return read
