"""ZeroMQ CURVE for off-board links: keys, socket options, and who may talk to us.

Keys are ZeroMQ certificates (the format of `zmq.auth`): ``NAME.key`` holds the public key,
``NAME.key_secret`` the public and secret key and is written owner-only (0600) in an owner-only
directory. `dualsys keys generate --out DIR` makes a ``server`` and a ``client`` pair.

Roles follow the socket, not the topic: a socket that binds is a CURVE server (it needs its own
secret key), a socket that connects is a CURVE client (its own key pair plus the server's
public key). Without the server's public key a client's handshake fails; with an
authenticator (`start_authenticator`, ZeroMQ's ZAP handler) the server also refuses every
client whose public key is not in the allowed set, so a peer without the right key is never
heard, in either direction (PUB or SUB may be the binding side).

Only tcp:// links use CURVE (`curve_for`): ipc:// sockets are local files in an owner-only
run directory. Every process applies it through one `BusSecurity` per ZeroMQ context:
``Publisher(ctx, ep, ROLE, curve=sec.curve(ep, bind=True))``. Imports only pyzmq.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_BANNER = "#   ZeroMQ CURVE {kind} certificate written by `dualsys keys generate`.\n#   {note}\n"


class CurveError(ValueError):
    """A key file is missing, unreadable, malformed or not protected; the message names it."""


@dataclass(frozen=True)
class KeyPair:
    """One CURVE key pair (Z85-encoded, 40 bytes each). `secret` is None for a public cert."""

    public: bytes
    secret: bytes | None = None


@dataclass(frozen=True)
class CurveConfig:
    """What one process needs to secure its sockets.

    server: this process's key pair when it binds (None: it may not bind a CURVE socket).
    client: this process's key pair when it connects (None: it may not connect one).
    server_public: the public key of the peer it connects to.
    """

    server: KeyPair | None = None
    client: KeyPair | None = None
    server_public: bytes | None = None

    def apply(self, sock: zmq.Socket, *, bind: bool) -> None:
        """Set the CURVE options on `sock` (call before bind/connect)."""
        if bind:
            if self.server is None or self.server.secret is None:
                raise CurveError("a CURVE socket that binds needs the server secret key")
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


# ----------------------------------------------------------------------------- key files


def _write_cert(path: Path, kind: str, pair: KeyPair) -> None:
    note = "Keep this file secret (mode 0600)." if pair.secret else "Public: may be copied."
    lines = [_BANNER.format(kind=kind, note=note), "metadata\n", "curve\n"]
    lines.append(f'    public-key = "{pair.public.decode("ascii")}"\n')
    if pair.secret is not None:
        lines.append(f'    secret-key = "{pair.secret.decode("ascii")}"\n')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if pair.secret else 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write("".join(lines))


def generate(out_dir: str | Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create NAME.key (public) and NAME.key_secret (0600) in `out_dir` (made 0700).

    Refuses to replace existing files unless `overwrite`. Returns (public, secret) paths.
    """
    if not name or "/" in name or name in (".", ".."):
        raise CurveError(f"key name {name!r}: expected a plain file name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    public_path, secret_path = out / f"{name}{PUBLIC_SUFFIX}", out / f"{name}{SECRET_SUFFIX}"
    for p in (public_path, secret_path):
        if p.exists():
            if not overwrite:
                raise CurveError(f"{p} exists (use --force to replace it)")
            p.unlink()
    public, secret = zmq.curve_keypair()
    _write_cert(secret_path, "secret", KeyPair(public, secret))
    _write_cert(public_path, "public", KeyPair(public))
    return public_path, secret_path


def load_pair(keys_dir: str | Path, name: str, *, secret: bool) -> KeyPair:
    """Load NAME.key_secret (secret=True; must be owner-only) or NAME.key from keys_dir."""
    path = Path(keys_dir) / f"{name}{SECRET_SUFFIX if secret else PUBLIC_SUFFIX}"
    if not path.is_file():
        raise CurveError(f"{path}: no such key file (make one with `dualsys keys generate`)")
    if secret and path.stat().st_mode & 0o077:
        raise CurveError(f"{path}: secret key readable by others (chmod 600 {path})")
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError, zmq.ZMQError) as exc:
        raise CurveError(f"{path}: not a ZeroMQ certificate: {exc}") from None
    if not public or len(public) != 40 or (secret and (not sec or len(sec) != 40)):
        raise CurveError(f"{path}: expected 40-character Z85 keys")
    return KeyPair(public, sec if secret else None)


# ----------------------------------------------------------------------------- from config


