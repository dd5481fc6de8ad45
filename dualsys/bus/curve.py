"""ZeroMQ CURVE for off-board links: socket options, and which key may talk on which link.

Keys have roles (dualsys/bus/roles.py): ``keys_dir/ROLE.key_secret`` and its public
``ROLE.key`` for robot, system2, operator and stats, made by `dualsys keys generate`
(dualsys/bus/keyfiles.py writes and checks the files). A socket that binds link L is a CURVE
server with the key of L's server role; a socket that connects is a CURVE client with its
role's key and pins the server role's public key, so it hears no impostor. Each binding socket
sets its ZAP domain to its link name, and the ZAP handler (`start_authenticator`) admits on
that domain only the public keys of the roles allowed to connect to L: ``ROLE.key`` in
keys_dir, or every ``*.key`` in ``authorized_dir/ROLE/`` when `authorized_dir` is set. A peer
holding one role's key cannot act in another, and a socket without a domain admits nobody.

Only tcp:// links use CURVE: ipc:// sockets are local files in an owner-only run directory.
A tcp:// link without CURVE is refused unless `[security] allow_insecure_tcp = true`, which
warns at every process start. Every process applies it through one `BusSecurity` per ZeroMQ
context: ``Publisher(ctx, ep, SRC, curve=sec.curve(ep, bind=True))``. Imports only pyzmq.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from dualsys.bus.keyfiles import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    CurveError,
    authorized_keys,
    generate,
    keys_dir_checked,
    load_cert,
)
from dualsys.bus.roles import LINKS, MACHINES, ROBOT, bound_links, client_role, connected_links


@dataclass(frozen=True)
class KeyPair:
    """One CURVE key pair (Z85-encoded, 40 bytes each). `secret` is None for a public cert."""

    public: bytes
    secret: bytes | None = None


@dataclass(frozen=True)
class CurveConfig:
    """What one socket needs for CURVE.

    server: this socket's key pair when it binds (a CURVE server).
    client: this socket's key pair when it connects (a CURVE client).
    server_public: the public key of the peer it connects to.
    domain: the ZAP domain of a binding socket (its link name): the authenticator admits the
        keys allowed on that domain.
    """

    server: KeyPair | None = None
    client: KeyPair | None = None
    server_public: bytes | None = None
    domain: str = ""

    def apply(self, sock: zmq.Socket, *, bind: bool) -> None:
        """Set the CURVE options on `sock` (call before bind/connect)."""
        if bind:
            if self.server is None or self.server.secret is None:
                raise CurveError("a CURVE socket that binds needs the server secret key")
            if self.domain:
                sock.zap_domain = self.domain.encode("ascii")
            sock.curve_server = True
            sock.curve_secretkey = self.server.secret
            sock.curve_publickey = self.server.public
        else:
            if self.client is None or self.client.secret is None:
                raise CurveError("a CURVE socket that connects needs the client key pair")
            if self.server_public is None:
                raise CurveError("a CURVE socket that connects needs the server's public key")
            sock.curve_serverkey = self.server_public
            sock.curve_publickey = self.client.public
            sock.curve_secretkey = self.client.secret


def load_pair(keys_dir: str | Path, name: str, *, secret: bool) -> KeyPair:
    """Load NAME.key_secret (secret=True; must be owner-only) or NAME.key from keys_dir."""
    path = Path(keys_dir) / f"{name}{SECRET_SUFFIX if secret else PUBLIC_SUFFIX}"
    public, sec = load_cert(path, secret=secret)
    return KeyPair(public, sec)


# ----------------------------------------------------------------------------- ZAP


class _KeySet:
    """ZAP credentials provider accepting a fixed set of client public keys."""

    def __init__(self, keys: Collection[bytes]) -> None:
        self.keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """True if the client's public key is allowed on this domain."""
        return key in self.keys


def start_authenticator(
    ctx: zmq.Context, domains: Mapping[str, Collection[bytes]]
) -> ThreadAuthenticator:
    """Start ZeroMQ's ZAP handler on `ctx`: a CURVE client of a server socket whose ZAP domain
    is D is accepted only if its public key is in `domains[D]` ("*": sockets without a domain).
    Other domains admit nobody. Stop it with `.stop()` before closing the context."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    for domain, keys in domains.items():
        auth.configure_curve_callback(domain, credentials_provider=_KeySet(keys))
    return auth


# ----------------------------------------------------------------------------- per process

_WARNED: set[tuple[str, str]] = set()


def _warn_insecure(path, links: list[str]) -> None:
    """Warn once per process, config and link that a tcp:// link runs without CURVE."""
    new = [n for n in links if (str(path), n) not in _WARNED]
    if not new:
        return
    _WARNED.update((str(path), n) for n in new)
    from dualsys.timing import warn_once

    warn_once(
        f"{path}: [security] allow_insecure_tcp = true: the tcp:// links {', '.join(new)} are "
        "neither authenticated nor encrypted; anyone who can reach them can read and inject "
        "messages"
    )


