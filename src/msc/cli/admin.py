"""Journaling from the CLI (:mod:`msc.actions.journaling`, shared with the web console)."""

from msc.actions.journaling import (  # noqa: F401
    DaemonNoAnswer,
    DaemonUnavailable,
    _direct,
    control,
    daemon_running,
    direct_journal,
    notify_users_changed,
    record,
    record_admin,
)