def curve_for(security, endpoint: str, *, bind: bool) -> CurveConfig | None:
    """The CurveConfig for one socket from a robot's `[security]` table, or None.

    None when CURVE is off or the endpoint is not tcp://. A binding socket loads the server's
    secret key; a connecting one the client's key pair and the server's public key.
    """
    if not security.curve or not endpoint.startswith("tcp://"):
        return None
    d = security.keys_dir
    if bind:
        return CurveConfig(server=load_pair(d, security.server_key, secret=True))
    server_public = load_pair(d, security.server_key, secret=False).public
    return CurveConfig(
        client=load_pair(d, security.client_key, secret=True), server_public=server_public
    )


def authenticator_for(ctx: zmq.Context, security) -> ThreadAuthenticator | None:
    """Start the authenticator a robot's `[security]` asks for (None when CURVE is off).

    authorized_dir set: the public certificates in keys_dir/authorized_dir; otherwise exactly
    the `client_key` public key.
    """
    if not security.curve:
        return None
    if security.authorized_dir:
        return start_authenticator(ctx, allowed=Path(security.keys_dir) / security.authorized_dir)
    client = load_pair(security.keys_dir, security.client_key, secret=False)
    return start_authenticator(ctx, keys=[client.public])


class BusSecurity:
    """CURVE for one process's sockets, from its robot config's `[security]` table.

    `curve(endpoint, bind=...)` is the `curve=` argument of Publisher / Subscriber (or for
    `CurveConfig.apply` on a raw socket): None for ipc:// and inproc:// links and when CURVE is
    off. The first CURVE socket that binds starts the authenticator (ZAP) on the context, so a
    client whose key is not allowed is never heard; `close()` stops it: call it after closing
    the sockets and before terminating the context.

    Construct it before any socket: the keys are loaded and checked here (those for binding
    when `binds`, for connecting when `connects`), so a missing, malformed or unprotected key
    stops the process at start-up with a `dualsys.config.ConfigError` naming the config and
    the key file, and no socket left open.
    """

    def __init__(self, ctx: zmq.Context, cfg, *, binds: bool = True, connects: bool = True):
        self.ctx, self.security, self.path = ctx, cfg.security, cfg.path
        self.auth: ThreadAuthenticator | None = None
        self._configs: dict[bool, CurveConfig] = {}
        if not self.security.curve:
            return
        with self._named():
            if binds:
                self._configs[True] = curve_for(self.security, "tcp://", bind=True)
                _allowed(self.security)
            if connects:
                self._configs[False] = curve_for(self.security, "tcp://", bind=False)

    @contextlib.contextmanager
    def _named(self):
        try:
            yield
        except CurveError as exc:
            from dualsys.config import ConfigError  # lazy: the bus needs no config to load

            raise ConfigError(self.path, "security", str(exc)) from None

    def curve(self, endpoint: str, *, bind: bool) -> CurveConfig | None:
        """The CURVE options for a socket on `endpoint` that binds (server) or connects."""
        if not self.security.curve or not endpoint.startswith("tcp://"):
            return None
        if bind not in self._configs:
            raise CurveError(f"BusSecurity made without {'binds' if bind else 'connects'}=True")
        if bind and self.auth is None:
            with self._named():
                self.auth = authenticator_for(self.ctx, self.security)
        return self._configs[bind]

    def close(self) -> None:
        """Stop the authenticator, if one was started (before the context is terminated)."""
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def _allowed(security) -> None:
    """Check that the clients a binding process allows can be read (raises CurveError)."""
    if security.authorized_dir:
        d = Path(security.keys_dir) / security.authorized_dir
        if not d.is_dir():
            raise CurveError(f"{d}: allowed-clients directory does not exist")
    else:
        load_pair(security.keys_dir, security.client_key, secret=False)


def start_authenticator(
    ctx: zmq.Context, *, allowed: str | Path | None = None, keys: list[bytes] | None = None
) -> ThreadAuthenticator:
    """Start ZeroMQ's ZAP handler on `ctx`: CURVE clients are accepted only if their public key
    is in `allowed` (a directory of NAME.key certificates) or `keys`. Stop it with `.stop()`
    before closing the context. Every CURVE server socket of `ctx` is covered.
    """
    if allowed is None and not keys:
        raise CurveError("an authenticator needs an allowed-keys directory or a key list")
    if allowed is not None and not Path(allowed).is_dir():
        raise CurveError(f"{allowed}: allowed-clients directory does not exist")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    if keys:
        auth.configure_curve_callback("*", credentials_provider=_KeySet(keys))
    else:
        auth.configure_curve(domain="*", location=str(allowed))
    return auth


class _KeySet:
    """ZAP credentials provider accepting a fixed set of client public keys."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """True if the client's public key is allowed."""
        return key in self.keys


__all__ = [
    "BusSecurity",
    "CurveConfig",
    "CurveError",
    "KeyPair",
    "authenticator_for",
    "curve_for",
    "generate",
    "load_pair",
    "start_authenticator",
]
