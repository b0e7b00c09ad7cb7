"""Cross-field validation of a decoded configuration.

Types are checked by msgspec when the files are decoded; this module checks what types cannot:
formats (mnemonics, ORIs, addresses), uniqueness, references between tables, and the regulatory
floors (retention >= 1096 days, PPP §1.7.1 A). The grammar comes from :mod:`msc.protocol.grammar`
so a mnemonic means the same thing in the config as on the wire.

:func:`validate` runs the sections' checks in the files' order, each in its module: the daemon's
own tables (:mod:`msc.config.check_daemon`), routing (:mod:`msc.config.check_routes`), the
directory and users.toml (:mod:`msc.config.check_directory`), with the shared
:class:`~msc.config.checker.Checker`.
"""

from __future__ import annotations

from msc.config.check_daemon import MIN_RETENTION_DAYS, check_journal, check_listeners, check_switch, dsn_problems
from msc.config.check_directory import check_directory, check_users
from msc.config.check_routes import check_routes
from msc.config.checker import Checker, parse_hostport
from msc.config.issues import ConfigIssue
from msc.config.settings import Settings
from msc.protocol import grammar as g

__all__ = ["MIN_RETENTION_DAYS", "answer_parts", "dsn_problems", "entry_keys", "one_way_keys", "parse_hostport", "validate"]

NCIC_UPDATE_PREFIXES = ("E", "M", "X", "C", "L")


def one_way_keys(route) -> frozenset[str]:
    """The keys of a route that await no answer (responses and one-way messages, PROTOCOL.md §4):
    the route's ``one_way``, or by default the keys of ``grammar.ONE_WAY_KEYS`` among ``mke``."""
    if route.one_way is not None:
        return frozenset(route.one_way)
    return frozenset(k for k in route.mke if k in g.ONE_WAY_KEYS)


def answer_parts(route) -> dict[str, int]:
    """Message key → how many parts a complete answer to it has (``route.answer_parts``: one
    number for every key of the route that awaits an answer, or a table by key); a key not
    here has an answer of unknown length (PROTOCOL.md §4 "Stopping with an answer open")."""
    declared = route.answer_parts
    if declared is None:
        return {}
    one_way = one_way_keys(route)
    if isinstance(declared, int):
        return {k: declared for k in route.mke if k not in one_way}
    return {k: n for k, n in declared.items() if k in route.mke and k not in one_way}


def entry_keys(route) -> frozenset[str]:
    """The keys of a route that enter or change records (need the ``entry`` authorization)."""
    if route.entry is not None:
        return frozenset(route.entry)
    return frozenset(k for k in route.mke if k.startswith(NCIC_UPDATE_PREFIXES))


def validate(settings: Settings) -> list[ConfigIssue]:
    """Every issue of ``settings`` (its msc.toml and users.toml), in the files' order; empty if none."""
    c = Checker(settings)
    check_switch(c)
    check_listeners(c)
    check_journal(c)
    categories = check_routes(c)
    check_directory(c, categories)
    check_users(c)
    return c.issues