class BusSecurity:
    """CURVE for one process's sockets, from its robot config's `[security]` table.

    `role` is the process's key role (dualsys/bus/roles.py): "robot" for the robot computer's
    processes, "system2", "operator" for `dualsys say`. `curve(endpoint, bind=...)` is the
    `curve=` argument of Publisher / Subscriber (or for `CurveConfig.apply` on a raw socket):
    None for ipc:// and inproc:// links, and for tcp:// ones when CURVE is off and the config
    says `allow_insecure_tcp`. The first CURVE socket that binds starts the authenticator (ZAP)
    on the context, shared by every BusSecurity of that context; `close()` stops it when the
    last one closes: call it after closing the sockets and before terminating the context.

    Construct it before any socket: the keys are loaded and checked here (those for binding
    when `binds`, for connecting when `connects`), so a missing, malformed or unprotected key
    stops the process at start-up with a `dualsys.config.ConfigError` naming the config and
    the key file, and no socket left open.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        cfg,
        *,
        role: str = ROBOT,
        binds: bool = True,
        connects: bool = True,
    ) -> None:
        if role not in MACHINES:
            raise ValueError(f"process role {role!r}: expected one of {', '.join(MACHINES)}")
        self.ctx, self.cfg, self.role = ctx, cfg, role
        self.security, self.path = cfg.security, cfg.path
        self.auth: ThreadAuthenticator | None = None
        self._server: KeyPair | None = None
        self._clients: dict[str, KeyPair] = {}
        self._servers_public: dict[str, bytes] = {}
        self._allowed: dict[str, frozenset[bytes]] = {}
        if not self.security.curve:
            if self.security.allow_insecure_tcp:
                tcp = [n for n, ep in cfg.endpoints.items() if ep.startswith("tcp://")]
                _warn_insecure(self.path, tcp)
            return
        with self._named():
            keys = keys_dir_checked(self.security.keys_dir)
            if binds and bound_links(role):
                self._server = load_pair(keys, role, secret=True)
                for link in bound_links(role):
                    self._allowed[link] = frozenset().union(
                        *(self._role_keys(r) for r in LINKS[link].clients)
                    )
            if connects:
                for link in connected_links(role):
                    key_role = client_role(role, link)
                    if key_role not in self._clients:
                        self._clients[key_role] = load_pair(keys, key_role, secret=True)
                    server = LINKS[link].server
                    if server not in self._servers_public:
                        self._servers_public[server] = load_pair(keys, server, secret=False).public

    def _role_keys(self, role: str) -> frozenset[bytes]:
        if self.security.authorized_dir:
            return authorized_keys(self.security.keys_dir, self.security.authorized_dir, role)
        return frozenset({load_pair(self.security.keys_dir, role, secret=False).public})

    @contextlib.contextmanager
    def _named(self):
        try:
            yield
        except CurveError as exc:
            from dualsys.config import ConfigError  # lazy: the bus needs no config to load

            raise ConfigError(self.path, "security", str(exc)) from None

    def _link_of(self, endpoint: str) -> str:
        names = [n for n, ep in self.cfg.endpoints.items() if ep == endpoint]
        if len(names) != 1:
            raise CurveError(
                f"tcp:// endpoint {endpoint!r} is not exactly one link of {self.path}; "
                "name the link (link=...)"
            )
        return names[0]

    def curve(self, endpoint: str, *, bind: bool, link: str | None = None) -> CurveConfig | None:
        """The CURVE options for a socket on `endpoint` that binds (server) or connects.

        `link` names the link (a key of roles.LINKS); by default it is the `[endpoints]` entry
        whose value is `endpoint`. Raises ConfigError for a tcp:// link without CURVE (unless
        allowed) and CurveError for a link this process's role may not serve or connect to.
        """
        if not endpoint.startswith("tcp://"):
            return None
        link = link or self._link_of(endpoint)
        if not self.security.curve:
            if self.security.allow_insecure_tcp:
                _warn_insecure(self.path, [link])  # once: already said at start for [endpoints]
                return None
            with self._named():
                raise CurveError(
                    f"{link} link {endpoint}: tcp:// link without CURVE; enable [security] "
                    "curve or set [security] allow_insecure_tcp = true"
                )
        if link not in LINKS:
            raise CurveError(f"unknown link {link!r} (expected one of {', '.join(LINKS)})")
        if bind:
            return self._server_config(link)
        key_role = client_role(self.role, link)
        if key_role is None:
            raise CurveError(f"role {self.role!r} may not connect to the {link} link")
        if key_role not in self._clients:
            raise CurveError("BusSecurity made without connects=True")
        return CurveConfig(
            client=self._clients[key_role],
            server_public=self._servers_public[LINKS[link].server],
        )

    def _server_config(self, link: str) -> CurveConfig:
        if LINKS[link].server != self.role:
            raise CurveError(f"role {self.role!r} may not bind the {link} link")
        if self._server is None:
            raise CurveError("BusSecurity made without binds=True")
        if self.auth is None:
            self.auth = _share_authenticator(self.ctx, self._allowed)
        return CurveConfig(server=self._server, domain=link)

    def close(self) -> None:
        """Stop the authenticator when no other BusSecurity of the context uses it."""
        if self.auth is not None:
            _release_authenticator(self.ctx)
            self.auth = None


#: One ZAP handler per context (ZeroMQ allows one): id(ctx) -> [ctx, authenticator, users].
_AUTHS: dict[int, list] = {}


def _share_authenticator(ctx: zmq.Context, allowed: dict[str, frozenset[bytes]]):
    entry = _AUTHS.get(id(ctx))
    if entry is None or entry[0] is not ctx:
        entry = _AUTHS[id(ctx)] = [ctx, start_authenticator(ctx, allowed), 0]
    else:
        for domain, keys in allowed.items():
            entry[1].configure_curve_callback(domain, credentials_provider=_KeySet(keys))
    entry[2] += 1
    return entry[1]


def _release_authenticator(ctx: zmq.Context) -> None:
    entry = _AUTHS.get(id(ctx))
    if entry is None or entry[0] is not ctx:
        return
    entry[2] -= 1
    if entry[2] <= 0:
        entry[1].stop()
        del _AUTHS[id(ctx)]


__all__ = [
    "BusSecurity",
    "CurveConfig",
    "CurveError",
    "KeyPair",
    "generate",
    "load_pair",
    "start_authenticator",
]
