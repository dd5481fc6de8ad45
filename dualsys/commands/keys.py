"""`dualsys keys generate --out DIR [--name NAME]`: CURVE key pairs for off-board links."""

from __future__ import annotations

import argparse
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    """Write NAME.key / NAME.key_secret (0600) for each name; 2 if a file exists or is bad."""
    from dualsys.bus.curve import CurveError, generate

    names = [args.name] if args.name else ["server", "client"]
    for name in names:
        try:
            public, secret = generate(args.out, name, overwrite=args.force)
        except (CurveError, OSError) as exc:
            print(f"dualsys: error: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: public {public}, secret {secret} (mode 0600)")
    print(
        "Use them in the robot TOML:\n"
        f'  [security]\n  curve = true\n  keys_dir = "{args.out}"\n'
        "Copy only public .key files to other machines, and each machine's own .key_secret."
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `keys generate`."""
    p = sub.add_parser("keys", help="ZeroMQ CURVE keys for authenticated off-board links")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ks.add_parser("generate", help="create CURVE key pairs (server and client by default)")
    g.add_argument("--out", required=True, help="directory for the key files (made 0700)")
    g.add_argument("--name", default=None, help="one key pair NAME (default: server and client)")
    g.add_argument("--force", action="store_true", help="replace existing key files")
    g.set_defaults(func=cmd_generate)
