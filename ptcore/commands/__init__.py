"""Subcommands of the `ptcore` command line (see ptcore/cli.py)."""
