"""Properties of taking a node's old key ring file into the database's key ring
(:func:`msc.keyring.merge_key_rings`; JOURNAL.md "Where the key ring lives").

Two documents made from one key ring (same master, users and signing keys), each holding any
subset of some months, each month absent, present (its one secret, wrapped with a nonce of its
own) or destroyed: the merge never refuses, keeps every month either has, and a month destroyed
in either is destroyed in the result — never a secret brought back. The same with one month's
secret changed in the file: refused, and the message names the month.
"""

from __future__ import annotations

import copy
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.keyring import KeyError_, MasterKey, _unwrap, _wrap, merge_key_rings

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)
MK = MasterKey("0a0b0c0d", bytes(range(32)))
MONTHS = ["2023-01", "2023-02", "2026-11", "2026-12", "2027-01"]
STATE = st.sampled_from(["absent", "wrapped", "destroyed"])


def secret(month: str) -> bytes:
    return month.encode().ljust(32, b".")


def doc(states: dict[str, str]) -> dict:
    periods = {}
    for month, state in states.items():
        if state == "wrapped":
            periods[month] = {**_wrap(MK, f"period:{month}", secret(month)), "created": "2026-11-30T00:00:00+00:00"}
        elif state == "destroyed":
            periods[month] = {"destroyed": "2026-11-30T00:00:00+00:00"}
    return {"version": 1, "master": MK.id, "periods": periods,
            "users": _wrap(MK, "users", b"u" * 32), "signing": {**_wrap(MK, "signing", b"s" * 32), "public": "cHVi"},
            "journals": {}}


two_rings = st.tuples(st.fixed_dictionaries({m: STATE for m in MONTHS}), st.fixed_dictionaries({m: STATE for m in MONTHS}))


@SETTINGS
@given(two_rings)
def test_a_merge_of_agreeing_rings_keeps_every_month_and_every_destruction(states):
    ours_states, theirs_states = states
    ours, theirs = doc(ours_states), doc(theirs_states)
    merge_key_rings(ours, theirs, MK, "keyring.json", "PostgreSQL (db)")
    for month in MONTHS:
        a, b = ours_states[month], theirs_states[month]
        entry = ours["periods"].get(month)
        if "destroyed" in (a, b):
            assert entry is not None and "wrapped" not in entry and "destroyed" in entry, (month, a, b)
        elif "wrapped" in (a, b):
            assert entry is not None and _unwrap(MK, f"period:{month}", entry) == secret(month)
        else:
            assert entry is None


@SETTINGS
@given(two_rings, st.sampled_from(MONTHS))
def test_a_month_with_two_secrets_is_refused_by_name(states, month):
    ours_states, theirs_states = states
    ours_states = {**ours_states, month: "wrapped"}
    theirs_states = {**theirs_states, month: "wrapped"}
    ours, theirs = doc(ours_states), doc(theirs_states)
    theirs["periods"][month] = _wrap(MK, f"period:{month}", b"another secret".ljust(32, b"!"))
    before = copy.deepcopy(theirs)
    with pytest.raises(KeyError_, match=f"{month} has a different secret"):
        merge_key_rings(ours, theirs, MK, "keyring.json", "PostgreSQL (db)")
    assert theirs == before  # the file's document is not changed (the store writes nothing either)


@SETTINGS
@given(st.fixed_dictionaries({m: STATE for m in MONTHS}))
def test_into_an_empty_database_the_whole_ring_goes(states):
    theirs = doc(states)
    taken = merge_key_rings(None, theirs, MK, "keyring.json", "PostgreSQL (db)")
    assert taken and taken[0].startswith("the whole key ring")
