"""Loading the configuration for a sub-command: every problem printed, exit status 2."""

from __future__ import annotations

import argparse
import sys

from msc.cli.auth import EXIT_USAGE
from msc.config.load import ConfigError, Settings, load


def load_settings(args: argparse.Namespace) -> Settings:
    """The validated settings of ``args.config``; on a problem each one is printed as
    ``error: FILE:LINE: …`` and the command exits with status 2 (usage)."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if settings.config.storage.backend != "sqlite":
        # Fail closed: never write to the SQLite files while the configuration names PostgreSQL.
        print(f"error: {settings.config_path}: {NOT_WIRED}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return settings


#: Why a configuration with ``[storage] backend = "postgresql"`` is refused (CONFIG.md "Storage").
NOT_WIRED = ('[storage] backend = "postgresql": msc serve and the msc command do not run on PostgreSQL yet '
             '(the backend and its verification exist; CONFIG.md "Storage")')
