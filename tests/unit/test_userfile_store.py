"""users.toml and the database's copy of the user directory (msc.mnemonics.userfile with a store;
issue 16, newcomer8 #1), against an in-memory store that behaves as msc.storage.pgusers does (one
versioned document, a change applied to the current one) and one that cannot be reached. The real
PostgreSQL store: tests/integration/test_users_pg.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from msc.config.model import UsersFile
from msc.mnemonics import userfile
from msc.mnemonics.auth import users_file_rehash
from msc.mnemonics.userfile import Document
from tests.conftest import write_users


class Memory:
    """A UsersStore in memory."""

    def __init__(self, text: str | None = None) -> None:
        self.doc = None if text is None else Document(1, text)
        self.writes = 0

    def describe(self) -> str:
        return "memory"

    def version(self) -> int | None:
        return None if self.doc is None else self.doc.version

    def read(self) -> Document | None:
        return self.doc

    def update(self, change: Callable[[Document | None], str | None]) -> tuple[Document | None, bool]:
        text = change(self.doc)
        if text is None:
            return self.doc, False
        self.doc = Document(1 if self.doc is None else self.doc.version + 1, text)
        self.writes += 1
        return self.doc, True

    def close(self) -> None:
        pass


class Unreachable(Memory):
    def version(self) -> int | None:
        raise OSError("the user directory in memory: connection refused")

    def read(self) -> Document | None:
        raise OSError("the user directory in memory: connection refused")

    def update(self, change: Callable[[Document | None], str | None]) -> tuple[Document | None, bool]:
        raise OSError("the user directory in memory: connection refused")


def status(path: Path, uid: str) -> str:
    return next(u.status for u in userfile.read(path).user if u.id == uid)


def disable(uid: str) -> Callable[[UsersFile], UsersFile]:
    return lambda users: userfile.replace_user(users, uid, lambda u: msgspec.structs.replace(u, status="disabled"))


@pytest.fixture
def path(tmp_path) -> Path:
    p = tmp_path / "users.toml"
    write_users(p)
    return p


def test_a_change_applies_to_the_databases_copy_not_to_this_machines_file(path, tmp_path):
    other = tmp_path / "other.toml"
    write_users(other)
    store = Memory(other.read_text())  # the database's copy: another machine's
    userfile.update(path, disable("TS0002"), store=store)
    assert store.doc is not None and store.doc.version == 2
    assert path.read_text() == store.doc.text  # the file is the database's copy, changed
    assert userfile.loads(store.doc.text).user == userfile.read(path).user
    assert [u.password for u in userfile.read(path).user] == [u.password for u in userfile.read(other).user]
    assert status(path, "TS0002") == "disabled"


def test_the_first_change_of_an_empty_database_starts_from_this_machines_file(path):
    store = Memory()
    userfile.update(path, disable("TS0002"), store=store)
    assert store.doc is not None and store.doc.version == 1 and path.read_text() == store.doc.text


#: Ways a change is refused: the database cannot be reached, the change or its validation raises.
def _bad(_: UsersFile) -> UsersFile:
    raise LookupError("NOBODY")


def _invalid(_: UsersFile) -> None:
    raise ValueError("invalid")


REFUSED = [
    ("unreachable", Unreachable, disable("TS0002"), None, OSError),
    ("no such user", Memory, _bad, None, LookupError),
    ("invalid", Memory, disable("TS0002"), _invalid, ValueError),
]


@pytest.mark.parametrize("name,kind,change,validate,error", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_change_changes_neither_the_database_nor_the_file(path, name, kind, change, validate, error):
    before = path.read_bytes()
    store = kind(path.read_text())
    with pytest.raises(error):
        userfile.update(path, change, validate, store=store)
    assert path.read_bytes() == before and store.writes == 0


def test_a_rehash_the_database_cannot_take_is_not_made(path):
    old = userfile.read(path).user[0]
    rehash = users_file_rehash(path, Unreachable(), close=True)
    assert rehash(old.id, old.password, "$scrypt$new") is False
    assert userfile.read(path).user[0].password == old.password


# -- sync: installing the database's copy -------------------------------------------------------

def test_sync_imports_a_file_into_an_empty_database_and_installs_nothing(path):
    store = Memory()
    text = path.read_text()
    done = userfile.sync(path, store, last=None, keep_edits=False, stamp="T1")
    assert done.imported and done.doc == Document(1, text) and done.kept is None and path.read_text() == text


def test_sync_replaces_a_differing_file_and_keeps_it_beside(path, tmp_path):
    other = tmp_path / "other.toml"
    write_users(other)
    store = Memory(other.read_text())
    mine = path.read_text()
    done = userfile.sync(path, store, last=None, keep_edits=False, stamp="T1")
    assert not done.imported and done.kept == tmp_path / "users.toml.replaced-T1"
    assert done.kept.read_text() == mine and path.read_text() == store.doc.text
    assert (done.kept.stat().st_mode & 0o777) == 0o600


def test_sync_on_the_active_leaves_a_hand_edit_for_its_sighup_until_the_database_changes(path):
    store = Memory(path.read_text())
    last = userfile.sync(path, store, last=None, keep_edits=True, stamp="T0").doc
    userfile.write(path, disable("TS0001")(userfile.read(path)))  # a hand edit
    edit = path.read_text()
    done = userfile.sync(path, store, last=last, keep_edits=True, stamp="T1")
    assert done.pending and path.read_text() == edit
    # A standby replaces it at once.
    done = userfile.sync(path, store, last=last, keep_edits=False, stamp="T2")
    assert done.kept is not None and done.kept.read_text() == edit and path.read_text() == store.doc.text
    # The active, once the database changed: replaced too (the edit kept).
    userfile.write(path, disable("TS0001")(userfile.read(path)))
    store.update(lambda cur: userfile.dumps(disable("TS0002")(userfile.loads(cur.text))))
    done = userfile.sync(path, store, last=last, keep_edits=True, stamp="T3")
    assert done.kept is not None and done.kept.read_text() == edit and path.read_text() == store.doc.text


def test_sync_replaces_this_machines_own_superseded_copy_without_keeping_it(path):
    store = Memory(path.read_text())
    last = userfile.sync(path, store, last=None, keep_edits=True, stamp="T0").doc
    store.update(lambda cur: userfile.dumps(disable("TS0002")(userfile.loads(cur.text))))
    done = userfile.sync(path, store, last=last, keep_edits=True, stamp="T1")
    assert done.kept is None and done.doc.version == 2 and status(path, "TS0002") == "disabled"


def test_sync_refuses_to_import_a_file_that_is_not_a_users_file(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text("[[user]]\nid = 5\n")
    store = Memory()
    with pytest.raises(msgspec.DecodeError):
        userfile.sync(path, store, last=None, keep_edits=False, stamp="T")
    assert store.doc is None


# -- publish: a hand edit on the active node (SIGHUP) --------------------------------------------

def test_publish_makes_a_hand_edit_the_databases_copy(path):
    store = Memory(path.read_text())
    last = store.doc
    userfile.write(path, disable("TS0002")(userfile.read(path)))
    doc = userfile.publish(path, store, last=last)
    assert doc is not None and doc.version == 2 and doc.text == path.read_text()
    assert userfile.publish(path, store, last=doc) is None  # nothing new


def test_publish_refuses_an_edit_made_while_the_database_changed(path):
    store = Memory(path.read_text())
    last = store.doc
    store.update(lambda cur: userfile.dumps(disable("TS0001")(userfile.loads(cur.text))))  # another machine's change
    userfile.write(path, disable("TS0002")(userfile.read(path)))
    with pytest.raises(userfile.UsersConflict, match="not published"):
        userfile.publish(path, store, last=last)
    assert store.doc.version == 2 and status(path, "TS0002") == "disabled"  # (the caller installs the database's)
    assert "TS0002" not in [u.id for u in userfile.loads(store.doc.text).user if u.status == "disabled"]


def test_two_replacements_within_one_second_keep_both_files(path):
    first = path.read_text()
    a = userfile.keep_aside(path, "T")
    userfile.write(path, disable("TS0001")(userfile.read(path)))
    second = path.read_text()
    b = userfile.keep_aside(path, "T")
    assert a != b and a.read_text() == first and b.read_text() == second


def test_a_change_over_a_file_that_was_not_the_databases_copy_keeps_that_file(path, tmp_path):
    store = Memory(path.read_text())
    userfile.write(path, disable("TS0001")(userfile.read(path)))  # a hand edit, not published
    edit = path.read_text()
    userfile.update(path, disable("TS0002"), store=store)
    assert status(path, "TS0002") == "disabled" and status(path, "TS0001") == "active"  # the database's copy, changed
    assert [p.read_text() for p in tmp_path.glob("users.toml.replaced-*")] == [edit]
    userfile.update(path, disable("TS0001"), store=store)  # the file is the database's copy now: nothing kept
    assert len(list(tmp_path.glob("users.toml.replaced-*"))) == 1
