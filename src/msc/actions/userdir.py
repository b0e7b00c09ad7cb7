"""The user directory as the ``msc`` command and the web console read it: ``users.toml``, or with
``[storage] backend = "postgresql"`` the database's copy every node enforces (issue 16; the file
on this machine may be a few seconds behind it, or stale when no node runs here —
:mod:`msc.mnemonics.userfile`)."""

from __future__ import annotations

import dataclasses

from msc.config.load import Settings
from msc.config.model import UsersFile
from msc.mnemonics import userfile


def read_users(settings: Settings) -> UsersFile:
    """The user directory now. PostgreSQL: the database's copy (this machine's file while the
    database holds none yet — the first node to start imports it); raises
    :class:`msc.storage.errors.StorageUnavailable` when the database cannot be asked."""
    if settings.config.storage.backend != "postgresql":
        return userfile.read(settings.users_path)
    from msc.storage.backends import Backends

    store = Backends(settings).users_store()
    assert store is not None
    try:
        doc = store.read()
    finally:
        store.close()
    return userfile.read(settings.users_path) if doc is None else userfile.loads(doc.text)


def current(settings: Settings) -> Settings:
    """``settings`` with the user directory now (:func:`read_users`): what a logon of the
    ``msc`` command or the web console checks against."""
    if settings.config.storage.backend != "postgresql":
        return settings
    return dataclasses.replace(settings, users=read_users(settings))
