"""The ``msc`` command's option types (msc.cli.options) on any text: a value or a usage error
(argparse.ArgumentTypeError, which argparse turns into exit 2 and one line) — never another
exception, which would be a traceback; and what they accept is what they say."""

from __future__ import annotations

import argparse
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.cli import options as opt

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None, database=None)

TYPES = [opt.time_value, opt.date_value, opt.date_text, opt.token, opt.journal_kind, opt.user_id, opt.actor,
         opt.header, opt.mnemonic, opt.station, opt.ori, opt.mke, opt.taf, opt.txn, opt.positive_int, opt.count,
         opt.fraction, opt.seconds, opt.non_negative, opt.port_offset, opt.otp, opt.person_name]

texts = st.one_of(st.text(max_size=40), st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{0,3})?", fullmatch=True),
                  st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2})?", fullmatch=True),
                  st.sampled_from(["nan", "inf", "-inf", "1e999", "NAM:", ":X", "OS:", "OS:root", "$.L."]))


@SETTINGS
@given(st.sampled_from(TYPES), texts)
def test_every_option_type_returns_a_value_or_a_usage_error(parse, text):
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if parse in (opt.positive_int,):
        assert value >= 1
    elif parse in (opt.count, opt.port_offset):
        assert value >= 0
    elif parse is opt.fraction:
        assert 0.0 <= value <= 1.0
    elif parse is opt.seconds:
        assert 0.0 < value < float("inf")
    elif parse is opt.journal_kind:
        assert value == value.upper()


@SETTINGS
@given(st.integers(min_value=-10**6, max_value=10**6))
def test_limit_accepts_exactly_the_positive_whole_numbers(n):
    try:
        assert opt.positive_int(str(n)) == n and n >= 1
    except argparse.ArgumentTypeError:
        assert n < 1
