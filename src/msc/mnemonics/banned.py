"""The banned-password check (CJIS IA-5(1)(a): "checked against a list of commonly used,
expected, or compromised passwords").

A shipped list of the most common passwords (``banned.txt``), compared case-insensitively and
after stripping trailing digits and punctuation (so ``Password2026!`` is refused), plus
patterns: a single repeated character, and sequences such as ``12345678`` or ``abcdefgh``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl", "zxcvbnm")


@functools.cache
def _words() -> frozenset[str]:
    text = resources.files("msc.mnemonics").joinpath("banned.txt").read_text()
    return frozenset(w.strip().lower() for w in text.split() if w.strip())


def is_banned(password: str) -> bool:
    p = password.lower()
    words = _words()
    core = re.sub(r"[\d\W_]+$", "", p)
    if p in words or (len(core) >= 4 and core in words):
        return True
    if len(set(p)) <= 2:
        return True
    for seq in _SEQUENCES:
        if p in seq or p in seq[::-1]:
            return True
    return False
