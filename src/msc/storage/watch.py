"""Background verification of a journal kept in PostgreSQL: ``python -m msc.storage.watch
--config msc.toml`` — :mod:`msc.journal.watch` (the same walk, the same events on stdout) with a
reader of the configured database for each pass. The switch starts it instead of the SQLite
one when ``[storage] backend = "postgresql"``; the password comes from ``password_file`` or
libpq's environment as for the switch, never from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from msc.config.load import ConfigError, load
from msc.journal.records import JournalError
from msc.journal.watch import serve
from msc.storage.backends import Backends, StorageUnavailable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msc.storage.watch", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--interval", type=float, default=3600.0, help="seconds between the starts of passes")
    args = ap.parse_args(argv)
    try:
        settings = load(args.config)
        backends = Backends(settings)
    except (ConfigError, OSError, ValueError) as exc:
        print(json.dumps({"event": "error", "reason": f"configuration: {exc}"}), flush=True)
        return 2
    try:
        return serve(backends.journal_reader, backends.keyring(),
                     name=settings.config.switch.name, interval_s=args.interval)
    except (StorageUnavailable, JournalError) as exc:
        # The database is away (restarting, failing over): not a verification failure — the
        # switch starts the verifier again after a pause (journal.verification_exited).
        print(json.dumps({"event": "unavailable", "reason": str(exc)}), flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
