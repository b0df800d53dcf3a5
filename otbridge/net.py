"""Sockets on this host: free ports for servers a test or a demo starts, and waiting for one."""

from __future__ import annotations

import socket
import time

from otbridge.errors import OtbridgeError

LOOPBACK = "127.0.0.1"


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct TCP ports that were free on `host` a moment ago (all bound at once)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on `host` a moment ago."""
    return free_ports(1, host)[0]


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, host: str = LOOPBACK, *, timeout_s: float = 20.0,
                  what: str = "the server") -> None:
    """Return once host:port accepts connections; OtbridgeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.1)
    raise OtbridgeError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s")
