"""Prometheus metrics (OPERATIONS.md "Metrics"), with prometheus-client.

One :class:`Metrics` per switch, on its own registry, so several switches can run in one test
process. Label values are bounded: categories come from the route table, codes from §6, kinds
from JOURNAL.md — never a user or a mnemonic.
"""

from __future__ import annotations

import gc
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from msc import __version__
from msc.outage import Outage
from msc.protocol.codes import Reject

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The ways a person logs on (the ``path`` label of the logon counts; SECURITY.md AC-7): terminal
#: and pool LOGON, PWD at a terminal, every ``msc … --as`` command, the web console. Always exported
#: (0 until the first refusal) so that alert rules see every series from the start.
LOGON_PATHS = ("terminal", "pool", "pwd", "cli", "web")

#: Why a listener closed or refused a connection (msc_connections_closed_total, SECURITY.md).
CLOSE_REASONS = ("refused", "evicted", "address_limit", "logon_timeout", "tls_handshake_timeout",
                 "tls_handshake_failed", "refused_messages")
#: What would have queued outputs that a full queue refused (msc_delivery_refused_total{path}):
#: unsolicited upstream traffic, answer parts, an operator's new request (its own queue is
#: full), an administrative message to local stations, a pooled mnemonic's outputs redirected
#: to its printer when its session ended.
REFUSAL_PATHS = ("unsolicited", "answer", "request", "admin", "redirect")
JOURNAL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: The cyclic garbage collector's generations (``msc_gc_pause_seconds{generation}``).
GC_GENERATIONS = ("0", "1", "2")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames_received = Counter("msc_frames_received_total", "Frames received", ["peer"], registry=r)
        self.frames_sent = Counter("msc_frames_sent_total", "Frames sent", ["peer"], registry=r)
        self.messages = Counter("msc_messages_total", "Messages by category and outcome", ["category", "outcome"], registry=r)
        self.rejects = Counter("msc_rejects_total", "Rejections by code (PROTOCOL.md §6)", ["code"], registry=r)
        self.transaction_seconds = Histogram(
            "msc_transaction_seconds", "Client accept to response delivered to the client", ["category"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.sessions = Gauge("msc_sessions", "Bound sessions by kind", ["kind"], registry=r)
        self.pool_free = Gauge("msc_pool_free_mnemonics", "Free mnemonics per pool", ["pool"], registry=r)
        # msc_logon_failures_total / msc_lockouts_total: read from state.db at scrape (count_logons).
        self._logon_counts: Callable[[], dict[tuple[str, str], int]] | None = None
        self._counting_logons = False  # the collector is registered (once)
        self.proxy_refused = Counter("msc_proxy_refused_total", "Connections closed on a proxy_protocol listener "
                                     "(reason: untrusted peer, bad header, header timeout)", ["reason"], registry=r)
        # Issue 14: the bounds that keep unauthenticated and misbehaving peers from filling the
        # connection table, the journal or the KDF threads (SECURITY.md "Bounded under abuse").
        self.connections_closed = Counter(
            "msc_connections_closed_total", "Connections closed or refused by a listener's bounds: refused (every slot "
            "established), evicted (a newer connection took a pending one's slot), address_limit, logon_timeout, "
            "tls_handshake_timeout, tls_handshake_failed, refused_messages", ["reason"], registry=r)
        self.listener_connections = Gauge("msc_listener_connections", "Connections holding a slot of a listener, by "
                                          "state (tls_handshake, pending, established)", ["listener", "state"], registry=r)
        self.listener_max_connections = Gauge("msc_listener_max_connections", "A listener's max_connections",
                                              ["listener"], registry=r)
        self.refusals = Counter("msc_refusals_total", "Refused messages by how the journal recorded them (full text, "
                                "compact, counted in a summary)", ["form"], registry=r)
        self.unauthenticated_events = Counter(
            "msc_unauthenticated_events_total", "Events of connections not logged on (connect, banner, close …) by whether "
            "they got a record of their own (recorded) or were counted in a summary (counted)", ["form"], registry=r)
        self.logon_throttled = Counter("msc_logon_throttled_total", "Logons refused with E307 without a password check "
                                       "(address: its attempt rate; queue: the check queue was full; wait: no check "
                                       "slot in time)", ["reason"], registry=r)
        self.logon_checks = Gauge("msc_logon_checks", "Password checks running and waiting", ["state"], registry=r)
        self.self_inquiry = Counter("msc_self_inquiry_total", "Self-inquiries refused (PPP §1.6.4 B)", registry=r)
        self.upstream_up = Gauge("msc_upstream_up", "1 if the upstream endpoint is connected", ["upstream", "endpoint"], registry=r)
        self.upstream_failures = Counter(
            "msc_upstream_failures_total", "Upstream connections declared failed (PROTOCOL.md §4 link health)",
            ["upstream", "endpoint", "reason"], registry=r)
        self.answers_unrecorded = Counter(
            "msc_answers_unrecorded_total", "Answers to requests the journal could not record (upstream told E501)",
            registry=r)
        self.upstream_resends = Counter(
            "msc_upstream_resends_total", "Messages an upstream sent again that msc had journaled without acknowledging "
            "(their connection was gone): answered A, not journaled or delivered again", ["upstream"], registry=r)
        self.upstream_in_flight = Gauge("msc_upstream_in_flight", "Requests sent and not yet answered", ["upstream"], registry=r)
        self.upstream_inbound = Gauge("msc_upstream_inbound", "Messages from the upstream waiting for their journal "
                                      "commit (at most max_inbound)", ["upstream"], registry=r)
        self.upstream_paused = Counter("msc_upstream_paused_total", "Times msc stopped reading an upstream link because "
                                       "max_inbound of its messages were waiting", ["upstream"], registry=r)
        self.answer_parts = Counter("msc_answer_parts_total", "Upstream answer parts linked to their request",
                                    ["part"], registry=r)
        self.answer_ambiguous = Counter("msc_answer_ambiguous_total",
                                        "Answer parts matched while several open requests shared their header",
                                        registry=r)
        self.unsolicited = Counter("msc_unsolicited_total", "Unsolicited upstream messages by class of the "
                                   "unsolicited table (unknown: no rule names the kind)", ["class"], registry=r)
        self.delivery_queued = Gauge("msc_delivery_queued", "Outputs waiting for delivery, all mnemonics", registry=r)
        # PROTOCOL.md §5 "Bounds": every mnemonic's queue holds at most queue_max outputs,
        # counting the slots reserved for outputs being committed and for open requests' fates.
        self.delivery_depth_max = Gauge("msc_delivery_queue_depth_max",
                                        "The deepest delivery queue: outputs waiting plus slots reserved", registry=r)
        self.delivery_queue_limit = Gauge("msc_delivery_queue_limit", "queue_max: the bound of every delivery queue",
                                          registry=r)
        self.delivery_refused = Counter(
            "msc_delivery_refused_total", "Messages refused E307 because a destination queue had no room, by what "
            "would have queued them", ["path"], registry=r)
        self.delivery_held_bytes = Gauge(
            "msc_delivery_held_bytes", "Bytes of output texts held in memory (the rest wait in the journal)", registry=r)
        self.delivery_read_back = Counter("msc_delivery_read_back_total",
                                          "Outputs whose text was read back from the journal to be sent", registry=r)
        self.delivery_read_back_bytes = Counter("msc_delivery_read_back_bytes_total",
                                                "Bytes of output texts read back from the journal", registry=r)
        # process_resident_memory_bytes and friends (prometheus-client's collector, Linux /proc),
        # and the freed memory given back after bursts (msc.memory).
        ProcessCollector(registry=r)
        # The journal writer process's own (msc_journal_writer_process_resident_memory_bytes …):
        # it trims after bursts too (msc.journal.writerproc). No samples while there is none.
        self.journal_writer_pid: Callable[[], int | str] = lambda: "none"
        ProcessCollector(namespace="msc_journal_writer", pid=lambda: self.journal_writer_pid(), registry=r)
        self.memory_trims = Counter("msc_memory_trims_total", "Times freed C-heap memory was given back after "
                                    "the resident size grew (malloc_trim)", registry=r)
        self.memory_trimmed_bytes = Counter("msc_memory_trimmed_bytes_total",
                                            "Resident bytes given back by those trims", registry=r)
        self.journal_append_seconds = Histogram("msc_journal_append_seconds", "Journal group-commit duration",
                                                buckets=JOURNAL_BUCKETS, registry=r)
        self.journal_records = Counter("msc_journal_records_total", "Journal records committed", ["kind"], registry=r)
        self.journal_errors = Counter("msc_journal_errors_total", "Failed journal commits", registry=r)
        # PROTOCOL.md §5 "Overload": the journal's queue delay, and the new requests shed on it.
        self.journal_wait: Callable[[], float] = lambda: 0.0
        Gauge("msc_journal_wait_seconds", "How long the oldest record not yet committed has waited (the journal's "
              "queue delay; new requests are shed above switch.shed_wait_s)", registry=r).set_function(
            lambda: self.journal_wait())
        self.shed = Counter("msc_requests_shed_total", "New requests refused E307 SWITCH BUSY, by category and reason: "
                            "journal (its queue delay stayed above switch.shed_wait_s) or upstream (the request's link "
                            "held, max_inbound answers waiting for the journal)", ["category", "reason"], registry=r)
        self.journal_verify_failures = Counter("msc_journal_verify_failures_total", "Failed journal verifications", registry=r)
        self.journal_tree_size = Gauge("msc_journal_tree_size", "Latest checkpointed Merkle tree size", registry=r)
        # JOURNAL.md "Integrity": the committed size after every commit, for off-box monitoring.
        # `boot` tells this process's series from the previous one's, so that the alert rules can
        # compare the size the journal had when reopened with the size it had before (a cut tail).
        self.boot = secrets.token_hex(4)
        self.journal_committed_size = Gauge(
            "msc_journal_committed_size", "Journal records committed (the last sequence number), updated after "
            "every commit; it never goes backwards", ["boot"], registry=r)
        self.journal_opened_size = Gauge("msc_journal_opened_size",
                                         "Journal records when this process opened the journal", registry=r)
        self.journal_opened_time = Gauge("msc_journal_opened_timestamp_seconds",
                                         "When this process opened the journal (Unix time)", registry=r)
        self.journal_selfcheck_seconds = Gauge("msc_journal_selfcheck_seconds",
                                               "Duration of the journal's start-up self-check", registry=r)
        self.journal_verified_size = Gauge(
            "msc_journal_verified_size", "Records the background verification has checked in its current pass", registry=r)
        self.journal_verify_passes = Counter("msc_journal_verify_passes_total",
                                             "Background verification passes completed without a problem", registry=r)
        self._committed_size = self.journal_committed_size.labels(self.boot)
        self.config_reload = Counter("msc_config_reload_total", "Configuration reloads", ["outcome"], registry=r)
        # Exported once computed from the ledger — by a single node and a pair's active node; a
        # standby exports none (it runs no ledger: a 0 here fired the availability alerts for
        # every standby, newcomer8), and the rules count only the active node's.
        self.availability = Gauge("msc_availability_ratio", "Availability from the ledger (the active node's; "
                                  "a standby exports none)", ["window"], registry=r)
        # Issue 16: one node of an active/standby pair (OPERATIONS.md "Running two nodes"); a
        # single node (no [node] table) is always active.
        self.node_role = Gauge("msc_node_role", "1 for this node's role: active (serving) or standby (listeners "
                               "closed, /readyz 503)", ["role"], registry=r)
        self.node_lease_epoch = Gauge("msc_node_lease_epoch", "The fencing epoch of the lease this node holds "
                                      "(or held last; 0: none yet)", registry=r)
        self.node_lease_calls = Counter("msc_node_lease_calls_total", "Calls to the lease's database by outcome: "
                                        "granted, held (another node has it), renewed, lost, error, held_back (a read: this node may "
                                        "not take the lease, /readyz key_ring)", ["outcome"],
                                        registry=r)
        self.node_lease_unreachable = Gauge(
            "msc_node_lease_unreachable", "1 while this node's last call to the lease's database failed (an outage: "
            "refused, no answer; /readyz node.lease_error), 0 otherwise — a standby at 1 could not take over",
            registry=r)
        self.node_info = Gauge("msc_node_info", "1 on a node of an active/standby pair: its [node] name and the "
                               "[switch] name the pair's nodes share (the alert rules count a pair's active nodes "
                               "by switch); absent on a single node", ["node", "switch"], registry=r)
        # The key ring (JOURNAL.md "Encryption"; OPERATIONS.md "Metrics and health"): what the last look found.
        self.key_ring_unusable = Gauge(
            "msc_key_ring_unusable", "1 while this machine's master key file cannot open the key ring (log "
            "keyring.unusable, /readyz key_ring): another machine rotated the master key, a wrong copy, an entry "
            "that does not authenticate, the key ring missing; 0 otherwise", registry=r)
        self.key_ring_next_month_ready = Gauge(
            "msc_key_ring_next_month_ready", "1 while the journal holds this month's and next month's keys (made "
            "ahead at the start of each month, off the event loop); 0 when making them failed, and on a standby",
            registry=r)
        self.build_info = Gauge("msc_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        # The event loop stands still while CPython's cyclic collector runs (PERFORMANCE.md "Where
        # the tail came from"): its pauses, and what msc serve froze out of its sight at start.
        self.gc_pause = Histogram("msc_gc_pause_seconds", "Pauses of the cyclic garbage collector (the event loop "
                                  "waits meanwhile), by generation (2: a full collection)", ["generation"],
                                  buckets=JOURNAL_BUCKETS, registry=r)
        self.gc_frozen = Gauge("msc_gc_frozen_objects", "Objects alive at start that the garbage collector no longer "
                               "walks (gc.freeze once the switch serves)", registry=r)
        self.gc_frozen.set_function(gc.get_freeze_count)
        for generation in GC_GENERATIONS:
            self.gc_pause.labels(generation)
        # Pre-create children so the series exist (at 0) before the first event.
        for peer in ("client", "upstream"):
            self.frames_received.labels(peer)
            self.frames_sent.labels(peer)
        for outcome in ("ok", "error"):
            self.config_reload.labels(outcome)
        for part in ("first", "further", "late"):
            self.answer_parts.labels(part)
        self.unsolicited.labels("unknown")
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for form in ("full", "compact", "counted"):
            self.refusals.labels(form)
        for form in ("recorded", "counted"):
            self.unauthenticated_events.labels(form)
        for reason in ("address", "queue", "wait"):
            self.logon_throttled.labels(reason)
        for state in ("running", "waiting"):
            self.logon_checks.labels(state)
        for path in REFUSAL_PATHS:
            self.delivery_refused.labels(path)
        self.node_role.labels("active").set(1)
        self.node_role.labels("standby").set(0)
        for outcome in ("granted", "held", "renewed", "lost", "error", "held_back"):
            self.node_lease_calls.labels(outcome)
        self._rejects = {c.code: self.rejects.labels(c.code) for c in Reject}
        self._kinds: dict[str, Counter] = {}
        self._rx_client = self.frames_received.labels("client")
        self._tx_client = self.frames_sent.labels("client")
        self._rx_up = self.frames_received.labels("upstream")
        self._tx_up = self.frames_sent.labels("upstream")

    # Hot-path helpers: label lookups cached.

    def reject(self, code: str) -> None:
        c = self._rejects.get(code)
        if c is not None:
            c.inc()

    def frame(self, peer: str, direction: str, n: int = 1) -> None:
        if peer == "client":
            (self._rx_client if direction == "received" else self._tx_client).inc(n)
        else:
            (self._rx_up if direction == "received" else self._tx_up).inc(n)

    def journal_committed(self, entries, seconds: float) -> None:
        self.journal_append_seconds.observe(seconds)
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        for kind, n in counts.items():
            child = self._kinds.get(kind)
            if child is None:
                child = self._kinds[kind] = self.journal_records.labels(str(kind))
            child.inc(n)

    def role(self, role: str, epoch: int | None = None) -> None:
        """This node's role ("active" or "standby") and, when known, its lease's epoch."""
        for r in ("active", "standby"):
            self.node_role.labels(r).set(1 if r == role else 0)
        if epoch is not None:
            self.node_lease_epoch.set(epoch)

    def pair_node(self, node: str, switch: str) -> None:
        """This process is node ``node`` of the pair of switch ``switch`` (``msc_node_info``)."""
        self.node_info.labels(node, switch).set(1)

    def lease_call(self, outcome: str) -> None:
        """One call to the lease's database (the lease keeper's ``on_attempt``): counted by outcome,
        and ``msc_node_lease_unreachable`` says whether it was answered."""
        self.node_lease_calls.labels(outcome).inc()
        self.node_lease_unreachable.set(1 if outcome == "error" else 0)

    def watch_gc(self) -> Callable[[], None]:
        """Observe every collection of this process in ``msc_gc_pause_seconds`` (``gc.callbacks``;
        the callback runs in whichever thread's allocation started the collection, and
        collections never overlap). Returns the function that stops watching. ``msc serve`` calls
        it once: the collector is the process's, so two switches in one process would both count
        every pause."""
        children = [self.gc_pause.labels(g) for g in GC_GENERATIONS]
        started = [0.0]

        def callback(phase: str, info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                children[min(info["generation"], 2)].observe(time.perf_counter() - started[0])

        gc.callbacks.append(callback)

        def stop() -> None:
            if callback in gc.callbacks:
                gc.callbacks.remove(callback)

        return stop

    def journal_size(self, committed: int) -> None:
        self._committed_size.set(committed)

    def journal_opened(self, size: int, at: float) -> None:
        self.journal_opened_size.set(size)
        self.journal_opened_time.set(at)
        self._committed_size.set(size)

    def count_logons(self, read: Callable[[], dict[tuple[str, str], int]]) -> None:
        """Export ``msc_logon_failures_total`` and ``msc_lockouts_total`` by ``path`` from ``read``
        (``StateStore.auth_counts``: the counts every process — the switch, each ``msc`` command,
        the web console — keeps in state.db in the attempt's own transaction), read at each scrape."""
        if self._logon_counts is None and not self._counting_logons:
            self.registry.register(_LogonCounts(self))
            self._counting_logons = True
        self._logon_counts = read

    def stop_counting_logons(self) -> None:
        """A node that stepped down gave its run-time state back: the two counters are left out of
        the scrapes from now on (as on a standby), without a word — nothing failed."""
        self._logon_counts = None

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LogonCounts(Collector):
    """A custom collector (prometheus-client): the shared logon counts of state.db at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # One outage of the run-time state's database, one warning (msc.outage), however often
        # Prometheus scrapes meanwhile (newcomer9 F3: an error with a traceback at every scrape).
        self.outage = Outage("metrics.logon_counts_unreadable", "metrics.logon_counts_readable",
                             logger=structlog.get_logger("msc.metrics"))
        self._lock = threading.Lock()  # (scrapes run in worker threads, possibly two at once)

    def describe(self) -> list:
        return [CounterMetricFamily("msc_logon_failures", _FAILURES_HELP, labels=["path"]),
                CounterMetricFamily("msc_lockouts", _LOCKOUTS_HELP, labels=["path"])]

    def collect(self) -> Iterator[CounterMetricFamily]:
        read = self.metrics._logon_counts
        if read is None:  # a node that stepped down: nothing to read them from
            return
        try:
            counts = read()
        except (OSError, sqlite3.Error) as exc:
            if self.metrics._logon_counts is None:
                return  # the node stepped down while this read waited: its state was given back, nothing failed
            # The scrape answers without the two counters (absent, not zero: a counter never goes
            # down) while state.db is locked or failing, or its PostgreSQL database is away
            # (StorageUnavailable is an OSError; so is a stepped-down node's ConnectionAbortedError).
            with self._lock:
                self.outage.failed(str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # a fault of msc: said with its traceback, still once until it reads again
            with self._lock:
                self.outage.failed(exc, unexpected=True)
            return
        with self._lock:
            self.outage.ok()
        paths = sorted(set(LOGON_PATHS) | {p for p, _ in counts})
        failures = CounterMetricFamily("msc_logon_failures", _FAILURES_HELP, labels=["path"])
        lockouts = CounterMetricFamily("msc_lockouts", _LOCKOUTS_HELP, labels=["path"])
        for path in paths:
            failures.add_metric([path], counts.get((path, "failure"), 0))
            lockouts.add_metric([path], counts.get((path, "lockout"), 0))
        yield failures
        yield lockouts


_FAILURES_HELP = "Refused logon attempts, every process sharing state.db (CJIS AC-7), by way of logon"
_LOCKOUTS_HELP = "Accounts locked (CJIS AC-7), every process sharing state.db, by the way of logon that locked them"
