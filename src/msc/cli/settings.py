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
    return settings
