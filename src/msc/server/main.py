"""``msc serve``: the one place that creates the event loop (uvloop) and owns signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog
import uvloop

from msc.aio import spawn
from msc.config.load import Settings
from msc.instance import NodeInUse, ReadyFile, claim_node
from msc.server.switch import StartupError, Switch

if TYPE_CHECKING:
    from msc.ha.keeper import LeaseKeeper

log = structlog.get_logger("msc.serve")
SWITCH_INTERVAL_S = 0.0005


async def run(settings: Settings, *, ready_file: str | None = None) -> int:
    global _node_lock
    # First, before this process opens, binds, writes or logs anything: a second msc serve of a
    # node that runs (its data_dir, or its ready file, held) stops here, exit 2 (msc.instance).
    try:
        _node_lock = claim_node(settings.data_dir)
        ReadyFile(ready_file).check()
    except NodeInUse as exc:
        raise StartupError(str(exc)) from None
    switch = Switch(settings)
    switch.metrics.watch_gc()  # this process's collector pauses in /metrics (one switch per process)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reload_pending = asyncio.Event()  # a SIGHUP to a standby: checked now, applied once it has started

    def on_hup() -> None:
        # (kept until it ends, and its end retrieved: msc.aio.spawn — a reload logs its own refusals)
        if switch.started.is_set():
            spawn(switch.reload(), event="config.reload_failed", logger=log)
        else:
            reload_pending.set()
            spawn(switch.check_deferred_reload(), event="config.reload_failed", logger=log)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if settings.config.node is not None:
        return await _run_node(settings, switch, stop, ready_file, reload_pending)
    await switch.start()
    if reload_pending.is_set():
        await switch.reload()
    settle_heap()
    _write_ready(ready_file, "ready")
    await stop.wait()
    log.info("switch.stopping")
    _clear_ready()  # it no longer serves: drain closes its listeners first
    await switch.drain()
    return 0


async def _run_node(settings: Settings, switch: Switch, stop: asyncio.Event, ready_file: str | None,
                    reload_pending: asyncio.Event) -> int:
    """One node of an active/standby pair (OPERATIONS.md "Running two nodes"): a standby until
    it holds the lease, then the switch; when the lease is lost, it stops serving at once and
    exits ``EXIT_STEPPED_DOWN`` for its supervisor to start it again (as a standby).

    Why exit rather than become a standby in the same process: everything an active node holds in
    memory — queued outputs, requests upstream, sessions, the journal's sequence — belongs to the
    epoch it lost; a fresh process starts from what the database says, as after a crash, and
    the takeover path is then the one path every start takes.
    """
    from msc.ha.lease import Role
    from msc.server.node import keeper_for

    def on_role(role: Role, epoch: int, reason: str) -> None:
        if role is not Role.ACTIVE:  # (active: once the takeover's look at the key ring agreed, below)
            switch.step_down(reason)  # at once, in the loop iteration that noticed

    def new_keeper() -> LeaseKeeper:
        try:
            k = keeper_for(settings, on_role=on_role, hold_back=switch.lease_hold_back,
                           on_attempt=switch.metrics.lease_call)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        switch.lease_info = lambda: {**k.lease_view(), "error": k.last_error, "held_back": k.held_back}
        switch.lease_check = k.check  # /readyz and /metrics never say "active" past the belief's end
        return k

    keeper = new_keeper()
    await switch.start_standby()
    keeper.start()
    # "standby" once the database has taken this node's name as this process's (or could not be
    # asked: an outage is waited out as a standby): a second node of a running node's name, refused
    # just below, never says it stands by.
    if await _first(keeper.wait_named(), stop.wait()) and keeper.misconfigured is None:
        _write_ready(ready_file, "standby")
    while True:
        keeper.start()
        active = await _first(keeper.wait_active(), stop.wait())
        if not active or keeper.misconfigured is not None:
            log.info("node.stopping", node=switch.node_name, role="standby")
            _clear_ready()
            await keeper.stop(release=True)  # (released only if it was granted in the meantime)
            if switch.ops is not None:
                await switch.ops.stop()
            if keeper.misconfigured is not None:
                # A wrong password, role or database name, or a second node of this name, waits for
                # nobody (an outage is waited out as a standby): exit 2 like every refusal to start.
                raise StartupError(str(keeper.misconfigured))
            return 0
        refused = await switch.takeover_refused()
        if refused is None:
            break
        # This machine's master key file cannot open the key ring (msc keys rotate on the other
        # machine, not copied here yet): serving would fail at the journal's first key. The lease
        # is given back at once — the other node need not wait it out — and this node stands by
        # again, not ready, looking every few seconds: copying the file is the whole fix, no
        # restart (a refusal to start, exit 2, under Restart=always was a loop that won the lease
        # again and again: newcomer7 #1).
        epoch = keeper.machine.epoch
        await keeper.stop(release=True)
        log.error("node.takeover_refused", node=switch.node_name, epoch=epoch, reason=refused)
        keeper = new_keeper()
    if keeper.check() is not Role.ACTIVE:
        # Its belief ended during the takeover's look at the key ring (the database went away
        # meanwhile): the keeper stepped it down already; nothing was opened — it leaves as any
        # node that stepped down does, never calling itself active.
        return await _stepped_down(switch, keeper)
    granted = keeper.granted  # (how: a failover is a warning, an ordinary start is not)
    switch.became_active(keeper.machine.epoch, taken=granted.taken if granted else "free",
                         previous=granted.previous if granted else None)

    def still_ours() -> None:
        if not keeper.machine.holds(keeper.clock()):
            raise RuntimeError(f"node {switch.node_name} no longer holds the lease")

    switch.write_check = still_ours
    switch.fence = keeper.fence()  # the PostgreSQL journal writer's commit fence (issue 16 item 1)
    try:
        await switch.start()  # the journal, queues and OSNs, the recovery pass, the listeners
    except BaseException:
        # It will not serve (exit 2): the lease goes back now, not at the end of lease_ttl_s.
        await keeper.stop(release=True)
        raise
    if reload_pending.is_set():
        await switch.reload()  # the configuration changed while it stood by
    settle_heap()
    _write_ready(ready_file, "ready")
    lost = await _first(keeper.wait_lost(), stop.wait())
    if lost:
        return await _stepped_down(switch, keeper)
    log.info("switch.stopping")
    _clear_ready()
    await switch.drain()  # its STOP record is committed under this node's epoch …
    await keeper.stop(release=True)  # … then the lease is released: the standby takes over at once
    return 0


async def _stepped_down(switch: Switch, keeper: LeaseKeeper) -> int:
    """The lease is lost (``keeper.wait_lost``): stop serving at once and leave with
    ``EXIT_STEPPED_DOWN`` — the one path of every step-down (a lapsed belief, a refused renewal, a
    fenced commit; a SIGSTOP continued, a cut, a frozen database)."""
    from msc.server.node import EXIT_STEPPED_DOWN

    switch.step_down(keeper.lost_reason or "lease lost")
    _clear_ready()  # at once: it serves no more (its teardown may take seconds)
    await keeper.stop(release=False)
    # Storage calls still waiting on the database are given back now: the teardown below
    # joins their threads (the hang that ha2's forced exit stood in for: Switch.abandon_storage).
    switch.abandon_storage(keeper.lost_reason or "lease lost")
    if switch.ops is not None and switch.ops.server is not None:
        # Its endpoint closes now, as a process that has gone: a scrape or health check accepted
        # during the event loop's teardown found the worker threads shut down ("Unhandled
        # exception in client_connected_cb … Executor shutdown has been called", a traceback).
        switch.ops.server.close()
    log.error("node.exit", node=switch.node_name, status=EXIT_STEPPED_DOWN, reason=keeper.lost_reason)
    _exit_within(STEP_DOWN_EXIT_S, EXIT_STEPPED_DOWN)
    return EXIT_STEPPED_DOWN


async def _first(wanted: Coroutine[Any, Any, Any], other: Coroutine[Any, Any, Any]) -> bool:
    """Wait for the first of two coroutines; True when it was ``wanted``. The other is cancelled."""
    a, b = asyncio.ensure_future(wanted), asyncio.ensure_future(other)
    done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    for t in done:  # a failure is read from the state it left (keeper.misconfigured), not raised here
        if not t.cancelled():
            t.exception()
    for t in (a, b):
        if t not in done:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    return a in done


#: A node that stepped down is out of the process within this long (s), whatever its tasks do.
STEP_DOWN_EXIT_S = 5.0


def _exit_within(seconds: float, status: int) -> None:
    """A stepped-down node must leave so that its supervisor starts a fresh standby: nothing of it
    may be journaled any more, so nothing is lost by not waiting. A daemon timer ends the process
    with the same status if the orderly teardown has not finished by then (log ``node.exit_forced``
    with what it still waited for).

    A backstop only. make ha-soak saw a node that had logged ``node.exit`` still in its teardown
    minutes later; the cause (found by freezing the database under an active node: SIGSTOP of
    the postmaster and every backend) was the teardown joining worker threads blocked in calls of
    the run-time state and the queues to a database that answered nothing — each waited for
    asyncpg's statement timeout, its cancellation request and a pool connection. Every such call
    is bounded now and a stepped-down node gives them back at once (Switch.abandon_storage), so
    the teardown ends by itself: 0 forced exits in the frozen-database and SIGSTOP step-downs
    measured (tests/e2e/test_ha_nodes.py asserts ``serve.exited``, the orderly path's last line).
    The timer stays for what nobody has seen yet."""
    import sys
    import threading

    loop = asyncio.get_running_loop()

    def force() -> None:
        try:  # what the teardown was still waiting for (read from another thread: best effort)
            pending = sorted({repr(t.get_coro())[:120] for t in asyncio.all_tasks(loop) if not t.done()})
        except RuntimeError:
            pending = []
        # Tasks alone did not name the hang (the teardown's own task, joining worker threads):
        # where every other thread is, in msc's code if it is there.
        log.error("node.exit_forced", status=status, after_s=seconds, pending=pending[:20], threads=_threads()[:20])
        sys.stderr.flush()
        os._exit(status)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def _threads() -> list[str]:
    """Where each thread but this one is: its innermost frame in msc's code (else its innermost),
    ``file:line function`` — for ``node.exit_forced``."""
    import sys
    import threading
    import traceback

    me, where = threading.get_ident(), set()
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack if "/msc/" in f.filename]
        f = (ours or stack)[-1]
        where.add(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}")
    return sorted(where)


def settle_heap() -> None:
    """Once the switch serves: collect what starting left as garbage, then move every object
    alive now (modules, configuration, directory, keys, metrics: ~50,000 objects) out of the
    cyclic garbage collector's sight (:func:`gc.freeze`), for the life of the process.

    Why: CPython's full (generation 2) collection walks every tracked object, and under traffic
    it runs every few seconds. On this project's 2-core machine one took 30–150 ms (measured in
    ``msc serve`` at 1,000 transactions/s, PERFORMANCE.md "Where the tail came from"): the
    event loop stood still that long, and every transaction in flight waited — most of the p99
    at a fixed rate was one or two such pauses. What is frozen is still freed by reference
    counting when it is dropped (a reload's old configuration); only a reference cycle among
    frozen objects would stay, and the start-up objects are kept for the process's life anyway.
    Objects made later (sessions, queued outputs) are collected as before."""
    import gc

    gc.collect()
    gc.freeze()


#: The ready files this process writes (``--ready-file``), by path: removed when it stops serving.
_ready: dict[str, ReadyFile] = {}
#: ``data_dir/serve.lock``'s descriptor while this process is the node's ``msc serve`` (:func:`run`).
_node_lock: int | None = None


def _write_ready(ready_file: str | None, what: str) -> None:
    """``--ready-file``: ``standby`` (a node of a pair whose /readyz answers) or ``ready`` (serving).
    Written only while this process holds the file's lock (:class:`msc.instance.ReadyFile`):
    a file another running process took meanwhile is left to it (log ``serve.ready_file_taken``)."""
    if not ready_file:
        return
    ready = _ready.setdefault(ready_file, ReadyFile(ready_file))
    if not ready.write(what):
        log.error("serve.ready_file_taken", path=ready_file, state=what, reason=ready.taken)


def _clear_ready() -> None:
    """The ready file says only what is true: removed as soon as this process stops serving (a
    SIGTERM's drain, a step-down) and, whatever else ends it (a start refused after ``standby``,
    an exception), as it exits — :func:`serve`; only ``kill -9`` leaves it (newcomer trial F5: a
    node that had exited 75 still said ``ready``). A file this process never wrote is not touched:
    a second ``msc serve`` refused at its start leaves the running one's alone, and so does a
    process whose file another one took (:class:`msc.instance.ReadyFile`)."""
    for path in sorted(_ready):
        _ready.pop(path).clear()


def _release_node() -> None:
    """Give up ``data_dir/serve.lock`` (the process is leaving: its ready file is gone already)."""
    global _node_lock
    fd, _node_lock = _node_lock, None
    if fd is not None:
        os.close(fd)


def serve(settings: Settings, *, ready_file: str | None = None) -> int:
    import sys

    # The journal writer thread needs the GIL briefly per batch; with CPython's default 5 ms
    # switch interval it can wait that long behind the event loop, on every commit.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Before any worker thread exists: what bursts leave in the allocator goes back (issue 14).
    from msc.memory import tune_allocator

    tune_allocator()
    try:
        status = uvloop.run(run(settings, ready_file=ready_file))
    finally:
        _clear_ready()  # every exit the process can act on: a refusal to start, an exception
        _release_node()  # (last: a successor may start once this one has let go of everything)
    # The orderly path's last line: the event loop, its tasks and its worker threads are done (a
    # stepped-down node that got here was not cut short by _exit_within's timer).
    log.info("serve.exited", status=status)
    return status
