"""`dualsys robots` lists the embodiment configs; `dualsys check FILE` validates one."""

from __future__ import annotations

import argparse
import sys

from dualsys import config


def cmd_robots(args: argparse.Namespace) -> int:
    """Print one line per robot config found in robots/ (invalid ones are flagged)."""
    paths = config.available()
    if not paths:
        print(f"no robot configs in {config.ROBOTS_DIR}")
        return 1
    for path in paths:
        try:
            cfg = config.load(path)
        except config.ConfigError as exc:
            print(f"{path.stem:12s} INVALID  {exc}")
            continue
        controlled = ",".join(g.name for g in cfg.groups.values() if g.controlled)
        print(
            f"{cfg.name:12s} {cfg.n_joints:3d} joints  control {cfg.rates.control_hz} Hz  "
            f"driver {cfg.driver:7s} controls {controlled}  {path}"
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate one config; print a summary, or the error (file, key, reason) and exit 2."""
    from dualsys.robot import config_check  # loads MuJoCo: only here, not in config.load

    try:
        cfg = config.load_robot(args.file)
        config_check.check(cfg)
    except config.ConfigError as exc:
        print(f"dualsys: error: {exc}", file=sys.stderr)
        return 2
    r = cfg.rates
    print(
        f"{cfg.path}: ok: robot {cfg.name!r}, {cfg.n_joints} joints in {len(cfg.groups)} groups "
        f"({len(cfg.controlled_indices)} controlled), control {r.control_hz} Hz, "
        f"actions {r.action_hz} Hz x {cfg.policy.chunk_horizon}, "
        f"System 2 {r.system2_min_hz:g}-{r.system2_max_hz:g} Hz, latent {cfg.system2.latent_dim}"
    )
    insecure = [n for n, ep in cfg.endpoints.items() if ep.startswith("tcp://")]
    if insecure and not cfg.security.curve:  # loading refused this unless allowed explicitly
        print(
            f"dualsys: warning: {cfg.path}: [security] allow_insecure_tcp = true: the tcp:// "
            f"links {', '.join(insecure)} are neither authenticated nor encrypted",
            file=sys.stderr,
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `robots` and `check` subcommands."""
    p = sub.add_parser("robots", help="list the robot configs in robots/")
    p.set_defaults(func=cmd_robots)
    p = sub.add_parser("check", help="validate a robot config (a name in robots/ or a path)")
    p.add_argument("file", help="robots/NAME.toml, a path, or a robot name")
    p.set_defaults(func=cmd_check)
