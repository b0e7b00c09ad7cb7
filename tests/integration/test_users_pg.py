"""The user directory on PostgreSQL (issue 16, newcomer8 #1): every change of a user is made in the
database's copy, so the node that serves after a failover enforces it — and a change that cannot
be made there is refused.

Two machines, A and B, with the same configuration on one real PostgreSQL database (tests/pg.py),
B with a copy of A's users.toml and master key file as OPERATIONS.md "Running two nodes" sets a
pair up. A switch (in this process) serves on A; the user is changed on A — by the ``msc user …``
actions, a terminal's ``PWD``, the unlock; A stops (the failover: here a clean one, the kill -9 is
tests/e2e/test_ha_nodes.py); the switch on B starts from B's own, now stale, users.toml and must
enforce the change: the disabled or removed user refused, the new password the one that works,
the new user let in. Before, B enforced its stale file (a disabled user logged on again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from msc.actions import directory
from msc.config.load import load
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password
from msc.server.switch import Switch
from msc.storage.backends import Backends
from tests.conftest import PASSWORD, TEST_COST, free_port, make_config
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(300)

NEW = "a new passphrase for the pair"
_db = itertools.count(1)


class Machines:
    """A's and B's configuration directories on one database; the switch running on one of them."""

    def __init__(self, tmp: Path, pg) -> None:
        db = f"users{os.getpid()}_{next(_db)}"
        pg.create_database(db)
        self.dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/{db}"
        self.password = pg.password
        self.dir = {n: tmp / n for n in "AB"}
        self.cfg = {n: make_config(self.dir[n]) for n in "AB"}
        for n in "AB":
            self.with_storage(self.cfg[n], self.dsn)
        shutil.rmtree(self.dir["B"] / "data" / "keys")  # B's key ring: the database's (A's, imported at A's first use)
        (self.dir["B"] / "data" / "keys").mkdir(mode=0o700)
        shutil.copy2(self.dir["A"] / "data" / "keys" / "master.key", self.dir["B"] / "data" / "keys" / "master.key")
        shutil.copy2(self.dir["A"] / "users.toml", self.dir["B"] / "users.toml")
        self.switch: Switch | None = None

    def with_storage(self, cfg: Path, dsn: str) -> None:
        secret = cfg.parent / "pg.password"
        secret.write_text(self.password + "\n")
        secret.chmod(0o600)
        text = cfg.read_text()
        if "[storage]" in text:
            text = text[:text.index("\n[storage]")]
        cfg.write_text(text + f'\n[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\npassword_file = "pg.password"\n')

    def settings(self, n: str):
        return load(self.cfg[n])

    async def start(self, n: str) -> Switch:
        assert self.switch is None
        self.switch = Switch(load(self.cfg[n]))
        await self.switch.start()
        return self.switch

    async def stop(self) -> None:
        sw, self.switch = self.switch, None
        if sw is not None:
            await sw.stop()

    async def logon(self, header: str, user: str, password: str) -> str:
        """"A", or the reject code, as the terminal sees it."""
        assert self.switch is not None
        c = await WireClient.connect(self.switch.listener_ports()["terminals"])
        try:
            await c.banner()
            f = await c.logon(header, user, password)
            return "A" if f.type == "A" else f.code
        finally:
            c.close()

    def stored(self) -> userfile.Document | None:
        store = Backends(self.settings("A")).users_store()
        assert store is not None
        try:
            return store.read()
        finally:
            store.close()

    def replaced(self, n: str) -> list[Path]:
        return sorted(self.dir[n].glob("users.toml.replaced-*"))


@pytest.fixture
async def machines(tmp_path, pg_server):
    m = Machines(tmp_path, pg_server)
    try:
        yield m
    finally:
        with contextlib.suppress(Exception):
            await m.stop()


def _user(settings, uid: str):
    return next((u for u in userfile.read(settings.users_path).user if u.id == uid), None)


# -- what is done on A ------------------------------------------------------------------------

async def disable(m: Machines) -> None:
    await asyncio.to_thread(directory.set_user_status, m.settings("A"), "AD0001", "TS0002", disabled=True)


async def add(m: Machines) -> None:
    await asyncio.to_thread(directory.add_user, m.settings("A"), "AD0001", uid="TS0009", name="NINE, NED",
                            ori="CA0130000", role="full", password=NEW)


async def passwd(m: Machines) -> None:  # msc user passwd
    s = m.settings("A")
    hashed = hash_password(NEW, ln=TEST_COST)
    await asyncio.to_thread(directory.change_user, s, "TS0002", lambda e: msgspec.structs.replace(e, password=hashed))


async def remove(m: Machines) -> None:  # msc user remove
    today = dt.date.today()
    await asyncio.to_thread(directory.update_users, m.settings("A"), lambda u: userfile.remove_user(u, "TS0002", today))


async def pwd(m: Machines) -> None:  # the operator's own PWD at a terminal of A
    assert m.switch is not None
    c = await WireClient.connect(m.switch.listener_ports()["terminals"])
    try:
        await c.banner()
        assert (await c.logon("ICS2", "TS0002", PASSWORD)).type == "A"
        f = await c.send(f"ICS2.PWD.{PASSWORD}.{NEW}")
        assert f.type == "A", f
    finally:
        c.close()


async def unlock(m: Machines) -> None:  # locked by wrong passwords at A, unlocked by the administrator
    for i in range(12):
        await m.logon("ICS2", "TS0002", f"wrong {i}")
    state = Backends(m.settings("A")).runtime_state()
    try:
        assert state.user("TS0002").locked_at is not None
    finally:
        state.close()
    await asyncio.to_thread(directory.unlock_user, m.settings("A"), "AD0001", "TS0002")


#: id, the change made on A, then on B after the failover: (station, user, password, what the terminal sees)
CHANGES: list[tuple[str, Callable[[Machines], Awaitable[None]], list[tuple[str, str, str, str]]]] = [
    ("disable", disable, [("ICS2", "TS0002", PASSWORD, "E202"), ("ICS1", "TS0001", PASSWORD, "A")]),
    ("add", add, [("ICS2", "TS0009", NEW, "A")]),
    ("passwd", passwd, [("ICS2", "TS0002", PASSWORD, "E202"), ("ICS2", "TS0002", NEW, "A")]),
    ("remove", remove, [("ICS2", "TS0002", PASSWORD, "E202")]),
    ("pwd", pwd, [("ICS2", "TS0002", PASSWORD, "E202"), ("ICS2", "TS0002", NEW, "A")]),
    ("unlock", unlock, [("ICS2", "TS0002", PASSWORD, "A")]),
]


@pytest.mark.parametrize("name,change,after", CHANGES, ids=[c[0] for c in CHANGES])
async def test_a_user_changed_on_one_node_is_enforced_by_the_other_after_a_failover(machines, name, change, after):
    m = machines
    b_before = (m.dir["B"] / "users.toml").read_text()
    await m.start("A")
    first = m.stored()
    assert first is not None and first.text == (m.dir["A"] / "users.toml").read_text()  # A's file imported at its start
    await change(m)
    now = m.stored()
    # The change is in the database's user directory, and A's copy; an unlock is run-time state
    # (a lockout), in the database since before: the directory stays as it was.
    assert now is not None and (now.version == first.version if name == "unlock" else now.version > first.version)
    assert (m.dir["A"] / "users.toml").read_text() == now.text
    assert (m.dir["B"] / "users.toml").read_text() == b_before  # (B runs nothing: its copy is stale)
    await m.stop()  # the failover

    await m.start("B")
    for header, user, password, seen in after:
        assert await m.logon(header, user, password) == seen, (name, user, password)
    assert (m.dir["B"] / "users.toml").read_text() == now.text  # B's copy is the database's now
    if now.text != b_before:  # B's stale copy kept beside it, owner-only
        (kept,) = m.replaced("B")
        assert kept.read_text() == b_before and kept.stat().st_mode & 0o077 == 0
    else:
        assert m.replaced("B") == []


async def test_a_change_the_database_cannot_take_is_refused_and_nothing_changes(machines):
    m = machines
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    m.with_storage(m.cfg["A"], dead)
    s = m.settings("A")
    before = (m.dir["A"] / "users.toml").read_bytes()
    hashed = hash_password(NEW, ln=TEST_COST)
    today = dt.date.today()
    refusals = {
        "disable": lambda: directory.set_user_status(s, "AD0001", "TS0002", disabled=True),
        "add": lambda: directory.add_user(s, "AD0001", uid="TS0009", name="NINE, NED", ori="CA0130000", role="full",
                                          password=NEW),
        "passwd": lambda: directory.change_user(s, "TS0002", lambda e: msgspec.structs.replace(e, password=hashed)),
        "remove": lambda: directory.update_users(s, lambda u: userfile.remove_user(u, "TS0002", today)),
        "inactive": lambda: directory.disable_inactive(s, "AD0001", ["TS0002"]),
    }
    for what, act in refusals.items():
        with pytest.raises(directory.ActionRefused) as caught:
            await asyncio.to_thread(act)
        assert "PostgreSQL" in str(caught.value) and "nowhere" in str(caught.value), (what, str(caught.value))
        assert (m.dir["A"] / "users.toml").read_bytes() == before, what


async def test_a_pwd_the_database_cannot_take_is_refused_e503_and_the_old_password_stays(machines):
    from msc.storage.pgusers import PgUsersStore
    from msc.storage.postgres import PgSettings

    m = machines
    sw = await m.start("A")
    before = (m.dir["A"] / "users.toml").read_bytes()
    sw.accounts.users_store = PgUsersStore(PgSettings(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"))
    c = await WireClient.connect(sw.listener_ports()["terminals"])
    try:
        await c.banner()
        assert (await c.logon("ICS2", "TS0002", PASSWORD)).type == "A"
        f = await c.send(f"ICS2.PWD.{PASSWORD}.{NEW}")
        assert (f.type, f.code) == ("N", "E503")
    finally:
        c.close()
        sw.accounts.users_store.close()
    assert (m.dir["A"] / "users.toml").read_bytes() == before
    assert await m.logon("ICS2", "TS0002", NEW) == "E202"
    assert await m.logon("ICS2", "TS0002", PASSWORD) == "A"


async def test_a_running_node_applies_a_change_made_on_the_other_machine_within_seconds(machines):
    m = machines
    sw = await m.start("A")
    c = await WireClient.connect(sw.listener_ports()["terminals"])
    try:
        await c.banner()
        assert (await c.logon("ICS2", "TS0002", PASSWORD)).type == "A"
        # An administrator's change committed from B's machine (the database's copy; A is told nothing).
        await asyncio.to_thread(directory.change_user, m.settings("B"), "TS0002",
                                lambda e: msgspec.structs.replace(e, status="disabled"))
        f = await asyncio.wait_for(c.sys.get(), HANG_S)  # logged off by A: within its next look
        assert f.text == "SYS.LOGOFF.USER DISABLED"
    finally:
        c.close()
    assert await m.logon("ICS2", "TS0002", PASSWORD) == "E202"
    assert (m.dir["A"] / "users.toml").read_text() == m.stored().text
    assert m.replaced("A") == []  # A's copy was the database's: nothing of its own to keep


async def test_a_hand_edit_on_the_active_node_is_published_by_a_reload_and_refused_if_the_database_moved(machines):
    m = machines
    sw = await m.start("A")
    path = m.dir["A"] / "users.toml"
    users = userfile.read(path)
    userfile.write(path, userfile.replace_user(users, "TS0002", lambda e: msgspec.structs.replace(e, status="disabled")))
    assert await sw.reload()
    stored = m.stored()
    assert stored is not None and stored.text == path.read_text()
    assert _user(m.settings("A"), "TS0002").status == "disabled"
    assert await m.logon("ICS2", "TS0002", PASSWORD) == "E202"

    # Edited again here while another machine's change is committed: the edit is not published —
    # refused by the reload, or (if the node's look came first) replaced by the database's copy.
    edited = userfile.replace_user(userfile.read(path), "TS0002", lambda e: msgspec.structs.replace(e, status="active"))
    userfile.write(path, edited)
    hand = path.read_text()
    await asyncio.to_thread(directory.update_users, m.settings("B"),
                            lambda u: userfile.replace_user(u, "TS0001", lambda e: msgspec.structs.replace(e, status="disabled")))
    if not await sw.reload():
        assert "not published" in (sw.last_reload_error or "")
    assert path.read_text() == m.stored().text  # the database's copy installed …
    assert hand in [p.read_text() for p in m.replaced("A")]  # … the hand edit kept beside it
    assert await m.logon("ICS2", "TS0002", PASSWORD) == "E202"
    assert await m.logon("ICS1", "TS0001", PASSWORD) == "E202"
