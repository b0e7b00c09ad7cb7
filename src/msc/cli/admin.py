"""Journaling from the CLI (:mod:`msc.actions.journaling`, shared with the web console)."""

from msc.actions.journaling import (  # noqa: F401
    DaemonUnavailable,
    _direct,
    _direct_journal,
    control,
    daemon_running,
    notify_users_changed,
    record,
    record_admin,
)
