"""Properties of the shedding rule and of the key found without a parse (msc.routing.shedding,
PROTOCOL.md §5 "Overload"), over generated timelines and messages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from msc.protocol.codes import ProtocolError
from msc.protocol.message import parse_input, peek_key
from msc.routing.shedding import Overload

# A timeline: steps of (seconds since the previous decision, the journal's delay, link held).
steps = st.lists(st.tuples(st.floats(0, 2, allow_nan=False), st.floats(0, 5, allow_nan=False), st.booleans()),
                 max_size=60)
target = st.floats(0.001, 2, allow_nan=False)
interval = st.floats(0, 2, allow_nan=False)


@given(steps, target, interval)
def test_the_rule_sheds_exactly_as_documented(timeline, target_s, interval_s):
    """Each decision against the rule as PROTOCOL.md states it, recomputed from the history: a
    held link sheds (without reading the delay); a delay at or below the target admits; above it,
    a request is shed when the delay has been above the target, at every decision, for
    ``interval_s`` — or when one was shed less than ``interval_s`` ago."""
    rule = Overload()
    now = 0.0
    history: list[tuple[float, bool | None, bool]] = []  # (time, delay above the target — None: held, shed)
    for dt, waited, held in timeline:
        now += dt
        admitted = rule.admit(now, waited, target_s, interval_s, held=held)
        above = waited > target_s
        if held:
            assert not admitted
        elif not above:
            assert admitted
        else:
            stretch = now  # the first decision of the current run above the target (held ones skipped)
            for t, was_above, _shed in reversed(history):
                if was_above is None:
                    continue
                if not was_above:
                    break
                stretch = t
            recent = any(shed and 0 <= now - t < interval_s for t, _a, shed in history)
            assert admitted == (not (now - stretch >= interval_s or recent)), (history, now)
        history.append((now, None if held else above, not admitted))


@given(steps, interval)
def test_a_target_of_zero_never_sheds(timeline, interval_s):
    rule = Overload()
    now = 0.0
    for dt, waited, held in timeline:
        now += dt
        assert rule.admit(now, waited, 0.0, interval_s, held=held)


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
header = st.text(ALNUM, min_size=1, max_size=10)
oif = st.one_of(st.none(), st.text(ALNUM, min_size=1, max_size=8))
taf = st.one_of(st.none(), st.text(ALNUM + ":", min_size=1, max_size=16))
key = st.text(ALNUM, min_size=1, max_size=6)
rest = st.one_of(st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))


@given(header, oif, taf, key, rest)
def test_the_key_found_without_a_parse_is_the_key(h, o, t, k, r):
    parts = [h] + ([f"*{o}"] if o else []) + ([f"#{t}"] if t else []) + [k] + ([r] if r is not None else [])
    payload = ".".join(parts).encode("ascii")
    assert peek_key(payload) == k
    try:
        parsed = parse_input(payload)
    except ProtocolError:
        return
    assert parsed.mke == k


@given(st.binary(max_size=120))
def test_any_bytes_give_a_key_or_none_never_an_error(payload):
    found = peek_key(payload)
    assert found is None or (found.isascii() and "." not in found)
