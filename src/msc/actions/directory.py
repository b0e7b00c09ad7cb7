"""The administrator's actions on users and stations (CJIS IA-4, IA-5, AC-2; PPP §1.9.1), each an
``ADMIN`` journal record naming the administrator, applied to a running switch at once (its
control socket) — the ``msc user|station`` commands and the web console's administrator page.

Refusals raise :class:`ActionRefused` with the text a person reads (the CLI prints it as
``error: …`` and exits 2; the web shows it next to the form); a refusal because the storage is
away (nothing wrong with the request) is its subclass :class:`ActionUnavailable` (the web console
answers it 503 like any storage outage, docs/WEB.md "When the storage is away").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import msgspec

from msc.actions.journaling import DaemonNoAnswer, DaemonUnavailable, control, notify_users_changed, record_admin
from msc.config.load import ConfigError, Settings
from msc.config.model import UserEntry, UsersFile
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password
from msc.protocol import grammar

PRIVILEGED = frozenset(("admin", "investigator"))  # roles that always get TOTP (CJIS IA-2(1))
ID_REUSE_DAYS = 365  # CJIS IA-4d (PPP §1.6.7 B says six months; the stricter applies)
ROLES = ("full", "ltfa", "practitioner", "admin", "investigator")


class ActionRefused(Exception):
    """The action was not done; ``str()`` says why (for the person who asked)."""


class ActionUnavailable(ActionRefused):
    """The action was not done because the storage it needs is away (PostgreSQL's
    :class:`~msc.storage.errors.StorageUnavailable`, or the running switch's control reply
    ``storage unavailable: …``): the same request may succeed later. ``str()`` names the store."""


def password_problem(pw: str, user_id: str, name: str, settings: Settings | None = None,
                     ori: str | None = None) -> str | None:
    """CJIS IA-5(1)(a) (:func:`msc.mnemonics.passwords.password_problem`)."""
    from msc.mnemonics.passwords import context_words
    from msc.mnemonics.passwords import password_problem as problem

    return problem(pw, user_id, name, context=context_words(settings, ori) if settings is not None else ())


def validate_users(settings: Settings, users: UsersFile) -> None:
    """Validate a prospective users.toml against the running configuration; raises ConfigError."""
    from msc.config.validate import validate

    probe = Settings(config=settings.config, users=users, config_path=settings.config_path,
                     users_path=settings.users_path, base_dir=settings.base_dir)
    issues = [i for i in validate(probe) if i.file == str(settings.users_path)]
    if issues:
        raise ConfigError(issues)


def update_users(settings: Settings, change: Callable[[UsersFile], UsersFile],
                 validate: Callable[[UsersFile], None] | None = None) -> UsersFile:
    """Every change of the user directory the ``msc`` command and the web console make
    (:func:`msc.mnemonics.userfile.update`): with ``[storage] backend = "postgresql"`` committed
    to the database's copy first — every node of a pair enforces it — then written to this
    machine's users.toml. Fail closed: a database that cannot take it refuses the change
    (:class:`ActionRefused`, nothing changed anywhere)."""
    from msc.storage.backends import Backends, StorageUnavailable

    store = None
    try:
        store = Backends(settings).users_store()
        return userfile.update(settings.users_path, change, validate, store=store)
    except StorageUnavailable as exc:
        raise ActionUnavailable(f"nothing was changed: {exc}") from None
    finally:
        if store is not None:
            store.close()


def _read(settings: Settings) -> UsersFile:
    from msc.actions.userdir import read_users
    from msc.storage.backends import StorageUnavailable

    try:
        return read_users(settings)
    except StorageUnavailable as exc:
        raise ActionUnavailable(str(exc)) from None


def users_where(settings: Settings) -> str:
    """Where a change of the user directory went, for the person who made it: the file, or
    (PostgreSQL) the database's copy that every node enforces, and this machine's copy."""
    if settings.config.storage.backend != "postgresql":
        return str(settings.users_path)
    from msc.storage.backends import Backends

    return (f"the user directory in {Backends(settings).describe()} (every node enforces it; "
            f"this machine's copy: {settings.users_path})")


def check_new_user(settings: Settings, uid: str, ori: str, role: str, today: dt.date) -> None:
    """What refuses ``user add`` before any password is asked for: the ID's form, an existing or
    recently removed ID (CJIS IA-4d), an unknown agency or role."""
    if grammar.USER_ID_RE.match(uid) is None:
        raise ActionRefused("a user ID is 6 characters [A-Z0-9] (PPP §1.6.7)")
    current = _read(settings)
    if any(u.id == uid for u in current.user):
        raise ActionRefused(f"user {uid} already exists")
    for r in current.removed:
        if r.id == uid and (today - r.removed).days < ID_REUSE_DAYS:
            raise ActionRefused(f"{uid} was removed on {r.removed} and may not be reassigned before "
                                f"{r.removed + dt.timedelta(days=ID_REUSE_DAYS)} (CJIS IA-4d)")
    if ori not in {a.ori for a in settings.config.agency}:
        raise ActionRefused(f"no agency with ORI {ori} in {settings.config_path}")
    if role not in ROLES:
        raise ActionRefused(f"unknown role {role!r} (one of {', '.join(ROLES)})")


@dataclass(frozen=True)
class AddedUser:
    user_id: str
    totp_uri: str | None  # the provisioning URI, shown once (None: no TOTP enrolled)

    @property
    def totp_secret(self) -> str | None:
        return parse_qs(urlparse(self.totp_uri).query)["secret"][0] if self.totp_uri else None


def add_user(settings: Settings, actor: str, *, uid: str, name: str, ori: str, role: str, password: str,
             dob: dt.date | None = None, certified_until: dt.date | None = None, totp: bool = False,
             bootstrap: bool = False) -> AddedUser:
    """Add a user to users.toml (journaled ``USER ADD … `` naming ``actor``; ``bootstrap``: the
    first administrator, made by the service account while no enabled administrator exists —
    ``actor`` is then ``OS:<account>``, :func:`msc.actions.identity.os_actor`). Privileged roles always get TOTP (CJIS IA-2(1))."""
    uid = uid.upper()
    today = dt.date.today()
    check_new_user(settings, uid, ori, role, today)
    if not name or not name.strip() or len(name) > 64 or any(ord(c) < 0x20 or ord(c) > 0x7E for c in name):
        raise ActionRefused("a name is 1-64 printable ASCII characters")
    problem = password_problem(password, uid, name, settings, ori)
    if problem:
        raise ActionRefused(problem)
    totp_secret = uri = None
    if totp or role in PRIVILEGED:
        from msc.mnemonics.totp import enrol
        from msc.storage.backends import Backends

        ring = Backends(settings).keyring()
        try:
            totp_secret, uri = enrol(settings, uid, ring)
        finally:
            ring.close()
    entry = UserEntry(id=uid, name=name, ori=ori, role=role,  # type: ignore[arg-type]
                      password=hash_password(password, ln=settings.config.switch.password_cost),
                      dob=dob, totp=totp_secret, certified_until=certified_until, created=today)

    def change(users: UsersFile) -> UsersFile:
        if any(u.id == uid for u in users.user):
            raise ActionRefused(f"user {uid} already exists")
        kept = tuple(r for r in users.removed if r.id != uid)
        return msgspec.structs.replace(users, user=(*users.user, entry), removed=kept)

    try:
        update_users(settings, change, lambda u: validate_users(settings, u))
    except ConfigError as exc:
        raise ActionRefused("; ".join(str(i) for i in exc.issues)) from None
    text = f"USER ADD {uid} ROLE/{role} ORI/{ori}" + (" TOTP" if totp_secret else "")
    if bootstrap:
        text = f"BOOTSTRAP {text} (NO ENABLED ADMINISTRATOR EXISTED)"
    notify_users_changed(settings, text, user=actor)
    return AddedUser(uid, uri)


def find_user(settings: Settings, uid: str) -> UserEntry:
    u = next((u for u in _read(settings).user if u.id == uid), None)
    if u is None:
        raise ActionRefused(f"no user {uid} in {settings.users_path}")
    return u


def change_user(settings: Settings, uid: str, fn) -> None:
    try:
        update_users(settings, lambda users: userfile.replace_user(users, uid, fn), lambda u: validate_users(settings, u))
    except LookupError:
        raise ActionRefused(f"no user {uid} in {settings.users_path}") from None
    except ConfigError as exc:
        raise ActionRefused("; ".join(str(i) for i in exc.issues)) from None


def set_user_status(settings: Settings, actor: str, uid: str, *, disabled: bool, reason: str = "") -> None:
    """``user disable|enable``: a running switch logs a disabled user off within a second."""
    uid = uid.upper()
    find_user(settings, uid)
    status = "disabled" if disabled else "active"
    change_user(settings, uid, lambda e: msgspec.structs.replace(e, status=status))
    notify_users_changed(settings, f"USER {'DISABLE' if disabled else 'ENABLE'} {uid}{reason}", user=actor)


def unlock_user(settings: Settings, actor: str, uid: str, *, recovery: str = "") -> None:
    """``user unlock`` (CJIS AC-7): release a lockout; a running switch re-reads it at once.
    ``recovery``: the service account's unlock while every enabled administrator is locked
    (appended to the record's text; ``actor`` is then ``OS:<account>``)."""
    from msc.storage.backends import Backends

    uid = uid.upper()
    find_user(settings, uid)
    store = Backends(settings).runtime_state()  # shared with the daemon; it re-reads at once when told
    try:
        store.unlock(uid)
    finally:
        store.close()
    try:
        control(settings, {"op": "auth_changed"})
    except DaemonUnavailable:
        pass
    record_admin(settings, f"USER UNLOCK {uid}{recovery}", user=actor)


def set_station_status(settings: Settings, actor: str, mnemonic: str, *, disabled: bool) -> bool:
    """``station disable|enable`` (PPP §1.9.1: a stolen or misplaced terminal, at once): a running
    switch drops the station's session at once. Returns True when a running switch applied it."""
    from msc.storage.backends import Backends

    mnemonic = mnemonic.upper()
    if mnemonic not in {s.mnemonic for s in settings.config.station}:
        raise ActionRefused(f"no station {mnemonic} in {settings.config_path}")
    try:
        reply = control(settings, {"op": "station", "mnemonic": mnemonic, "disabled": disabled})
        if not reply.get("ok"):
            why = str(reply.get("error"))
            # (msc.server.control: the switch's run-time state away is "storage unavailable: …")
            raise (ActionUnavailable if why.startswith("storage unavailable") else ActionRefused)(why)
        live = True
    except DaemonNoAnswer as exc:
        # The switch took the request and did not answer (its run-time state locked or slow): it
        # may have applied it or not — never written here behind its back, where a running switch
        # would not see it (a "disabled" station that still logs on; newcomer trial nc20 #1).
        raise ActionUnavailable(f"the running switch took the request and did not answer ({exc}): station "
                                f"{mnemonic} may or may not be {'disabled' if disabled else 'enabled'} — look at "
                                "its status (the web console's Stations tab) before repeating") from None
    except DaemonUnavailable:
        # Nobody at the control socket: written where the next start reads it — only while no msc
        # serve of this node holds data_dir/serve.lock (one starting or stopping would not see it).
        from msc.instance import DaemonHere, no_daemon_here

        try:
            with no_daemon_here(settings.data_dir):
                store = Backends(settings).runtime_state()
                try:
                    store.set_station(mnemonic, disabled)
                finally:
                    store.close()
        except DaemonHere as exc:
            raise ActionUnavailable(f"nothing was changed: {exc}") from None
        live = False
    record_admin(settings, f"STATION {'DISABLE' if disabled else 'ENABLE'} {mnemonic}", user=actor)
    return live


def disable_inactive(settings: Settings, actor: str, ids: list[str]) -> list[str]:
    """``report users --apply`` (CJIS AC-2): disable accounts inactive 90 days."""
    done = []
    for uid in ids:
        def disable(users: UsersFile, uid: str = uid) -> UsersFile:
            return userfile.replace_user(users, uid, lambda u: msgspec.structs.replace(u, status="disabled"))

        update_users(settings, disable)
        notify_users_changed(settings, f"USER DISABLE {uid} INACTIVE 90 DAYS (CJIS AC-2)", user=actor)
        done.append(uid)
    return done


def station_rows(settings: Settings) -> list[dict]:
    """Every configured station with its run-time state (disabled by ``station disable``)."""
    from msc.storage.backends import Backends

    store = Backends(settings).runtime_state()
    try:
        disabled = set(store.disabled_stations())
        last = store.station_last_use()
    finally:
        store.close()
    rows = []
    for st in settings.config.station:
        used = last.get(st.mnemonic)
        rows.append({"mnemonic": st.mnemonic, "kind": st.kind, "ori": st.ori,
                     "status": "disabled" if st.mnemonic in disabled or st.status == "disabled" else "active",
                     "disabled_in_config": st.status == "disabled",
                     "addresses": list(st.addresses), "client_cert_cn": st.client_cert_cn,
                     "last_use": dt.datetime.fromtimestamp(used, dt.UTC).isoformat(timespec="seconds")
                     if used else None})
    return rows


def user_rows(settings: Settings) -> dict:
    """``user list``: users with role, status, lockout, TOTP, certification, last logon."""
    from msc.actions.userdir import read_users
    from msc.storage.backends import Backends

    users = read_users(settings)  # (StorageUnavailable: the msc command says it in one line)
    state = {}
    backends = Backends(settings)
    if backends.postgresql or settings.data_dir.exists():
        store = backends.runtime_state()
        try:
            state = store.users()
        finally:
            store.close()

    def when(t):
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds") if t else None

    rows = []
    for u in users.user:
        st = state.get(u.id)
        rows.append({"id": u.id, "name": u.name, "ori": u.ori, "role": u.role, "status": u.status,
                     "locked": bool(st and st.locked_at), "totp": u.totp is not None,
                     "certified_until": u.certified_until.isoformat() if u.certified_until else None,
                     "last_logon": when(st.last_logon) if st else None})
    return {"users": rows, "removed": [{"id": r.id, "removed": r.removed.isoformat()} for r in users.removed]}
