"""`dualsys keys generate --out DIR [--name NAME]`: CURVE key pairs, one per key role."""

from __future__ import annotations

import argparse
import sys


def placement(out: str) -> str:
    """Which files go to which machine: each process role's secrets and the public keys it
    loads (dualsys/bus/roles.py `key_files`)."""
    from dualsys.bus.roles import MACHINES, key_files

    lines = ["Copy to each machine (over a secure channel), into its keys_dir:"]
    for role, machine in MACHINES.items():
        secret, public = key_files(role)
        files = [f"{r}.key_secret" for r in secret] + [f"{r}.key" for r in public]
        lines.append(f"  {machine}: {' '.join(files)}")
    lines.append(
        "A secret key stays on the machines listed for it (mode 0600, directory 0700); "
        "run `dualsys say` elsewhere only with operator.key_secret there."
    )
    lines.append(
        f'Robot TOML on every machine:\n  [security]\n  curve = true\n  keys_dir = "{out}"'
    )
    return "\n".join(lines)


def cmd_generate(args: argparse.Namespace) -> int:
    """Write ROLE.key / ROLE.key_secret (0600) for every key role (or one --name);
    2 if a file exists or is bad."""
    from dualsys.bus.curve import CurveError, generate
    from dualsys.bus.roles import ROLES

    names = [args.name] if args.name else list(ROLES)
    for name in names:
        try:
            public, secret = generate(args.out, name, overwrite=args.force)
        except (CurveError, OSError) as exc:
            print(f"dualsys: error: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: public {public}, secret {secret} (mode 0600)")
    if args.name:
        print(
            f"To admit this key in a role, put {args.name}.key into "
            "keys_dir/<authorized_dir>/<role>/ and set [security] authorized_dir."
        )
    else:
        print(placement(args.out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `keys generate`."""
    p = sub.add_parser("keys", help="ZeroMQ CURVE keys for authenticated off-board links")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ks.add_parser(
        "generate", help="create CURVE key pairs (robot, system2, operator, stats by default)"
    )
    g.add_argument("--out", required=True, help="directory for the key files (made 0700)")
    g.add_argument("--name", default=None, help="one extra key pair NAME (default: every role)")
    g.add_argument("--force", action="store_true", help="replace existing key files")
    g.set_defaults(func=cmd_generate)
