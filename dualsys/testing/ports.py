"""Free tcp ports on the loopback for tests that start real servers."""

from __future__ import annotations

import socket


def free_ports(n: int = 1) -> list[int]:
    """`n` distinct tcp ports on 127.0.0.1 that were free a moment ago (held open together so
    they differ, then released for the caller's server to bind)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free tcp port on 127.0.0.1."""
    return free_ports(1)[0]
