"""CURVE key files: written owner-only, read only when their owner and permissions are safe.

Keys are ZeroMQ certificates (the format of `zmq.auth`): ``NAME.key`` holds the public key,
``NAME.key_secret`` the public and secret key. A file or directory is trusted only when it is
owned by the current user or root and nobody else can write it; a secret key additionally only
when nobody else can read it. The allowed-clients directory (`authorized_dir`) must resolve,
symlinks followed, to a directory inside `keys_dir`. Imports only pyzmq.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import zmq
import zmq.auth

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_BANNER = "#   ZeroMQ CURVE {kind} certificate written by `dualsys keys generate`.\n#   {note}\n"


class CurveError(ValueError):
    """A key file is missing, unreadable, malformed or not protected; the message names it."""


def check_owner_and_mode(path: Path, *, secret: bool = False) -> None:
    """Raise CurveError unless `path` is owned by us or root and writable by nobody else
    (with `secret`: readable by nobody else either)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CurveError(f"{path}: cannot read ({exc.strerror})") from None
    if st.st_uid not in (os.getuid(), 0):
        raise CurveError(
            f"{path}: owned by uid {st.st_uid}; expected the current user ({os.getuid()}) or root"
        )
    what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    if secret and st.st_mode & 0o077:
        raise CurveError(
            f"{path}: secret key readable or writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}; chmod 600 {path})"
        )
    if st.st_mode & 0o022:
        raise CurveError(
            f"{path}: {what} writable by group or others (mode {stat.S_IMODE(st.st_mode):o}; "
            f"chmod go-w {path})"
        )


def _write_cert(path: Path, kind: str, public: bytes, secret: bytes | None) -> None:
    note = "Keep this file secret (mode 0600)." if secret else "Public: may be copied."
    lines = [_BANNER.format(kind=kind, note=note), "metadata\n", "curve\n"]
    lines.append(f'    public-key = "{public.decode("ascii")}"\n')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"\n')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
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
    _write_cert(secret_path, "secret", public, secret)
    _write_cert(public_path, "public", public, None)
    return public_path, secret_path


def load_cert(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from one certificate file, after the ownership/mode checks."""
    if not path.is_file():
        raise CurveError(f"{path}: no such key file (make one with `dualsys keys generate`)")
    check_owner_and_mode(path, secret=secret)
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError, zmq.ZMQError) as exc:
        raise CurveError(f"{path}: not a ZeroMQ certificate: {exc}") from None
    if not public or len(public) != 40 or (secret and (not sec or len(sec) != 40)):
        raise CurveError(f"{path}: expected 40-character Z85 keys")
    return public, sec if secret else None


def keys_dir_checked(keys_dir: str | Path) -> Path:
    """`keys_dir` after its ownership and permission checks."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise CurveError(f"{d}: keys_dir is not a directory (make it with `dualsys keys generate`)")
    check_owner_and_mode(d)
    return d


def authorized_keys(keys_dir: str | Path, authorized_dir: str, role: str) -> frozenset[bytes]:
    """The public keys allowed in `role`: every NAME.key in keys_dir/authorized_dir/ROLE/.

    The directory must resolve (symlinks followed) inside keys_dir and, like each key file in
    it, pass the ownership and permission checks. An empty directory allows nobody.
    """
    base = keys_dir_checked(keys_dir).resolve()
    if Path(authorized_dir).is_absolute() or ".." in Path(authorized_dir).parts:
        raise CurveError(f"authorized_dir {authorized_dir!r}: expected a path inside keys_dir")
    top = (base / authorized_dir).resolve()
    if not top.is_relative_to(base):
        raise CurveError(f"authorized_dir {authorized_dir!r} resolves to {top}, outside {base}")
    d = top / role
    if not d.is_dir() or not d.resolve().is_relative_to(base):
        raise CurveError(f"{d}: no allowed-keys directory for role {role!r} inside {base}")
    check_owner_and_mode(top)
    check_owner_and_mode(d)
    return frozenset(load_cert(p, secret=False)[0] for p in sorted(d.glob(f"*{PUBLIC_SUFFIX}")))


__all__ = [
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "CurveError",
    "authorized_keys",
    "check_owner_and_mode",
    "generate",
    "keys_dir_checked",
    "load_cert",
]
