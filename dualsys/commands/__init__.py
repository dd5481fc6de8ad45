"""Subcommands of the `dualsys` CLI, one module each (each defines `register(subparsers)`)."""
