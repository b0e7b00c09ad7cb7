"""Who acts (issue 13): a person logs on through the one authentication service
(:class:`msc.mnemonics.auth.AuthService`) before an administrative or investigative action, and
every attempt is a ``SESSION`` journal record — ``LOGON OK <PEER> <OP>`` or
``LOGON FAILED <reason> <PEER> <OP>`` (peer ``CLI`` for the ``msc`` command, ``WEB`` for the web
console) — committed before anything else happens.

Roles: :data:`ADMIN` administers, :data:`INVESTIGATOR` reads the journal, :data:`JOURNAL_CHECK`
(either) checks it without reading a message.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msc.actions.journaling import DaemonUnavailable, control
from msc.config.load import Settings
from msc.journal.records import Entry, Kind
from msc.mnemonics.auth import Attempt, AuthService, users_file_rehash
from msc.protocol.codes import Reject

#: Administration: users, stations, keys, purge, ``report users --apply``.
ADMIN = ("admin",)
#: Reading what the journal says: search and export (they decrypt CJI).
INVESTIGATOR = ("investigator",)
#: Checking the journal without reading its messages: ``journal verify`` and ``report misuse``
#: (integrity and metadata; an administrator runs them for AU-9/PPP §1.10, an investigator
#: before relying on a record).
JOURNAL_CHECK = ("admin", "investigator")


def service_account_problem(settings: Settings) -> str | None:
    """Why this process may not act (None: it may): it must run as the account that owns the
    master key file, readable by that account alone (docs/SECURITY.md "The master key") —
    whoever reads the key decrypts the journal without an AUDIT record."""
    key = settings.key_file
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return f"no master key at {key}: run `msc keys init --config {settings.config_path}`"
    if st.st_uid != os.geteuid():
        return (f"{key} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}): run msc as the service "
                "account that owns it (e.g. `sudo -u msc msc …`). Whoever reads the master key can decrypt the journal "
                "without an AUDIT record, so no other account may (docs/SECURITY.md)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        return (f"{key} is readable by other accounts (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"`chmod 600 {key}` (docs/SECURITY.md)")
    return None


def service(settings: Settings, *, via: str = "cli") -> AuthService:
    """An authentication service for this process: state.db shared with the daemon; ``via`` labels
    its attempts in the logon counts (``cli`` or ``web``)."""
    from msc.actions.userdir import current
    from msc.mnemonics import totp
    from msc.mnemonics.directory import Directory
    from msc.storage.backends import Backends

    users = Directory(current(settings)).users  # (PostgreSQL: the database's copy, every node's)
    backends = Backends(settings)
    aead: list[AESGCM] = []

    def open_totp(acct) -> bytes:
        if not aead:
            ring = backends.keyring()
            try:
                aead.append(ring.users_aead())
            finally:
                ring.close()
        return totp.open_secret(aead[0], acct.id, acct.totp)

    rehash = users_file_rehash(settings.users_path, backends.users_store(), close=True)
    return AuthService(accounts=users.get, store=backends.runtime_state(), open_totp=open_totp,
                       cost=settings.config.switch.password_cost, rehash=rehash, via=via)


def authenticate(settings: Settings, user_id: str, password: str | None, otp: str | None, *,
                 roles: Iterable[str], op: str, peer: str = "CLI",
                 audit: dict | None = None) -> tuple[Attempt, list[Entry]]:
    """Check one logon for ``op`` with one of ``roles``; return the attempt and the journal
    records it needs (the caller commits them before acting; with ``audit``, a refusal also gets
    an AUDIT record with those fields). A running switch is told at once of a lockout or a
    re-hash this attempt made."""
    uid = (user_id or "").upper()
    svc = service(settings, via="web" if peer == "WEB" else "cli")
    try:
        attempt = svc.authenticate(uid, password or "", (otp or "").strip() or None, roles=roles)
    finally:
        svc.store.close()  # type: ignore[attr-defined]
    entries = journal_entries(attempt, op, peer=peer)
    if audit is not None and not attempt.ok:
        entries.append(Entry(kind=Kind.AUDIT, user=uid,
                             text=json.dumps({**audit, "outcome": "refused", "reason": "authentication refused"},
                                             sort_keys=True)))
    tell_daemon(settings, attempt)
    return attempt, entries


def tell_daemon(settings: Settings, attempt: Attempt) -> None:
    """A running switch re-reads at once what this process changed (a lockout, a re-hash)."""
    for op_, cond in (("auth_changed", attempt.locked_now), ("users_changed", attempt.rehashed)):
        if cond:
            try:
                control(settings, {"op": op_})
            except DaemonUnavailable:
                pass  # no daemon: it reads state.db and users.toml when it starts


def journal_entries(attempt: Attempt, op: str, *, peer: str = "CLI") -> list[Entry]:
    """The SESSION records of one logon attempt outside the switch (peer ``CLI`` or ``WEB``)."""
    if attempt.ok:
        return [Entry(kind=Kind.SESSION, peer=peer, user=attempt.user_id, text=f"LOGON OK {peer} {op.upper()}")]
    why = attempt.refusal.value if attempt.refusal is not None else "REFUSED"
    out = [Entry(kind=Kind.SESSION, peer=peer, user=attempt.user_id, code=Reject.E202.code,
                 text=f"LOGON FAILED {why} {peer} {op.upper()}")]
    if attempt.locked_now:
        out.append(Entry(kind=Kind.SESSION, peer=peer, user=attempt.user_id, code=Reject.E203.code, text="LOCKOUT"))
    return out


def enabled_admins(settings: Settings) -> list[str]:
    """The administrator accounts that exist and are enabled (``status = "active"``), locked or
    not: a locked account still exists — another administrator unlocks it, or, when every one is
    locked, the service account does (:func:`os_actor`, docs/OPERATIONS.md "The first
    administrator")."""
    from msc.actions.userdir import read_users

    return [u.id for u in read_users(settings).user if u.role == "admin" and u.status == "active"]


def locked(settings: Settings) -> set[str]:
    """The accounts locked out now (run-time state: state.db or PostgreSQL)."""
    from msc.storage.backends import Backends

    store = Backends(settings).runtime_state()
    try:
        return store.locked_users()
    finally:
        store.close()


def os_actor() -> str:
    """The journal ``user`` of an act done with no logon (the bootstrap, an unlock when every
    administrator is locked): ``OS:<account>``, the operating-system account that ran msc
    (JOURNAL.md "Record kinds") — never the account the act created or changed."""
    import getpass

    return f"OS:{getpass.getuser()}"
