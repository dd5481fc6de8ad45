"""Who may do what on the bus: CURVE key roles and, per link, who binds and who may connect.

Each role has its own key pair (``keys_dir/ROLE.key_secret``, public ``ROLE.key``):

- ``robot``: the robot computer's processes (robot, System 1, supervisor, recorder): publishes
  state, camera frames, commands and chunks, and binds the supervisor's stats link.
- ``system2``: the System 2 service: publishes latents and receives instructions.
- ``operator``: `dualsys say`: sends instructions and watches the latents for the answer.
- ``stats``: the key every process (robot computer and System 2) uses to talk to the supervisor.

A binding socket is a CURVE server with the key of the link's `server` role, so a peer that
connects pins that role's public key (a robot key cannot stand in for System 2's latent
publisher). The server's ZAP handler (dualsys/bus/curve.py) admits only public keys of the
link's `clients` roles, so a peer holding one role's key cannot act in another (a robot key
cannot send instructions). Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

ROBOT, SYSTEM2, OPERATOR, STATS = "robot", "system2", "operator", "stats"
ROLES = (ROBOT, SYSTEM2, OPERATOR, STATS)
#: Process roles whose processes publish stats to the supervisor (with the `stats` key).
STATS_SENDERS = (ROBOT, SYSTEM2)


@dataclass(frozen=True)
class Link:
    """One bus link: the role whose key its binding socket uses, and the roles that may connect."""

    server: str
    clients: tuple[str, ...]


#: Every link of `[endpoints]`, plus the bridge driver's two links (dualsys/robot/bridge.py).
LINKS: dict[str, Link] = {
    "state": Link(ROBOT, (ROBOT, SYSTEM2)),
    "camera": Link(ROBOT, (ROBOT, SYSTEM2)),
    "command": Link(ROBOT, (ROBOT,)),
    "chunk": Link(ROBOT, (ROBOT,)),
    "stats": Link(ROBOT, (STATS,)),
    "latent": Link(SYSTEM2, (ROBOT, OPERATOR)),
    # the latent's same-machine shm:// slot (no CURVE: it never leaves the robot computer)
    "latent_local": Link(SYSTEM2, (ROBOT,)),
    "instruction": Link(SYSTEM2, (OPERATOR,)),
    # the simulation's evaluation hooks: `dualsys eval` runs on the robot computer
    "scene_reset": Link(ROBOT, (ROBOT,)),
    "scene_truth": Link(ROBOT, (ROBOT,)),
    "bridge_state": Link(ROBOT, (ROBOT,)),
    "bridge_command": Link(ROBOT, (ROBOT,)),
    # a System 2 server's ROUTER (dualsys/system2/server.py): robot links connect, each with
    # its own robot key (authorized_dir/robot/NAME.key names the robot)
    "fleet": Link(SYSTEM2, (ROBOT,)),
}

#: Where each process role runs, for `dualsys keys generate`.
MACHINES = {
    ROBOT: "robot computer (dualsys up / sim / system1, recorder)",
    SYSTEM2: "System 2 (GPU) computer (dualsys system2)",
    OPERATOR: "operator laptop (dualsys say)",
}


def client_role(role: str, link: str) -> str | None:
    """The key a process of `role` connects to `link` with, or None if it may not connect."""
    clients = LINKS[link].clients
    if role in clients:
        return role
    if STATS in clients and role in STATS_SENDERS:
        return STATS
    return None


def bound_links(role: str) -> list[str]:
    """The links a process of `role` may bind (it is their CURVE server)."""
    return [name for name, link in LINKS.items() if link.server == role]


def connected_links(role: str) -> list[str]:
    """The links a process of `role` may connect to."""
    return [name for name in LINKS if client_role(role, name) is not None]


def key_files(role: str) -> tuple[list[str], list[str]]:
    """(secret, public) key names a process of `role` loads: its own and the stats secret,
    the public keys of the servers it connects to and of the clients its servers admit."""
    secret = sorted({role} | {client_role(role, n) for n in connected_links(role)})
    public = {LINKS[n].server for n in connected_links(role)}
    for name in bound_links(role):
        public.update(LINKS[name].clients)
    return secret, sorted(public)


__all__ = [
    "LINKS",
    "MACHINES",
    "OPERATOR",
    "ROBOT",
    "ROLES",
    "STATS",
    "STATS_SENDERS",
    "SYSTEM2",
    "Link",
    "bound_links",
    "client_role",
    "connected_links",
    "key_files",
]
