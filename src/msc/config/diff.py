"""What a reload changed, setting by setting (CONFIG.md "Reload"): the ``changes`` of the
``config.reloaded`` log line and of the ``CONFIG RELOAD OK`` journal record.

Pure: two :class:`msc.config.model.Config` in, a list of lines out, in the file's order:

- a single table's setting — ``switch.drain_timeout_s: 10 → 2`` (numbers, booleans and short
  words shown; a path, an address list or a text only named: ``web.tls changed``);
- a named entry of an array of tables kept by name (``[[listener]]``, ``[[upstream]]``) —
  ``listener terminals: max_connections: 1000 → 10``; added and removed ones are the reload's own
  lines (re-bound, reconnected);
- any other array of tables — ``[[edit]] updated``.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: Arrays of tables whose entries the reload adds, removes or re-binds by name itself.
NAMED = ("listener", "upstream")
#: Arrays of tables the reload reports itself ("stations/pools/agencies updated", "routes updated").
REPORTED = ("route", "agency", "station", "pool")


def _shown(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and len(value) <= 16 and value.replace("_", "").replace("-", "").isalnum():
        return value
    return None


def _fields(table: str, old: Any, new: Any) -> list[str]:
    """``table.key: old → new`` for each setting that differs (``table.key changed`` when not shown)."""
    if old == new:
        return []
    if old is None or new is None or not isinstance(old, msgspec.Struct):
        return [f"{table} {'added' if old is None else 'removed' if new is None else 'changed'}"]
    out = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        sa, sb = _shown(a), _shown(b)
        out.append(f"{table}.{name}: {sa} → {sb}" if sa is not None and sb is not None else f"{table}.{name} changed")
    return out


def changes(old: Any, new: Any) -> list[str]:
    """Every setting of ``new`` that differs from ``old`` (both :class:`Config`), as lines."""
    out: list[str] = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b or name in REPORTED:
            continue
        if isinstance(a, tuple):
            if name in NAMED:
                before = {e.name: e for e in a}
                for e in b:
                    if e.name in before and before[e.name] != e:
                        keys = [line.split(".", 1)[1] for line in _fields(e.name, before[e.name], e)]
                        out.append(f"{name} {e.name}: {', '.join(keys)}")
            else:
                out.append(f"[[{name}]] updated")
        else:
            out.extend(_fields(name, a, b))
    return out
