"""Moved to :mod:`msc.keyring` (issue 15: the key ring is used by the journal and by the TOTP
code, so it is no longer the journal's). This alias keeps branches written before the move
importable while they land; new code imports :mod:`msc.keyring`. To be removed once nothing
imports it (``grep -r msc.journal.keys``)."""

from msc.keyring import *  # noqa: F401,F403
from msc.keyring import KeyError_, KeyRing, PeriodKeys, next_period, period_of  # noqa: F401
