"""Two test hosts on one machine: network namespaces joined by a veth pair (root only).

`two_hosts()` creates the namespaces `dualsys-s2-srv` (10.231.78.1) and `dualsys-s2-bot`
(10.231.78.2) and removes them on exit; `NetnsError` says why they could not be made
(not root, no `ip` tool, a kernel without namespaces), so a test can skip with the reason.
The addresses exist only inside the two namespaces this creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

NS = ("dualsys-s2-srv", "dualsys-s2-bot")
VETH = ("dss2veth-a", "dss2veth-b")
ADDR = ("10.231.78.1", "10.231.78.2")


class NetnsError(RuntimeError):
    """The namespaces cannot be created here; the message says why."""


@dataclass(frozen=True)
class Hosts:
    """The server host and the robot host: namespace names and addresses."""

    server_ns: str = NS[0]
    robot_ns: str = NS[1]
    server_addr: str = ADDR[0]
    robot_addr: str = ADDR[1]

    def run_in(self, ns: str, argv: list[str]) -> list[str]:
        """argv that runs `argv` inside namespace `ns`."""
        return ["ip", "netns", "exec", ns, *argv]


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def _cleanup() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@contextlib.contextmanager
def two_hosts() -> Iterator[Hosts]:
    """Create the two namespaces and the veth link between them; remove them afterwards."""
    if os.geteuid() != 0:
        raise NetnsError("needs root (CAP_NET_ADMIN) to create network namespaces")
    if shutil.which("ip") is None:
        raise NetnsError("the `ip` tool (iproute2) is not installed")
    _cleanup()
    try:
        for ns in NS:
            _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
        for ns, dev, addr in zip(NS, VETH, ADDR, strict=True):
            _sh("ip", "link", "set", dev, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        _cleanup()
        err = (getattr(exc, "stderr", b"") or b"").decode().strip()
        raise NetnsError(f"cannot create network namespaces here: {exc} {err}") from None
    try:
        yield Hosts()
    finally:
        _cleanup()
