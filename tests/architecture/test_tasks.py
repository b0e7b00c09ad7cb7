"""No task msc makes is left for asyncio to report (newcomer9 F4: "Task exception was never
retrieved … PgLease.announce()" with a traceback at a step-down during a database outage).

Two shapes made such tasks, and neither may come back anywhere in src/msc (msc.aio says why):

* ``asyncio.wait_for(<a coroutine call>, …)`` — Python 3.11 runs the coroutine as a task of its
  own and, cancelled from outside, can leave that task's exception unretrieved: use
  ``msc.aio.bounded`` (a Future, or ``asyncio.shield(…)``, is fine: the caller owns it);
* ``loop.create_task(…)`` / ``asyncio.ensure_future(…)`` whose task is dropped on the spot (an
  expression statement, a lambda's value): use ``msc.aio.spawn``, which keeps it and retrieves
  its end.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "msc"
SPAWNERS = {"create_task", "ensure_future"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def findings(tree: ast.AST, path: str) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) == "wait_for" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Call) and _name(first.func) != "shield":
                out.append(f"{path}:{node.lineno}: asyncio.wait_for on a coroutine call — use msc.aio.bounded")
        dropped = None
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            dropped = node.value
        elif isinstance(node, ast.Lambda) and isinstance(node.body, ast.Call):
            dropped = node.body
        if dropped is not None and _name(dropped.func) in SPAWNERS:
            out.append(f"{path}:{dropped.lineno}: a task fired off and dropped — use msc.aio.spawn")
    return out


def test_no_task_is_left_for_asyncio_to_report() -> None:
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        found += findings(ast.parse(path.read_text(), str(path)), str(path.relative_to(SRC.parent)))
    assert found == [], "\n".join(found)


def test_the_check_sees_both_shapes() -> None:
    code = """
import asyncio
async def f(lease, fut):
    await asyncio.wait_for(lease.announce(1), 5)
    await asyncio.wait_for(fut, 5)
    await asyncio.wait_for(asyncio.shield(fut), 5)
    asyncio.get_running_loop().create_task(lease.renew(1))
    kept = asyncio.ensure_future(lease.renew(1))
    cb = lambda why: asyncio.get_running_loop().create_task(lease.end(why))
"""
    lines = sorted(f.split(": ", 1)[0] for f in findings(ast.parse(code), "x.py"))
    assert lines == ["x.py:4", "x.py:7", "x.py:9"], lines
