"""The switch's background work: the availability ledger's heartbeat, the daily journal
retention, the background verification of the journal (OPERATIONS.md, JOURNAL.md), the
once-a-second sweep (session timers, lockouts made by other processes, last use, refusal
summaries, giving memory back after a burst), and what the journal's commits tell the metrics
and the log (a refused commit: once per outage, msc.outage).

A part of :class:`msc.server.switch.Switch` (its attributes: :class:`msc.server.parts.SwitchParts`):
the switch starts these tasks and cancels them on stop; this module owns what each does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from msc.journal.records import Entry, JournalError, JournalFenced, Kind
from msc.journal.retention import PurgeRefused
from msc.ops.availability import HEARTBEAT_S, WINDOWS, compute
from msc.outage import Outage
from msc.server.parts import SwitchParts, started

#: The background verification starts this long after the switch (at most verify_interval_s).
STARTUP_QUIET_S = 60.0
#: Seconds between checks whether freed memory should go back to the system (ops.memory).
TRIM_EVERY_S = 5
#: How long the once-a-second sweep waits for the journal's probe (s).
PROBE_S = 5.0
#: The exit status of the PostgreSQL journal's verification child whose database is away
#: (msc.storage.watch): not a failure of the journal.
WATCH_UNAVAILABLE = 3


class BackgroundWork(SwitchParts):
    """Ledger heartbeat, retention, background verification, memory trims (see the module docstring)."""

    _ledger_lock: asyncio.Lock | None = None  # one ledger beat at a time (_ledger_beat)
    _commit_outage: Outage | None = None  # the journal's refused commits (_journal_error)
    _verify_outage: Outage | None = None  # the verification child's database away (_verification_event)

    # -- the journal's callbacks (Journal's on_commit, on_error, on_integrity) -------------------

    def _journal_committed(self, entries: Sequence[Entry], seconds: float) -> None:
        self.metrics.journal_committed(entries, seconds)
        self.metrics.journal_size(started(self.journal).committed_size)
        if self._commit_outage is not None and self._commit_outage.ok():
            self.sessions.say_not_journaled()  # the ends refused meanwhile, in one line

    def _journal_error(self, exc: Exception) -> None:
        """A commit failed: every append in it was refused (``E501``; nothing forwarded). Each is
        counted (``msc_journal_errors_total``); the log says it once per outage — at 1,000 msg/s a
        line per refused commit was thousands of error lines (a storage outage, a warning: the
        integrity faults are ``journal.altered``) — and once more, with ``refused`` (how many
        commits, the counter's rise), at the next commit that succeeds."""
        self.metrics.journal_errors.inc()
        if self._commit_outage is None:
            # ``storage``: where the journal is (its servers and database; never a password) — with a
            # multi-host URI the line an operator needs most named no server (newcomer trial hA).
            self._commit_outage = Outage("journal.commit_failed", "journal.commit_recovered", logger=self.log,
                                         counted="refused", storage=self.backends.describe())
        # A commit refused by its storage (the writer's JournalError, an OSError) is an outage; a
        # fault of msc while sealing (a period's key missing, a bug: wrapped by the journal, its
        # cause kept) is said at error with its traceback — still once until a commit succeeds.
        cause = exc.__cause__
        unexpected = cause is not None and not isinstance(cause, JournalError | OSError)
        self._commit_outage.failed(exc if unexpected else (str(exc) or type(exc).__name__), unexpected=unexpected)

    def _journal_altered(self, text: str) -> None:
        """The journal found records it had committed gone while running: it refuses every
        append from now on (E501, /readyz 503); the off-box alert sees the size go back."""
        self.metrics.journal_verify_failures.inc()
        self.metrics.journal_size(started(self.journal).committed_size)
        self.log.error("journal.altered", error=text)

    async def _ledger_heartbeat(self) -> None:
        # The figures at once, not a heartbeat later: until computed, msc_availability_ratio is
        # not exported (OPERATIONS.md "Availability and reports").
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.refresh_availability)
        ticks = 1
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.holds_lease():
                with contextlib.suppress(Exception):
                    await self._ledger_beat()
            if ticks % 12 == 0:
                # In a worker thread, and never fatal: with the ledger in PostgreSQL a read may
                # wait for a database that is restarting; the heartbeats must go on after it.
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.refresh_availability)
            ticks += 1

    async def _ledger_beat(self) -> None:
        """One heartbeat of this run in the availability ledger. The switch serves only while its
        journal commits (fail closed: nothing is accepted unrecorded), so the heartbeat claims no
        more than :meth:`Journal.serving_until` — not the moment a frozen database's heartbeat
        write finally lands (newcomer7: the outage began 2.4 s late) — and each outage of the
        journal (:attr:`Journal.outages`: from the first failed or stalled commit to the next
        that succeeded) splits the run: the run ends where the outage began and a new run starts
        where it ended, so ``msc report availability`` shows it as an unscheduled outage. An
        outage is forgotten only once both marks are written (a ledger in the same frozen
        database is written after the thaw)."""
        ledger, journal = started(self.ledger), self.journal
        mono, now = time.monotonic(), self.clock()
        if journal is None:  # (not open yet: nothing to judge it by)
            await asyncio.to_thread(ledger.heartbeat, now)
            return

        def wall(t: float) -> float:
            return now - (mono - t)

        # One beat at a time: the heartbeat's and a stop's (mark_stopped) both write the journal's
        # outages — two at once wrote one twice and popped an empty deque ("ledger.stop_mark_failed
        # … pop from an empty deque" at a stop after a database outage).
        if self._ledger_lock is None:
            self._ledger_lock = asyncio.Lock()
        async with self._ledger_lock:
            while journal.outages:
                down, up = journal.outages[0]
                await asyncio.to_thread(ledger.heartbeat, wall(down))  # this run ended when the journal stopped
                await asyncio.to_thread(ledger.start, wall(up))  # and a new one began when it committed again
                self.log.warning("ledger.journal_outage", down_s=round(up - down, 3))
                journal.outages.popleft()
            await asyncio.to_thread(ledger.heartbeat, wall(journal.serving_until(mono)))

    def open_work(self) -> dict[str, int]:
        """What a drain waits for, by what each count is (``switch.draining``/``drain_timeout``):
        ``committing`` messages awaiting their journal commit; ``awaiting_answer`` requests sent
        upstream and not answered; ``answer_open`` requests answered (in part or in full) whose
        answer window is still open — a further part may come (PROTOCOL.md §4); ``unacknowledged``
        outputs written to a terminal and not yet acknowledged by it."""
        router = started(self.router)
        return {"committing": sum(sess.inflight for sess in self.sessions), "awaiting_answer": router.outstanding(),
                "answer_open": router.open_answers(), "unacknowledged": started(self.delivery).unacknowledged()}

    def holds_lease(self) -> bool:
        """Whether this run may still mark itself up in the availability ledger: always for a
        single node; a pair's node only while it believes it holds the lease. A node continued
        after a pause (SIGSTOP) past its lease must not write a heartbeat or a clean-stop mark
        before it notices: its run would then overlap its successor's and the outage between
        them would vanish from ``msc report availability``."""
        if self.write_check is None:
            return True
        try:
            self.write_check()
        except Exception:
            return False
        return True

    async def mark_stopped(self) -> None:
        """The availability ledger's clean-stop mark, stamped when this run stops accepting
        sessions: called as the listeners close, at the start of a drain (SIGTERM) or of a stop
        without one, and again at the stop's end (the ledger keeps the first mark; the second
        only retries one that could not be written). Decision (issue 16, PPP §1.7.1: "98 percent
        availability and uptime ... including all (scheduled and unscheduled) downtime"): a
        draining switch serves its attached sessions but refuses every new one, and on a pair the
        other node cannot serve until the drain ends, so the drain counts as downtime —
        scheduled, since an administrator's stop began it (OPERATIONS.md "Availability and
        reports"). A node no longer holding the lease writes no mark (see :meth:`holds_lease`)."""
        if self.ledger is None or self.ledger.run_id is None or not self.holds_lease():
            return
        try:
            at: float | None = None
            journal = self.journal
            if (journal is not None and (journal.outages or journal.down_since() is not None)
                    and self.ledger.run_id != self.stop_split):
                # The journal's outages first, and the run's end where an ongoing one began: if the
                # journal is down now, that time was unscheduled downtime, and only what follows the
                # stop is scheduled — a run of no length at the stop carries the stop mark.
                await self._ledger_beat()
                if journal.down_since() is not None:
                    at = self.clock()
                    await asyncio.to_thread(self.ledger.start, at)
                    self.stop_split = self.ledger.run_id
            await asyncio.to_thread(self.ledger.stop, self.clock() if at is None else at)
        except Exception as exc:  # never stands in the stop's way; retried at its end
            self.log.warning("ledger.stop_mark_failed", error=str(exc))

    async def close_ledger(self) -> None:
        """At the stop's end: the stop mark if the first attempt failed, then the connection."""
        if self.ledger is not None:
            await self.mark_stopped()
            self.ledger.close()

    def refresh_availability(self) -> None:
        runs = started(self.ledger).runs()
        for window in WINDOWS:
            a = compute(runs, self.clock(), window, current=started(self.ledger).run_id)
            self.metrics.availability.labels(window).set(a.ratio)

    async def flush_use(self) -> None:
        """Write users' and stations' last use to state.db (CJIS AC-2, PPP §1.6.2)."""
        users, stations = self.last_use.take()
        try:
            if users:
                await asyncio.to_thread(self.state.used, users)
                users = {}
            if stations:
                await asyncio.to_thread(self.state.station_used, stations)
        except BaseException:  # its database away: not lost, written at the next flush
            self.last_use.give_back(users, stations)
            raise

    async def _sweep(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            with contextlib.suppress(Exception):
                # Lockouts and unlocks made by another process (msc journal … --as, msc user
                # unlock) reach hosts' OIF checks within a second.
                await asyncio.to_thread(self.auth.refresh)
            if self.journal is not None and self.stepped_down is None:
                # /readyz follows the journal's database within a second or two, traffic or not:
                # 503 when it goes away, 200 again by itself when it is back (a commit that just
                # succeeded answers for the database: Journal.probe). (asyncio.timeout, not
                # wait_for: Python 3.11's wait_for loses a cancellation that arrives as the probe
                # ends — this loop then ran on through the event loop's teardown, for ever.)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(PROBE_S):
                        await self.journal.probe()
            if ticks % 60 == 0:
                with contextlib.suppress(Exception):
                    await self.flush_use()
            with contextlib.suppress(Exception):
                self.budgets.summaries()
            await self._trim_after_bursts(ticks)
            now = time.monotonic()
            cfg = self.settings.config
            for sess in self.sessions:
                try:
                    sess.tick(now, cfg)
                except Exception:
                    self.log.exception("session.timer_error")

    async def _trim_after_bursts(self, ticks: int) -> None:
        """Give freed memory back to the system after a burst (issue 14: memory returns after
        the queue drains)."""
        queued = started(self.delivery).pending()
        if queued < self._queued_before // 2:
            # The queues drained (by half or more): what they held is free now, so a trim is due
            # at once, however little the last ones gave back.
            self._trimmer.soon()
            self._queued_before = queued
        self._queued_before = max(self._queued_before, queued)
        if ticks % TRIM_EVERY_S == 0 or self._trimmer.due_soon:
            # In a worker thread (ctypes lets go of the GIL): the loop runs on meanwhile, waiting
            # only if it needs the allocator's lock of the arena being trimmed.
            trimmed = await asyncio.to_thread(self._trimmer.check)
            if trimmed is not None:
                self.log.info("memory.trimmed", before_mb=round(trimmed[0] / 2**20, 1),
                              after_mb=round(trimmed[1] / 2**20, 1), ms=round(trimmed[2] * 1000, 2))

    async def _retention_daily(self) -> None:
        """JOURNAL.md "Retention": purge months older than retention_days once a day."""
        await asyncio.sleep(60)
        while True:
            try:
                await self.run_retention()
            except Exception as exc:  # its database away (a reader that could not open): tomorrow again
                if not self._given_up(exc):
                    self.log.error("journal.purge_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(86400)

    async def run_retention(self) -> list[tuple[str, int, int]]:
        """One daily retention run: the months purged. A refusal (the clock and the journal's
        timeline disagree) is journaled by the journal and logged here; nothing is deleted."""
        done: list[tuple[str, int, int]] = []
        try:
            done = await started(self.journal).purge(self.settings.config.journal.retention_days)
            for period, first, last in done:
                self.log.info("journal.purged", period=period, first=first, last=last)
        except PurgeRefused as exc:
            self.log.error("journal.purge_refused", reason=str(exc))
        except JournalError as exc:
            if not self._given_up(exc):
                self.log.error("journal.purge_failed", error=str(exc))
        return done

    def _given_up(self, exc: BaseException) -> bool:
        """A retention run cut short because this node of a pair stepped down (its reads cut, its
        writes fenced): not a failed purge — the next active node runs retention on its own day,
        and the step-down is logged once (``journal.handed_over``)."""
        return self.stepped_down is not None or isinstance(exc, JournalFenced)

    async def _background_verification(self) -> None:
        """JOURNAL.md "Background verification": a low-priority child process re-verifies the
        whole journal, pass after pass, and follows its tail; each failure raises
        msc_journal_verify_failures_total, is logged and journaled. If the child dies it is
        started again (after a pause)."""
        import sys

        s = self.settings
        cfg = s.config
        # Not while the switch starts: a restart's minutes count against availability.
        await asyncio.sleep(min(STARTUP_QUIET_S, cfg.journal.verify_interval_s))
        if self.backends.postgresql:  # the same walk over a reader of the database
            args = [sys.executable, "-m", "msc.storage.watch", "--config", str(s.config_path),
                    "--interval", str(cfg.journal.verify_interval_s)]
        else:
            args = [sys.executable, "-m", "msc.journal.watch", "--journal", str(s.journal_dir), "--keys",
                    str(s.data_dir / "keys"), "--key-file", str(s.key_file), "--name", cfg.switch.name,
                    "--interval", str(cfg.journal.verify_interval_s)]
        while True:
            # Its own session, like the journal writer's: a terminal's Ctrl-C (SIGINT to the
            # foreground process group) must not reach it while it is still starting up, before
            # it ignores SIGINT (a KeyboardInterrupt traceback in the switch's log).
            proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE, limit=1 << 20,
                                                        start_new_session=True)
            assert proc.stdout is not None  # stdout=PIPE
            try:
                async for line in proc.stdout:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    await self._verification_event(event)
                await proc.wait()
                if proc.returncode != WATCH_UNAVAILABLE:  # (that one said why: journal.verification_paused)
                    self.log.warning("journal.verification_exited", returncode=proc.returncode)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with contextlib.suppress(ProcessLookupError):
                        await proc.wait()
            await asyncio.sleep(30)

    async def _verification_event(self, event: dict[str, Any]) -> None:
        m = self.metrics
        kind = event.get("event")
        if kind == "unavailable":
            # Its database away (restarting, failing over): no verification failure — the child
            # ends (WATCH_UNAVAILABLE) and is started again 30 s later; said once per outage, not
            # at every restart with a bare exit status that read like a failed check (newcomer hA).
            if self._verify_outage is None:
                self._verify_outage = Outage("journal.verification_paused", "journal.verification_resumed",
                                             logger=self.log, field="reason", counted="restarts")
            self._verify_outage.failed(str(event.get("reason", "")))
            return
        if self._verify_outage is not None:
            self._verify_outage.ok()  # it reads again
        if kind == "progress":
            m.journal_verified_size.set(event.get("verified", 0))
        elif kind == "pass_ok":
            m.journal_verified_size.set(event.get("records", 0))
            m.journal_verify_passes.inc()
            self.log.info("journal.verified", records=event.get("records"), seconds=event.get("seconds"))
        elif kind in ("failed", "error"):
            m.journal_verify_failures.inc()
            self.verify_failures.append(event)
            self.log.error("journal.verify_failed", first_bad=event.get("first_bad"), reason=event.get("reason"),
                           background=True)
            with contextlib.suppress(JournalError):
                await started(self.journal).append(Entry(kind=Kind.ADMIN, code="VERIFY", text=(
                    f"BACKGROUND VERIFICATION FAILED AT SEQ/{event.get('first_bad')}: {event.get('reason')}")))
